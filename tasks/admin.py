"""Admin for the algorithm catalogue, tasks and runs.

Algorithms are submitted and reviewed here (approve / reject / retire, with a note);
tasks are only read, killed or deleted (researchers create them through the API);
runs are written by nodes alone and are read-only.
"""

from django.contrib import admin
from django.db.models import BooleanField, Count, ExpressionWrapper, Q
from django.contrib.admin import helpers
from django.db.models.functions import Length
from django.template.response import TemplateResponse
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, ReadOnlyMixin, ServiceAdmin
from tasks.models import Algorithm, AlgorithmApproval, Run, Task
from tasks.selectors import with_status
from tasks.services import algorithm_review, algorithm_submit, task_delete, task_kill

RUN_FIELDS = ("task", "organization", "node", "status", "digest", "error_kind", "exit_code", "input_size", "result_name",
              "result_size", "result_sha256", "log_display", "log_truncated", "kill_requested_at", "created_at",
              "claimed_at", "started_at", "finished_at")

FUNCTIONS_EXAMPLE = """[{"name": "cox", "kind": "central", "description": "Cox model over all sites",
  "arguments": {"type": "object", "required": ["duration", "event", "covariates"],
                "properties": {"duration": {"type": "string"}, "event": {"type": "string"},
                               "covariates": {"type": "array", "items": {"type": "string"}},
                               "alpha": {"type": "number", "default": 0.05}}}},
 {"name": "cox_site_terms", "kind": "partial", "arguments": {"type": "object"}}]"""


class AlgorithmApprovalInline(ReadOnlyMixin, admin.TabularInline):
    model = AlgorithmApproval
    fields = ("reviewer", "signature_digest", "key_fingerprint", "note", "created_at")
    readonly_fields = fields
    extra = 0


