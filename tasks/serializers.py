"""Input and output shapes for algorithms, tasks and runs.

Input serializers parse and resolve ids against what the caller may see; the rules about
what may be created or changed live in tasks.services. Binary run inputs travel as
base64 strings inside JSON; results travel as multipart uploads (or, when small, as
base64 inside the JSON of the finish request) and as streamed downloads.

The node's hot path (its run list, claim, start, finish) and task creation answer with
plain dicts (`run_data`, `node_run_data`, `task_data`) in exactly the shape of the
serializers below, which still describe them in the OpenAPI schema: building a DRF
serializer's fields costs more than the rest of such a request's Python work
(tests/tasks/test_output_shapes.py holds the two to the same output).
"""

import base64
import binascii
from collections.abc import Mapping

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collaborations.selectors import collaboration_list, collaboration_visible, study_list
from core.inputs import DESCRIPTION_MAX_CHARS, IdField, InputSerializer, StrictFields
from core.renderers import iso_datetime
from core.serializers import LongTextField, ScopedIdField
from tasks.models import Algorithm, AlgorithmApproval, DatabaseType, Run, Task
from tasks.selectors import algorithm_list


@extend_schema_field(OpenApiTypes.BYTE)
class Base64Field(serializers.Field):
    """Bytes as standard base64 (RFC 4648, with padding); anything else is refused, not guessed."""

    default_error_messages = {"invalid": "Not valid base64."}

    def to_internal_value(self, data) -> bytes:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self.fail("invalid")

    def to_representation(self, value) -> str:
        return base64.b64encode(bytes(value)).decode("ascii")


class OptionalScopedIdField(ScopedIdField):
    """A ScopedIdField that may be left out or given as null."""

    def __init__(self, **kwargs):
        super().__init__(required=False, allow_null=True, **kwargs)

    def run_validation(self, data=serializers.empty):
        if data is None:
            return None
        return super().run_validation(data)


class AlgorithmSerializer(serializers.ModelSerializer):
    approvals = serializers.SerializerMethodField()

    def get_approvals(self, algorithm) -> list[dict]:
        return AlgorithmApprovalSerializer(algorithm.approvals.all(), many=True).data

    class Meta:
        model = Algorithm
        fields = ["id", "name", "image", "digest", "description", "functions", "status",
                  "submitted_by", "reviewer", "reviewed_at", "review_note", "created_at", "approvals"]
        read_only_fields = fields


class AlgorithmSubmitSerializer(InputSerializer):
    name = serializers.CharField(max_length=200)
    image = serializers.CharField(max_length=500)
    digest = serializers.CharField(max_length=71, help_text="sha256:<64 hex digits>")
    description = serializers.CharField(required=False, allow_blank=True, max_length=DESCRIPTION_MAX_CHARS)
    functions = serializers.JSONField(
        required=False, help_text='[{"name": ..., "kind": "central"|"partial", "arguments": <JSON schema>}]'
    )


class AlgorithmReviewSerializer(InputSerializer):
    status = serializers.ChoiceField(
        choices=[Algorithm.Status.APPROVED, Algorithm.Status.REJECTED, Algorithm.Status.RETIRED]
    )
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=DESCRIPTION_MAX_CHARS)
    signature_digest = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=71,
        help_text="Approvals: sha256:<hex> of the payload you signed (vantage-client sign prints it).")
    key_fingerprint = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=64,
        help_text="Approvals: your signing key's fingerprint (64 hex digits).")


class AlgorithmApprovalSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlgorithmApproval
        fields = ["reviewer", "signature_digest", "key_fingerprint", "note", "created_at"]
        read_only_fields = fields


class CatalogueStatusSerializer(serializers.Serializer):
    image = serializers.CharField(max_length=500)
    digest = serializers.RegexField(r"^sha256:[0-9a-f]{64}$", max_length=71,
                                    error_messages={"invalid": "Expected sha256:<64 hex digits>."})


class RunStartSerializer(InputSerializer):
    digest = serializers.RegexField(r"^sha256:[0-9a-f]{64}$", max_length=71, required=False, allow_blank=True,
                                    default="", error_messages={"invalid": "Expected sha256:<64 hex digits>."})


class RunSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Run
        fields = ["id", "organization", "status"]
        read_only_fields = fields


class TaskSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=Task.Status.choices, read_only=True,
                                     help_text="Derived from the runs; never stored.")
    runs = RunSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Task
        fields = ["id", "name", "description", "status", "collaboration", "study", "algorithm",
                  "init_organization", "created_by", "image", "digest", "method", "databases",
                  "parent", "job", "created_at", "runs"]
        read_only_fields = fields


