"""Reads for algorithms, tasks and runs, scoped to the caller (user or node)."""

from django.core.files.base import ContentFile, File
from django.db.models import Case, CharField, Count, Prefetch, Q, QuerySet, Value, When
from django.db.models.lookups import Exact, GreaterThan

from accounts.models import Action, Resource, Scope
from accounts.permissions import is_node, user_scope
from collaborations.selectors import member_collaboration_ids
from core.errors import NotFound
from core.prepared import PreparedQuery
from tasks.models import Algorithm, Run, Task

S = Run.Status
FAILED_STATUSES = (S.FAILED, S.CRASHED, S.REJECTED, S.TIMED_OUT)


def _status_expression() -> Case:
    """A task's derived status over its runs.

    pending: every run still pending; active: some run open (pending, claimed,
    running) and some not pending; then, once all runs are final: failed if any run
    failed, crashed, was rejected or timed out; killed if any was killed; else completed.
    """

    def count(**condition):
        return Count("runs", filter=Q(**{"runs__status" + k: v for k, v in condition.items()})) if condition \
            else Count("runs")

    n_runs = count()
    return Case(
        When(Q(Exact(n_runs, Value(0))), then=Value(Task.Status.PENDING)),
        When(Q(Exact(count(**{"": S.PENDING}), n_runs)), then=Value(Task.Status.PENDING)),
        When(Q(GreaterThan(count(**{"__in": Run.ACTIVE_STATUSES}), Value(0))), then=Value(Task.Status.ACTIVE)),
        When(Q(GreaterThan(count(**{"__in": FAILED_STATUSES}), Value(0))), then=Value(Task.Status.FAILED)),
        When(Q(GreaterThan(count(**{"": S.KILLED}), Value(0))), then=Value(Task.Status.KILLED)),
        default=Value(Task.Status.COMPLETED),
        output_field=CharField(),
    )


def with_status(qs: QuerySet[Task]) -> QuerySet[Task]:
    """Annotate each task with `status`, derived from its runs by the database."""
    return qs.annotate(status=_status_expression())


def task_status(*, task_id: int) -> str | None:
    """One task's derived status (None for an unknown task), in one query."""
    task = _task_status.first(task_id=int(task_id))
    return task.status if task is not None else None


# Building the status expression's SQL costs far more than running it, and every final
# run needs its task's status for its event: the query is prepared (core.prepared).
_task_status = PreparedQuery(
    lambda *, task_id: with_status(Task.objects.only("pk").filter(pk=task_id)).order_by("pk")[:1], "task_id"
)


def _task_scope_q(user, scope: int, prefix: str = "") -> Q:
    if scope == Scope.GLOBAL:
        return Q()
    if scope == Scope.COLLABORATION:
        return Q(**{f"{prefix}collaboration_id__in": member_collaboration_ids(user.organization_id)})
    if scope == Scope.ORGANIZATION:
        return Q(**{f"{prefix}init_organization_id": user.organization_id})
    return Q(**{f"{prefix}created_by_id": user.pk})


def _run_summaries() -> Prefetch:
    # Only what a task listing shows of its runs: never the inputs or logs.
    return Prefetch("runs", queryset=Run.objects.only("id", "task_id", "organization_id", "status"))


def task_list(*, user, action: str = Action.VIEW) -> QuerySet[Task]:
    """Tasks the user may see (or act on, for another action), with derived status and run summaries."""
    scope = user_scope(user, Resource.TASK, action)
    qs = Task.objects.select_related("collaboration", "init_organization", "created_by")
    if scope is None:
        return qs.none()
    # Django leaves Meta.ordering out of GROUP BY queries (the status annotation), so
    # the order is spelled out: pages must be stable.
    return with_status(qs.filter(_task_scope_q(user, scope))).prefetch_related(_run_summaries()).order_by("-id")


def task_detail(*, task_id: int) -> Task:
    """One task with derived status and run summaries, unscoped: for answering its author right after a write."""
    return with_status(Task.objects.filter(pk=task_id)).prefetch_related(_run_summaries()).get()


def task_allows(*, user, task: Task, action: str) -> bool:
    """Whether the user's scope for `action` on tasks covers this task."""
    scope = user_scope(user, Resource.TASK, action)
    if scope is None:
        return False
    if scope == Scope.GLOBAL:
        return True
    return Task.objects.filter(_task_scope_q(user, scope), pk=task.pk).exists()


def run_list(*, principal, action: str = Action.VIEW, defer_payload: bool = False) -> QuerySet[Run]:
    """Runs a user may see, or the runs addressed to a node's organisation in its collaboration.

    `defer_payload` leaves the input, log and result columns unloaded, for listings that
    show none of them.
    """
    qs = Run.objects.select_related("task", "organization")
    if defer_payload:
        qs = qs.defer("input", "log", "result_data")
    if is_node(principal):
        # The node's run detail names the task's creator and collaboration (tasks.serializers.NODE_RUN).
        return qs.select_related("task__created_by", "task__collaboration").filter(
            organization_id=principal.organization_id, task__collaboration_id=principal.collaboration_id
        )
    scope = user_scope(principal, Resource.RUN, action)
    if scope is None:
        return qs.none()
    if scope == Scope.ORGANIZATION:
        return qs.filter(
            Q(organization_id=principal.organization_id) | Q(task__init_organization_id=principal.organization_id)
        )
    return qs.filter(_task_scope_q(principal, scope, prefix="task__"))


