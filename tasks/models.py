from django.conf import settings
from django.db import models


class Algorithm(models.Model):
    """An entry of the algorithm catalogue: an image pinned to a digest, reviewed."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted"
        APPROVED = "approved"
        REJECTED = "rejected"
        RETIRED = "retired"

    name = models.CharField(max_length=200)
    image = models.CharField(max_length=500)
    digest = models.CharField(max_length=71, help_text="sha256:<64 hex>")
    description = models.TextField(blank=True)
    functions = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name": ..., "kind": "central"|"partial", "arguments": <JSON schema>}]',
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUBMITTED, db_index=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [models.UniqueConstraint(fields=["image", "digest"], name="algorithm_unique_image_digest")]

    def __str__(self) -> str:
        return f"{self.name} ({self.image})"


class AlgorithmApproval(models.Model):
    """One reviewer's approval of a catalogue entry, with the signature they made of its digest."""

    algorithm = models.ForeignKey(Algorithm, on_delete=models.CASCADE, related_name="approvals")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signature_digest = models.CharField(
        max_length=71, blank=True, help_text="sha256:<hex> of the signed payload in the image's .sig manifest."
    )
    key_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 (hex) of the reviewer's signing public key."
    )
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["algorithm", "reviewer"], name="approval_one_per_reviewer")]

    def __str__(self) -> str:
        return f"approval of {self.algorithm_id} by {self.reviewer_id}"


class DatabaseType(models.TextChoices):
    CSV = "csv"
    PARQUET = "parquet"
    SQL = "sql"
    EXCEL = "excel"


class Task(models.Model):
    """A request to run one method of one image on some organisations of a collaboration.

    Its status is not stored: it is derived from its runs by the database
    (tasks.selectors.with_status), so it can never disagree with them.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        COMPLETED = "completed"
        FAILED = "failed"
        KILLED = "killed"

    collaboration = models.ForeignKey(
        "collaborations.Collaboration", on_delete=models.PROTECT, related_name="tasks"
    )
    study = models.ForeignKey(
        "collaborations.Study", on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    algorithm = models.ForeignKey(Algorithm, on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    image = models.CharField(max_length=500)
    digest = models.CharField(max_length=71, blank=True)
    method = models.CharField(max_length=200)
    databases = models.JSONField(default=list, blank=True)
    init_organization = models.ForeignKey(
        "collaborations.Organization", on_delete=models.PROTECT, related_name="initiated_tasks"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks"
    )
    created_by_run = models.ForeignKey(
        "Run", on_delete=models.SET_NULL, null=True, blank=True, related_name="subtasks",
        help_text="The run whose container created this task (central functions).",
    )
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, blank=True, related_name="children")
    job = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="job_tasks",
        help_text="The root task of this task's tree (itself for a root task).",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.name}"


class Run(models.Model):
    """One organisation's execution of a task."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CRASHED = "crashed"
        KILLED = "killed"
        REJECTED = "rejected"
        TIMED_OUT = "timed_out"
        # The node's output gate held the result for its steward: it stays at the node
        # until released or rejected there (docs/node.md, "What leaves").
        AWAITING_RELEASE = "awaiting_release"

    ACTIVE_STATUSES = (Status.PENDING, Status.CLAIMED, Status.RUNNING, Status.AWAITING_RELEASE)
    FINAL_STATUSES = (
        Status.COMPLETED, Status.FAILED, Status.CRASHED, Status.KILLED, Status.REJECTED, Status.TIMED_OUT,
    )

    class ErrorKind(models.TextChoices):
        NONE = "", "none"
        POLICY = "policy", "refused by the node's policy"
        IMAGE = "image", "image could not be pulled"
        STARTUP = "startup", "container could not start"
        ALGORITHM = "algorithm", "algorithm exited with an error"
        OUTPUT = "output", "output was not valid"
        TIMEOUT = "timeout", "deadline passed"
        KILLED = "killed", "killed on request"
        INTERNAL = "internal", "node internal error"
        WITHHELD = "withheld", "withheld by the node's output gate or its steward"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    organization = models.ForeignKey("collaborations.Organization", on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input = models.BinaryField(blank=True, default=b"", editable=False)
    result = models.FileField(upload_to="results/%Y/%m/", blank=True)
    result_data = models.BinaryField(
        null=True, blank=True, editable=False,
        help_text="A result of at most VANTAGE_RESULT_IN_DATABASE_BYTES, kept in the row instead of a file.",
    )
    result_size = models.BigIntegerField(null=True, blank=True)
    result_sha256 = models.CharField(max_length=64, blank=True)
    log = models.TextField(blank=True)
    log_truncated = models.BooleanField(default=False)
    exit_code = models.IntegerField(null=True, blank=True)
    error_kind = models.CharField(max_length=16, choices=ErrorKind.choices, blank=True, default="")
    node = models.ForeignKey(
        "collaborations.Node", on_delete=models.SET_NULL, null=True, blank=True, related_name="runs",
        help_text="The node that claimed this run.",
    )
    kill_requested_at = models.DateTimeField(null=True, blank=True)
    digest = models.CharField(
        max_length=71, blank=True, help_text="The image digest the node verified and ran (reported at start)."
    )
    hold_info = models.JSONField(
        null=True, blank=True,
        help_text="What the node said when its output gate held the result: type, size, flags. Never the result.",
    )
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="Set at claim; past it the server times the run out."
    )
    result_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the result file was removed under the retention period."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["task", "organization"], name="run_one_per_organization")]
        # A run changes status three to five times, and each index on status is written at
        # every change: status alone is served by the status + deadline index's first column.
        indexes = [
            models.Index(fields=["organization", "status"], name="run_org_status_idx"),
            models.Index(fields=["status", "deadline_at"], name="run_status_deadline_idx"),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} of task #{self.task_id} at {self.organization_id}"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def has_stored_result(self) -> bool:
        """Whether the result is still kept: as a file, or in the row when small (not yet purged)."""
        return bool(self.result) or self.result_data is not None
