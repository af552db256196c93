"""Reads for algorithms, tasks and runs, scoped to the caller (user or node)."""

from django.core.files.base import ContentFile, File
from django.db import connections
from django.db.models import Case, CharField, Count, Prefetch, Q, QuerySet, Value, When
from django.db.models.lookups import Exact, GreaterThan

from accounts.models import Action, Resource, Scope
from accounts.permissions import is_node, user_scope
from collaborations.models import Organization
from collaborations.selectors import member_collaboration_ids
from tasks.models import Algorithm, Run, Task
from vantage.errors import NotFound

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


# Building the status expression's SQL costs far more than running it, and every final
# run needs its task's status for the event: the ORM compiles this query once per
# database, with a marker where the task id goes, and later calls only run it.
_TASK_ID_MARKER = -7_302_011
_task_status_sql: dict[str, tuple[str, list, int]] = {}


def task_status(*, task_id: int) -> str | None:
    """One task's derived status (None for an unknown task), in one query."""
    connection = connections[Task.objects.db]
    compiled = _task_status_sql.get(connection.alias)
    if compiled is None:
        query = with_status(Task.objects.filter(pk=_TASK_ID_MARKER)).order_by("pk").values_list("status")[:1].query
        sql, params = query.get_compiler(connection=connection).as_sql()
        params = list(params)
        compiled = _task_status_sql[connection.alias] = (sql, params, params.index(_TASK_ID_MARKER))
    sql, params, marker = compiled
    params = [*params[:marker], int(task_id), *params[marker + 1:]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row is not None else None


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
        # The node's run detail names the task's creator and collaboration (NodeRunSerializer).
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


def container_organization_list(*, container, collaboration: str | None = None) -> QuerySet[Organization]:
    """The member organisations of a container's collaboration (public keys included).

    `collaboration` is the `?collaboration=` the vantage6 client sends: naming any other
    collaboration finds nothing.
    """
    qs = Organization.objects.filter(collaborations=container.collaboration_id)
    if collaboration is not None and collaboration.strip() != str(container.collaboration_id):
        return qs.none()
    return qs


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