def run_for_claim(*, run_id: int, node) -> Run | None:
    """A run addressed to the node's organisation in its collaboration, with what a claim
    answers (tasks.serializers.NODE_RUN), audits and publishes; None if there is none."""
    return _run_for_claim.first(
        run_id=int(run_id), organization_id=node.organization_id, collaboration_id=node.collaboration_id
    )


# Claims are the node's hottest request: prepared (core.prepared), and only the
# columns the claim reads: the creator's row alone holds a dozen the node never sees.
_run_for_claim = PreparedQuery(
    lambda *, run_id, organization_id, collaboration_id: Run.objects.select_related(
        "task__created_by", "task__collaboration"
    ).only(
        "task", "organization", "node", "status", "exit_code", "error_kind", "result_size", "result_sha256",
        "kill_requested_at", "created_at", "claimed_at", "started_at", "finished_at", "hold_info", "digest", "input",
        "task__collaboration", "task__init_organization", "task__job", "task__image", "task__digest", "task__method",
        "task__databases", "task__created_by", "task__parent", "task__created_by_run", "task__created_by__username",
        "task__collaboration__encrypted",
    ).filter(pk=run_id, organization_id=organization_id, task__collaboration_id=collaboration_id).order_by("pk")[:1],
    "run_id", "organization_id", "collaboration_id",
)


def node_run_for_update(*, run_id: int, node) -> Run:
    """One of the node's runs, locked until the transaction ends; NotFound if the node may not see it.

    It loads what a log append and a finish read, answer (tasks.serializers.RUN) and
    publish; never the input, which is not needed once a run is claimed, nor the task's
    own columns beyond those naming who may see the events.
    """
    run = _node_run_for_update.first(
        run_id=int(run_id), organization_id=node.organization_id, collaboration_id=node.collaboration_id
    )
    if run is None:
        raise NotFound("No such run for this node.")
    return run


# Every upload and log line of a node locks its run first: prepared (core.prepared).
_node_run_for_update = PreparedQuery(
    lambda *, run_id, organization_id, collaboration_id: Run.objects.select_for_update(of=("self",))
    .select_related("task").only(
        "task", "organization", "node", "status", "exit_code", "error_kind", "result", "result_size",
        "result_sha256", "log", "log_truncated", "kill_requested_at", "hold_info", "created_at", "claimed_at",
        "started_at", "finished_at", "digest", "task__collaboration", "task__init_organization", "task__created_by",
    )
    .filter(pk=run_id, organization_id=organization_id, task__collaboration_id=collaboration_id)
    .order_by("pk")[:1],
    "run_id", "organization_id", "collaboration_id",
)


def run_with_task(*, run_id: int) -> Run | None:
    """One run with its task, unscoped: for answering the node that just changed it."""
    return _run_with_task.first(run_id=int(run_id))


_run_with_task = PreparedQuery(lambda *, run_id: Run.objects.select_related("task").filter(pk=run_id), "run_id")


def container_run_for_update(*, container) -> Run | None:
    """The run of an algorithm container, with its task's collaboration and study, locked
    until the transaction ends (as a finish locks it); never its input or log."""
    return (
        Run.objects.select_for_update(of=("self",)).select_related("task__collaboration", "task__study")
        .defer("input", "log").filter(pk=container.run_id).first()
    )


def run_result_file(*, run: Run) -> File:
    """The stored result of a run, opened for reading; NotFound when it has none."""
    if run.result_data is not None:
        return ContentFile(bytes(run.result_data), name=f"run-{run.pk}-result")
    if not run.result:
        raise NotFound("This run has no result.")
    try:
        return run.result.storage.open(run.result.name, "rb")
    except FileNotFoundError:
        raise NotFound("This run's result file is missing from storage.")


def algorithm_list(*, user) -> QuerySet[Algorithm]:
    """The catalogue; users without global algorithm rights see approved entries and their own submissions."""
    scope = user_scope(user, Resource.ALGORITHM, Action.VIEW)
    qs = Algorithm.objects.select_related("submitted_by", "reviewer").prefetch_related("approvals")
    if scope is None:
        return qs.none()
    if user_scope(user, Resource.ALGORITHM, Action.EDIT) == Scope.GLOBAL:
        return qs
    return qs.filter(Q(status=Algorithm.Status.APPROVED) | Q(submitted_by=user))


def container_task_list(*, container) -> QuerySet[Task]:
    """The tasks of a container's own job, with derived status and run summaries."""
    return (
        with_status(Task.objects.select_related("collaboration", "init_organization", "created_by")
                    .filter(job_id=container.job_id))
        .prefetch_related(_run_summaries()).order_by("-id")
    )


def container_run_list(*, container) -> QuerySet[Run]:
    """The runs of a container's own job; never their inputs or logs."""
    return Run.objects.select_related("task", "organization").filter(task__job_id=container.job_id).defer("input", "log")


def catalogue_status(*, image: str, digest: str) -> str:
    """What the catalogue says about an image digest, for nodes that require it: the
    status of its entry for this repository ("approved", "retired", ...) or "unknown"."""
    repository = image.partition("@")[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    statuses = set()
    for entry_image, status in Algorithm.objects.filter(digest=digest).values_list("image", "status"):
        name = entry_image.partition("@")[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        if name == repository:
            statuses.add(status)
    # Any retired entry for the digest retires it: retiring must not be undone by a second entry.
    for status in (Algorithm.Status.RETIRED, Algorithm.Status.APPROVED, Algorithm.Status.REJECTED,
                   Algorithm.Status.SUBMITTED):
        if status in statuses:
            return status
    return "unknown"