class TaskOrganizationInputSerializer(InputSerializer):
    id = IdField()
    input = Base64Field(help_text="The run's input for this organisation, base64-encoded "
                                  "(ciphertext in an encrypted collaboration).")


class DatabaseSerializer(InputSerializer):
    label = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=DatabaseType.choices, required=False)


class TaskCreateSerializer(InputSerializer):
    collaboration = ScopedIdField(selector=collaboration_list, lookup=collaboration_visible)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="",
                                        max_length=DESCRIPTION_MAX_CHARS)
    image = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                  help_text="Leave out when naming a catalogue algorithm.")
    algorithm = OptionalScopedIdField(selector=algorithm_list)
    method = serializers.CharField(max_length=200)
    study = OptionalScopedIdField(selector=study_list)
    organizations = TaskOrganizationInputSerializer(many=True, allow_empty=False)
    databases = DatabaseSerializer(many=True, required=False, default=list)

    def validate_organizations(self, entries: list[dict]) -> dict[int, bytes]:
        inputs: dict[int, bytes] = {}
        for entry in entries:
            if entry["id"] in inputs:
                raise serializers.ValidationError(f"Organisation {entry['id']} is named twice.")
            inputs[entry["id"]] = entry["input"]
        return inputs

    def to_service_kwargs(self) -> dict:
        data = dict(self.validated_data)
        data["organization_inputs"] = data.pop("organizations")
        data["databases"] = [dict(entry) for entry in data["databases"]]
        return data


class RunSerializer(serializers.ModelSerializer):
    """A run as lists show it: no input, no log."""

    kill_requested = serializers.SerializerMethodField()
    executed_digest = serializers.CharField(source="digest", read_only=True,
                                            help_text="The image digest the node verified and ran.")

    class Meta:
        model = Run
        fields = ["id", "task", "organization", "node", "status", "exit_code", "error_kind",
                  "result_size", "result_sha256", "kill_requested", "kill_requested_at",
                  "created_at", "claimed_at", "started_at", "finished_at", "hold_info", "executed_digest"]
        read_only_fields = fields

    def get_kill_requested(self, run: Run) -> bool:
        return run.kill_requested_at is not None


class RunDetailSerializer(RunSerializer):
    """One run for a user: with its log, never its input."""

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "log", "log_truncated"]
        read_only_fields = fields


class NodeRunSerializer(RunSerializer):
    """One run for the node that executes it: its input and what to run."""

    input = Base64Field(read_only=True)
    collaboration = serializers.IntegerField(source="task.collaboration_id", read_only=True)
    init_organization = serializers.IntegerField(source="task.init_organization_id", read_only=True)
    job = serializers.IntegerField(source="task.job_id", read_only=True, allow_null=True)
    image = serializers.CharField(source="task.image", read_only=True)
    digest = serializers.CharField(source="task.digest", read_only=True)
    method = serializers.CharField(source="task.method", read_only=True)
    databases = serializers.JSONField(source="task.databases", read_only=True)
    # The node's own policy (allowed_users) and the proxy decide on these, so the node
    # needs them whatever the server already checked.
    created_by = serializers.IntegerField(source="task.created_by_id", read_only=True, allow_null=True)
    created_by_username = serializers.CharField(source="task.created_by.username", read_only=True,
                                                allow_null=True)
    collaboration_encrypted = serializers.BooleanField(source="task.collaboration.encrypted", read_only=True)
    parent = serializers.IntegerField(source="task.parent_id", read_only=True, allow_null=True)
    created_by_run = serializers.IntegerField(source="task.created_by_run_id", read_only=True, allow_null=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "collaboration", "init_organization", "job", "image", "digest",
                  "method", "databases", "created_by", "created_by_username", "collaboration_encrypted",
                  "parent", "created_by_run", "input"]
        read_only_fields = fields


class RunLogSerializer(StrictFields, serializers.Serializer):
    text = LongTextField(trim_whitespace=False)


class RunHoldSerializer(StrictFields, serializers.Serializer):
    """What a node's output gate tells the server about a result it holds: never the result."""

    output_type = serializers.CharField(max_length=40)
    size = serializers.IntegerField(min_value=0, max_value=2**63 - 1)  # the column's range
    flags = serializers.ListField(child=serializers.CharField(max_length=300), max_length=20, allow_empty=True)


