"""Reads for the portal's pages, built on the apps' scoped selectors.

Every object comes out of a selector scoped to the user, so what the user may not see is
absent and the page answers 404, exactly as the API does for the same user.
"""

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q

from accounts.models import Action, Resource
from accounts.permissions import user_scope
from collaborations.models import Collaboration, Node
from collaborations.selectors import collaboration_list, node_list, organization_list
from core.errors import NotFound
from portal.charts import Picture, picture
from tasks.models import Algorithm, Run, Task
from tasks.selectors import algorithm_list, run_list, run_result_file, task_allows, task_list

RECENT_TASKS = 20
COLLABORATION_TASKS = 50
# Results up to this size are decoded and shown on the task page; larger ones are only
# offered for download, so a page never reads a big file into memory.
RESULT_PREVIEW_BYTES = 512 * 1024
RESULT_PREVIEW_NESTING = 100
OPEN_TASK_STATUSES = (Task.Status.PENDING, Task.Status.ACTIVE)


def second_factor_missing(*, user) -> bool:
    """True when the user must log in with a second factor and has none confirmed yet."""
    from accounts.services import confirmed_second_factor, second_factor_required

    return second_factor_required(user) and confirmed_second_factor(user) is None


def security_page(*, user) -> dict:
    """The security page: the confirmed second factor, or the one being set up with its
    QR code (an inline SVG made here: the secret goes to no other service)."""
    import pyotp
    import segno

    from accounts.models import SecondFactor
    from accounts.services import second_factor_required

    factor = SecondFactor.objects.filter(user=user).first()
    page = {"factor": factor, "required": second_factor_required(user), "qr_svg": "", "secret": ""}
    if factor is not None and factor.confirmed_at is None:
        uri = pyotp.TOTP(factor.secret).provisioning_uri(name=user.get_username(), issuer_name="Vantage")
        page["qr_svg"] = segno.make(uri, error="m").svg_inline(scale=5, title="QR code for your authenticator app")
        page["secret"] = factor.secret
        page["recovery_left"] = 0
    if factor is not None and factor.confirmed_at is not None:
        page["recovery_left"] = user.recovery_codes.filter(used_at__isnull=True).count()
    return page


def may_create_tasks(*, user) -> bool:
    return user_scope(user, Resource.TASK, Action.CREATE) is not None


def _organization_names(*, user, collaboration_ids) -> dict[int, str]:
    return dict(
        organization_list(user=user).filter(collaborations__in=collaboration_ids).values_list("pk", "name")
    )


@dataclass
class CollaborationSummary:
    collaboration: Collaboration
    organizations: int
    nodes_online: int
    nodes: int


def dashboard(*, user) -> dict:
    """The user's collaborations with member and node counts, and their latest jobs."""
    collaborations = list(
        collaboration_list(user=user).annotate(n_organizations=Count("organizations", distinct=True))
    )
    node_counts = (
        node_list(user=user).filter(collaboration__in=[c.pk for c in collaborations])
        .values("collaboration_id").order_by()
        .annotate(total=Count("pk"), online=Count("pk", filter=Q(status=Node.Status.ONLINE)))
    )
    nodes = {row["collaboration_id"]: row for row in node_counts}
    summaries = [
        CollaborationSummary(
            collaboration=c, organizations=c.n_organizations,
            nodes_online=nodes.get(c.pk, {}).get("online", 0), nodes=nodes.get(c.pk, {}).get("total", 0),
        )
        for c in collaborations
    ]
    tasks = list(task_list(user=user).filter(parent__isnull=True)[:RECENT_TASKS])
    return {
        "collaborations": summaries,
        "tasks": tasks,
        "organization_names": _organization_names(user=user, collaboration_ids={t.collaboration_id for t in tasks}),
        "may_create": may_create_tasks(user=user),
    }