@admin.register(Algorithm)
class AlgorithmAdmin(ServiceAdmin):
    inlines = (AlgorithmApprovalInline,)
    list_display = ("name", "image", "short_digest", "status", "submitted_by", "reviewer", "reviewed_at")
    list_select_related = ("submitted_by", "reviewer")
    list_filter = ("status",)
    search_fields = ("name", "image", "digest")
    submitted_fields = ("name", "image", "digest", "description", "functions")
    review_fields = ("status", "submitted_by", "reviewer", "reviewed_at", "review_note", "created_at")
    actions = ("approve", "reject", "retire")

    def get_fields(self, request, obj=None):
        return self.submitted_fields if obj is None else self.submitted_fields + self.review_fields

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "functions" and field is not None:
            # The admin shows help text as HTML: the model's plain text would lose its
            # "<JSON schema>" as an unknown tag. An escaped, complete example instead.
            field.help_text = format_html(
                "A list of the image's methods: name, kind (central or partial), a description, and the "
                "JSON schema of its keyword arguments. For example:<pre>{}</pre>", FUNCTIONS_EXAMPLE)
        return field

    def get_inline_instances(self, request, obj=None):
        return [] if obj is None else super().get_inline_instances(request, obj)  # approvals exist after submission

    @admin.display(description="digest", ordering="digest")
    def short_digest(self, algorithm):
        return algorithm.digest[:19]

    # A catalogue entry is immutable once submitted (its digest is what was reviewed);
    # it changes only by review, and is retired rather than deleted.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_review_permission(self, request, obj=None):
        return request.user.has_perm("tasks.change_algorithm")

    def create_object(self, request, form):
        data = form.cleaned_data
        return algorithm_submit(
            actor=request.user, name=data["name"], image=data["image"], digest=data["digest"],
            description=data["description"], functions=data["functions"],
        )

    def review(self, request, queryset, status: str):
        """Ask for an optional note on an intermediate page, then review each algorithm."""
        if request.POST.get("confirm") == "yes":
            note = request.POST.get("note", "").strip()
            signed = {name: request.POST.get(name, "").strip() for name in ("signature_digest", "key_fingerprint")}
            self.run_service_per_object(
                request, queryset,
                lambda algorithm: algorithm_review(actor=request.user, algorithm=algorithm, status=status, note=note,
                                                   **signed),
                f"{{count}} algorithm(s) {status}.",
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Mark {len(queryset)} algorithm(s) as {status}?",
            "opts": self.opts,
            "algorithms": queryset,
            "status": status,
            "action": request.POST["action"],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/tasks/algorithm/review_confirmation.html", context)

    @admin.action(description="Approve selected algorithms", permissions=["review"])
    def approve(self, request, queryset):
        return self.review(request, queryset, Algorithm.Status.APPROVED)

    @admin.action(description="Reject selected algorithms", permissions=["review"])
    def reject(self, request, queryset):
        return self.review(request, queryset, Algorithm.Status.REJECTED)

    @admin.action(description="Retire selected algorithms", permissions=["review"])
    def retire(self, request, queryset):
        return self.review(request, queryset, Algorithm.Status.RETIRED)


class TaskStatusFilter(admin.SimpleListFilter):
    """Filters on the status derived from runs (the `status` annotation of with_status)."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return Task.Status.choices

    def queryset(self, request, queryset):
        if self.value() in Task.Status.values:
            return queryset.filter(status=self.value())
        return queryset


class RunInline(ReadOnlyMixin, admin.TabularInline):
    model = Run
    fields = ("organization", "node", "status", "error_kind", "exit_code", "result_size", "finished_at")
    readonly_fields = fields
    show_change_link = True
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization", "node").defer(
            "input", "log", "result_data")


@admin.register(Task)
class TaskAdmin(ServiceAdmin):
    list_display = ("id", "name", "collaboration", "init_organization", "created_by", "derived_status",
                    "run_count", "created_at")
    list_display_links = ("id", "name")
    list_select_related = ("collaboration", "init_organization", "created_by")
    list_filter = (TaskStatusFilter, "collaboration", "created_at")
    search_fields = ("name", "image", "method", "=id")
    show_full_result_count = False  # tasks and runs only grow: spare the second COUNT(*) per page
    fields = ("name", "description", "derived_status", "collaboration", "study", "init_organization",
              "created_by", "algorithm", "image", "digest", "method", "databases", "parent", "job",
              "created_by_run", "created_at")
    readonly_fields = fields
    inlines = (RunInline,)
    actions = ("kill",)

    def get_queryset(self, request):
        return with_status(super().get_queryset(request)).annotate(n_runs=Count("runs"))

    @admin.display(description="status", ordering="status")
    def derived_status(self, task):
        return task.status

    @admin.display(description="runs", ordering="n_runs")
    def run_count(self, task):
        return task.n_runs

    # Researchers create tasks through the API (inputs per organisation, encryption);
    # here a task is only read, killed or deleted.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_kill_permission(self, request, obj=None):
        return request.user.has_perm("tasks.change_task")

    def get_deleted_objects(self, objs, request):
        deleted, counts, _runs_refused_alone, protected = super().get_deleted_objects(objs, request)
        # The run admin refuses deleting a run on its own; task_delete removes a task's
        # runs with it (after checking none is still open), which is allowed.
        return deleted, counts, set(), protected

    def delete_model(self, request, obj):
        task_delete(actor=request.user, task=obj)

    @admin.action(description="Kill selected tasks", permissions=["kill"])
    def kill(self, request, queryset):
        self.run_service_per_object(
            request, queryset, lambda task: task_kill(actor=request.user, task=task), "{count} task(s) killed."
        )


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "task", "organization", "node", "status", "error_kind", "exit_code", "result_size",
                    "finished_at")
    list_select_related = ("task", "organization", "node")
    list_filter = ("status", "error_kind")
    search_fields = ("=id", "=task__id", "task__name", "organization__name")
    show_full_result_count = False
    fields = RUN_FIELDS
    readonly_fields = RUN_FIELDS

    def get_queryset(self, request):
        # Inputs (up to VANTAGE_MAX_INPUT_BYTES, often ciphertext) are never loaded here: only their size.
        return super().get_queryset(request).defer("input", "log", "result_data").annotate(
            input_bytes=Length("input"),
            result_in_row=ExpressionWrapper(Q(result_data__isnull=False), output_field=BooleanField()))

    @admin.display(description="input size (bytes)")
    def input_size(self, run):
        return run.input_bytes

    @admin.display(description="result stored")
    def result_name(self, run):
        if run.result_in_row:
            return "in the database (small result)"
        return run.result.name or "-"

    @admin.display(description="log")
    def log_display(self, run):
        return format_html("<pre>{}</pre>", run.log)