class RunFinishSerializer(StrictFields, serializers.Serializer):
    status = serializers.ChoiceField(choices=Run.FINAL_STATUSES)
    exit_code = serializers.IntegerField(required=False, allow_null=True, default=None,
                                         min_value=-(2**31), max_value=2**31 - 1)  # the column's range
    error_kind = serializers.ChoiceField(choices=Run.ErrorKind.choices, required=False, allow_blank=True,
                                         default="")
    log = LongTextField(required=False, allow_blank=True, trim_whitespace=False, default="")
    result = serializers.FileField(required=False, allow_empty_file=True, use_url=False,
                                   help_text="The output file, streamed; at most VANTAGE_MAX_RESULT_BYTES.")


class RunFinishInlineSerializer(RunFinishSerializer):
    """A finish request as JSON, its (small) result inline as base64, as vantage6's node sends it."""

    result = Base64Field(required=False, help_text=(
        "The output, base64; the whole request at most VANTAGE_MAX_REQUEST_BYTES. "
        "Larger results go as a multipart upload."))


# A run's columns as run_data reads them: `Run.objects.values(*RUN_COLUMNS)` or run_columns(run).
RUN_COLUMNS = ("id", "task_id", "organization_id", "node_id", "status", "exit_code", "error_kind", "result_size",
               "result_sha256", "kill_requested_at", "created_at", "claimed_at", "started_at", "finished_at",
               "hold_info", "digest")


def run_columns(run: Run) -> dict:
    """A loaded run's RUN_COLUMNS, as `values(*RUN_COLUMNS)` gives them; columns its query
    left unloaded are absent (reading them would cost a query each)."""
    unloaded = run.get_deferred_fields()
    return {name: getattr(run, name) for name in RUN_COLUMNS if name not in unloaded}


def run_data(run: Mapping) -> dict:
    """RunSerializer's output, from a run's column values (RUN_COLUMNS)."""
    return {
        "id": run["id"], "task": run["task_id"], "organization": run["organization_id"], "node": run["node_id"],
        "status": run["status"], "exit_code": run["exit_code"], "error_kind": run["error_kind"],
        "result_size": run["result_size"], "result_sha256": run["result_sha256"],
        "kill_requested": run["kill_requested_at"] is not None,
        "kill_requested_at": iso_datetime(run["kill_requested_at"]), "created_at": iso_datetime(run["created_at"]),
        "claimed_at": iso_datetime(run["claimed_at"]), "started_at": iso_datetime(run["started_at"]),
        "finished_at": iso_datetime(run["finished_at"]),
        # Absent where a node's answer loaded only the columns it needs: nothing was held then.
        "hold_info": run.get("hold_info"), "executed_digest": run["digest"],
    }


def node_run_data(run: Run) -> dict:
    """NodeRunSerializer's output, for a run loaded with its task's creator and collaboration."""
    task = run.task
    creator = task.created_by
    return {
        **run_data(run_columns(run)),
        "collaboration": task.collaboration_id, "init_organization": task.init_organization_id, "job": task.job_id,
        "image": task.image, "digest": task.digest, "method": task.method, "databases": task.databases,
        "created_by": task.created_by_id, "created_by_username": creator.username if creator is not None else None,
        "collaboration_encrypted": task.collaboration.encrypted, "parent": task.parent_id,
        "created_by_run": task.created_by_run_id, "input": base64.b64encode(bytes(run.input)).decode("ascii"),
    }


def task_data(task: Task, runs: list[Run]) -> dict:
    """TaskSerializer's output for a task whose status and runs the caller knows."""
    return {
        "id": task.pk, "name": task.name, "description": task.description, "status": task.status,
        "collaboration": task.collaboration_id, "study": task.study_id, "algorithm": task.algorithm_id,
        "init_organization": task.init_organization_id, "created_by": task.created_by_id, "image": task.image,
        "digest": task.digest, "method": task.method, "databases": task.databases, "parent": task.parent_id,
        "job": task.job_id, "created_at": iso_datetime(task.created_at),
        "runs": [{"id": run.pk, "organization": run.organization_id, "status": run.status} for run in runs],
    }


class SubtaskCreateSerializer(TaskCreateSerializer):
    """A subtask as an algorithm container asks for it (through its node's proxy).

    Collaboration and image may be repeated (the vantage6 client sends them) but must be
    the container's own: the server takes both from the container's task.
    """

    collaboration = IdField(required=False, help_text="Optional; must be the container's collaboration.")
    image = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                  help_text="Optional; must be the container's image.")
    algorithm = None
    study = None


class ContainerTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="For the run's token file: a bearer token for the container.")
    expires_in = serializers.IntegerField(help_text="Seconds until the run's deadline, when the token expires.")
