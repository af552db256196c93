"""Input and output shapes for algorithms, tasks and runs.

Input serializers parse and resolve ids against what the caller may see; the rules about
what may be created or changed live in tasks.services. Binary run inputs travel as
base64 strings inside JSON; results travel as multipart uploads (or, when small, as
base64 inside the JSON of the finish request) and as streamed downloads.

Tasks and runs answer in the shapes declared at the end (core.shapes): one declaration
per output gives both the answer's dict and its OpenAPI component, because building a DRF
serializer's fields would cost more than the rest of a hot request's Python work.
"""

import base64
import binascii

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from collaborations.selectors import collaboration_list, collaboration_visible, study_list
from core.inputs import DESCRIPTION_MAX_CHARS, IdField, InputSerializer, SharedFields
from core.serializers import LongTextField, ScopedIdField
from core.shapes import BOOLEAN, BYTES, DATETIME, INTEGER, JSON, STRING, Out, Shape, choice, many
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


def digest_field(**kwargs) -> serializers.RegexField:
    """An image digest as the server keeps it (tasks.services.DIGEST_RE)."""
    return serializers.RegexField(r"^sha256:[0-9a-f]{64}$", max_length=71,
                                  error_messages={"invalid": "Expected sha256:<64 hex digits>."}, **kwargs)


class CatalogueStatusSerializer(serializers.Serializer):
    image = serializers.CharField(max_length=500)
    digest = digest_field()


class RunListQuerySerializer(serializers.Serializer):
    with_result = serializers.BooleanField(required=False, default=False, help_text=(
        "Each run with its result inline (base64) where the server keeps it in the run's row "
        "(at most VANTAGE_RESULT_IN_DATABASE_BYTES): one request for a subtask's results."))


def optional_digest(help_text: str = "") -> serializers.RegexField:
    return digest_field(required=False, allow_blank=True, default="", help_text=help_text or None)


class RunStartSerializer(SharedFields, InputSerializer):
    digest = optional_digest()


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


class RunLogSerializer(SharedFields, InputSerializer):
    text = LongTextField(trim_whitespace=False)


class UnreportedStartFields(serializers.Serializer):
    """A quick run's start is not reported on its own (a round on a worker, done before the
    node would have told the server): its finish or hold says when it started and what ran."""

    digest = optional_digest("The image digest the run executed; recorded when its start was not.")
    started_at = serializers.DateTimeField(required=False, allow_null=True, default=None, help_text=(
        "When the run started at the node; recorded, within its claim and now, when its start was not."))


class RunHoldSerializer(UnreportedStartFields, SharedFields, InputSerializer):
    """What a node's output gate tells the server about a result it holds: never the result."""

    output_type = serializers.CharField(max_length=40)
    size = serializers.IntegerField(min_value=0, max_value=2**63 - 1)  # the column's range
    flags = serializers.ListField(child=serializers.CharField(max_length=300), max_length=20, allow_empty=True)


class RunFinishSerializer(UnreportedStartFields, SharedFields, InputSerializer):
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


RUN = Shape("Run", [
    Out("id", INTEGER),
    Out("task", INTEGER, "task_id"),
    Out("organization", INTEGER, "organization_id"),
    Out("node", INTEGER, "node_id", nullable=True),
    Out("status", choice(Run.Status)),
    Out("exit_code", INTEGER, nullable=True),
    Out("error_kind", choice(Run.ErrorKind, blank=True)),
    Out("result_size", INTEGER, nullable=True),
    Out("result_sha256", STRING),
    Out("kill_requested", BOOLEAN, "kill_requested_at", convert=lambda at: at is not None),
    Out("kill_requested_at", DATETIME, nullable=True),
    Out("created_at", DATETIME),
    Out("claimed_at", DATETIME, nullable=True),
    Out("started_at", DATETIME, nullable=True),
    Out("finished_at", DATETIME, nullable=True),
    Out("hold_info", JSON, nullable=True),
    Out("executed_digest", STRING, "digest", description="The image digest the node verified and ran."),
], model=Run, description="A run as lists show it: no input, no log.")

RUN_WITH_RESULT = RUN.extend("RunWithResult", [
    Out("result", BYTES, "result_data", nullable=True, description=(
        "The result, base64, where the server keeps it in the run's row; null for a run without "
        "one or with a larger result, which /api/runs/{id}/result/ serves.")),
], description="A run as lists show it, with its result inline when that is small (?with_result=true).")

RUN_DETAIL = RUN.extend("RunDetail", [
    Out("log", STRING),
    Out("log_truncated", BOOLEAN),
], description="One run for a user: with its log, never its input.")

# Read from a run loaded with its task, the task's creator and collaboration.
NODE_RUN = RUN.extend("NodeRun", [
    Out("collaboration", INTEGER, "task.collaboration_id"),
    Out("init_organization", INTEGER, "task.init_organization_id"),
    Out("job", INTEGER, "task.job_id", nullable=True),
    Out("image", STRING, "task.image"),
    Out("digest", STRING, "task.digest"),
    Out("method", STRING, "task.method"),
    Out("databases", JSON, "task.databases"),
    # The node's own policy (allowed_users) and the proxy decide on these, so the node
    # needs them whatever the server already checked.
    Out("created_by", INTEGER, "task.created_by_id", nullable=True),
    Out("created_by_username", STRING, "task.created_by.username", nullable=True),
    Out("collaboration_encrypted", BOOLEAN, "task.collaboration.encrypted"),
    Out("parent", INTEGER, "task.parent_id", nullable=True),
    Out("created_by_run", INTEGER, "task.created_by_run_id", nullable=True),
    Out("input", BYTES),
], description="One run for the node that executes it: its input and what to run.")

RUN_SUMMARY = Shape("RunSummary", [
    Out("id", INTEGER),
    Out("organization", INTEGER, "organization_id"),
    Out("status", choice(Run.Status)),
], model=Run)


def _task_runs(task: Task):
    # A task just created carries the runs its service made; a listed one has them prefetched.
    return task.created_runs if hasattr(task, "created_runs") else task.runs.all()


# Read from a task with its derived `status` (tasks.selectors.with_status, or set by task_create).
TASK = Shape("Task", [
    Out("id", INTEGER),
    Out("name", STRING),
    Out("description", STRING),
    Out("status", choice(Task.Status), description="Derived from the runs; never stored."),
    Out("collaboration", INTEGER, "collaboration_id"),
    Out("study", INTEGER, "study_id", nullable=True),
    Out("algorithm", INTEGER, "algorithm_id", nullable=True),
    Out("init_organization", INTEGER, "init_organization_id"),
    Out("created_by", INTEGER, "created_by_id", nullable=True),
    Out("image", STRING),
    Out("digest", STRING),
    Out("method", STRING),
    Out("databases", JSON),
    Out("parent", INTEGER, "parent_id", nullable=True),
    Out("job", INTEGER, "job_id", nullable=True),
    Out("created_at", DATETIME),
    Out("runs", many(RUN_SUMMARY), _task_runs),
], model=Task)