def collaboration_page(*, user, collaboration_id: int) -> dict:
    """One collaboration the user may see: its organisations, nodes and latest jobs."""
    collaboration = collaboration_list(user=user).filter(pk=collaboration_id).first()
    if collaboration is None:
        raise NotFound("No such collaboration.")
    organizations = list(organization_list(user=user).filter(collaborations=collaboration))
    return {
        "collaboration": collaboration,
        "organizations": organizations,
        "organization_names": {o.pk: o.name for o in organizations},
        "nodes": list(node_list(user=user).filter(collaboration=collaboration)),
        "tasks": list(task_list(user=user).filter(collaboration=collaboration, parent__isnull=True)
                      [:COLLABORATION_TASKS]),
        "may_create": may_create_tasks(user=user) and collaboration.status == Collaboration.Status.ACTIVE,
    }


def visible_task(*, user, task_id: int) -> Task:
    """A task the user may see, with its derived status; NotFound otherwise."""
    task = task_list(user=user).select_related("algorithm", "parent").filter(pk=task_id).first()
    if task is None:
        raise NotFound("No such task.")
    return task


@dataclass
class ResultPreview:
    """What the task page shows of one run's result."""

    state: str  # "shown", "encrypted", "too_large", "not_json", "missing"
    value: Any = None
    message: str = ""


@dataclass
class RunView:
    run: Run
    preview: ResultPreview | None = None
    download: bool = False
    picture: Picture | None = None


def _result_preview(run: Run, *, encrypted: bool) -> ResultPreview | None:
    if not run.has_stored_result:
        return None
    if encrypted:
        return ResultPreview("encrypted", message="Encrypted for your organisation: download it and decrypt it "
                                                  "with the Python client.")
    if (run.result_size or 0) > RESULT_PREVIEW_BYTES:
        return ResultPreview("too_large", message=f"{run.result_size} bytes: too large to show here, download it.")
    try:
        with run_result_file(run=run) as handle:
            raw = handle.read(RESULT_PREVIEW_BYTES + 1)
    except NotFound as exc:
        return ResultPreview("missing", message=exc.message)
    too_deep = ResultPreview("not_json", message="Nested too deeply to show here: download it to read it.")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ResultPreview("not_json", message="Not JSON: download it to read it.")
    except RecursionError:
        return too_deep
    # Rendering recurses (tables, then indented JSON): keep far from Python's recursion limit.
    if _nesting(value) > RESULT_PREVIEW_NESTING:
        return too_deep
    return ResultPreview("shown", value=value)


def _nesting(value) -> int:
    """How deeply lists and objects nest in a decoded JSON value, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def task_page(*, user, task_id: int) -> dict:
    """A task the user may see, its runs (with logs and results), its subtasks, and what the user may do."""
    task = visible_task(user=user, task_id=task_id)
    encrypted = task.collaboration.encrypted
    # Logs are shown, inputs never (they may be megabytes, and users do not read them back).
    runs = (run_list(principal=user).filter(task=task).select_related("node").defer("input")
            .order_by("organization__name"))
    views = []
    for run in runs:
        preview = _result_preview(run, encrypted=encrypted)
        views.append(RunView(run=run, preview=preview, download=preview is not None and preview.state != "missing",
                             picture=picture(preview.value) if preview is not None and preview.state == "shown" else None))
    subtasks = list(task_list(user=user).filter(parent=task))
    return {
        "task": task,
        "runs": views,
        "has_results": any(view.preview is not None for view in views),
        "subtasks": subtasks,
        # Folded on the page under one line: a survival analysis makes a dozen of them.
        "subtask_statuses": sorted(Counter(t.status for t in subtasks).items()),
        "organization_names": _organization_names(user=user, collaboration_ids=[task.collaboration_id]),
        "may_kill": task.status in OPEN_TASK_STATUSES and task_allows(user=user, task=task, action=Action.EDIT),
    }


def run_picture(*, user, run_id: int) -> Picture:
    """The charts and tables of a run's result that the user may see; NotFound when the run
    is not theirs to see, or its result is not one drawn (encrypted, too large, other shapes)."""
    run = run_list(principal=user).select_related("task__collaboration").defer("input").filter(pk=run_id).first()
    if run is None:
        raise NotFound("No such run.")
    preview = _result_preview(run, encrypted=run.task.collaboration.encrypted)
    drawn = picture(preview.value) if preview is not None and preview.state == "shown" else None
    if drawn is None:
        raise NotFound("This run has no result drawn here.")
    return drawn


RECENT_SUGGESTIONS = 100


def _database_labels(configs) -> list[str]:
    """The database labels the nodes report (`label` or `label:type`), each once, sorted."""
    labels = set()
    for config in configs:
        databases = config.get("databases") if isinstance(config, dict) else None
        for db in databases if isinstance(databases, list) else []:
            if isinstance(db, dict) and isinstance(db.get("label"), str):
                labels.add(f"{db['label']}:{db['type']}" if isinstance(db.get("type"), str) and db["type"]
                           else db["label"])
    return sorted(labels)


def _recent(values) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def task_form_choices(*, user) -> dict:
    """What a new task may name: active collaborations, their organisations, approved
    algorithms; and, as suggestions, the images and methods of the latest jobs the user sees."""
    collaborations = collaboration_list(user=user).filter(status=Collaboration.Status.ACTIVE)
    algorithms = algorithm_list(user=user).filter(status=Algorithm.Status.APPROVED)
    guide = catalogue_guide(algorithms)
    recent = list(task_list(user=user).filter(parent__isnull=True).values_list("image", "method")
                  [:RECENT_SUGGESTIONS])
    reported = node_list(user=user).filter(collaboration__in=collaborations).values_list("reported_config", flat=True)
    return {
        "database_labels": _database_labels(reported),
        "recent_images": _recent(image for image, _method in recent),
        "recent_methods": _recent([*(f.name for entry in guide for f in entry.functions),
                                   *(method for _image, method in recent)]),
        "guide": guide,
        "collaborations": collaborations,
        "organizations": organization_list(user=user).filter(collaborations__in=collaborations).distinct(),
        "memberships": organization_list(user=user).filter(collaborations__in=collaborations)
        .values_list("pk", "collaborations"),
        "algorithms": algorithms,
    }


@dataclass
class Argument:
    name: str
    type: str
    required: bool
    default: Any


@dataclass
class Function:
    name: str
    kind: str
    description: str
    arguments: list[Argument]


@dataclass
class CatalogueEntry:
    algorithm: Algorithm
    functions: list[Function]


def catalogue_guide(algorithms) -> list[CatalogueEntry]:
    """Each algorithm's functions and their arguments, read from its catalogue entry
    (`functions`: name, kind, a JSON schema of the arguments), central functions first,
    required arguments first."""
    guide = []
    for algorithm in algorithms:
        functions = []
        for fn in algorithm.functions if isinstance(algorithm.functions, list) else []:
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                continue
            schema = fn.get("arguments") if isinstance(fn.get("arguments"), dict) else {}
            properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            required = schema.get("required") if isinstance(schema.get("required"), list) else []
            arguments = [
                Argument(name=str(name), type=str(spec.get("type", "")) if isinstance(spec, dict) else "",
                         required=name in required,
                         default=spec.get("default") if isinstance(spec, dict) else None)
                for name, spec in properties.items()
            ]
            # Required first, then by name: PostgreSQL's jsonb keeps no key order.
            arguments.sort(key=lambda a: (not a.required, a.name))
            functions.append(Function(name=fn["name"], kind=str(fn.get("kind", "partial")),
                                      description=str(fn.get("description", "")), arguments=arguments))
        functions.sort(key=lambda f: f.kind != "central")
        guide.append(CatalogueEntry(algorithm=algorithm, functions=functions))
    return guide
