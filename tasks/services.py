"""Writes for algorithms, tasks and runs: the run state machine lives here.

Run transitions (each a compare-and-swap on the current status, so two nodes or a node
and a researcher can never both win):

    pending --claim--> claimed --start--> running --finish--> completed | failed | crashed | ...
    pending/claimed --finish(rejected|failed)--> final   (refused by policy, image missing)
    pending --kill--> killed;  claimed/running --kill--> kill requested, the node finishes it as killed
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Action, Resource, Scope
from accounts.permissions import is_node, user_scope
from collaborations.models import Collaboration, Node, Study
from collaborations.selectors import collaboration_member_ids, organization_public_keys, study_organization_ids
from core.errors import Conflict, DomainError, NotAllowed, TooLarge
from core.prepared import PreparedInsert, PreparedUpdate
from tasks import events as task_events
from tasks import signature_check
from tasks.models import Algorithm, AlgorithmApproval, DatabaseType, Run, Task
from tasks.selectors import (
    container_run_for_update,
    node_run_for_update,
    run_for_claim,
    run_with_task,
    task_allows,
)
from tasks.uploads import ReceivedResult
from vantage_client import crypto

LABEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
FINGERPRINT_RE = re.compile(r"^[0-9a-fA-F]{64}$")
S = Run.Status


def _image_digest(image: str) -> str:
    """The digest pinned in an image reference (`name@sha256:...`), or ''."""
    if "@" not in image:
        return ""
    digest = image.rsplit("@", 1)[1]
    if not DIGEST_RE.match(digest):
        raise DomainError("The image digest must read sha256:<64 hex digits>.", field="image")
    return digest


def _validate_databases(databases) -> list[dict]:
    if not isinstance(databases, list):
        raise DomainError("Expected a list of {label, type}.", field="databases")
    cleaned, seen = [], set()
    for i, entry in enumerate(databases):
        if not isinstance(entry, dict) or set(entry) - {"label", "type"} or "label" not in entry:
            raise DomainError(f"Entry {i}: expected an object with 'label' and optional 'type'.", field="databases")
        label = entry["label"]
        if not isinstance(label, str) or not LABEL_RE.match(label):
            raise DomainError(
                f"Entry {i}: label {label!r} must be lowercase letters, digits and _ (start with a letter, max 64).",
                field="databases",
            )
        if label in seen:
            raise DomainError(f"Entry {i}: label {label!r} appears twice.", field="databases")
        seen.add(label)
        item = {"label": label}
        if "type" in entry:
            if entry["type"] not in DatabaseType.values:
                raise DomainError(
                    f"Entry {i}: type {entry['type']!r} is not one of {', '.join(DatabaseType.values)}.",
                    field="databases",
                )
            item["type"] = entry["type"]
        cleaned.append(item)
    return cleaned


def _validate_inputs(collaboration: Collaboration, organization_inputs: dict[int, bytes]) -> None:
    if not organization_inputs:
        raise DomainError("Name at least one organisation.", field="organizations")
    for org_id, payload in organization_inputs.items():
        if not isinstance(payload, bytes):
            raise DomainError(f"Input for organisation {org_id} must be bytes.", field="organizations")
        if len(payload) > settings.VANTAGE_MAX_INPUT_BYTES:
            raise TooLarge(
                f"Input for organisation {org_id} is {len(payload)} bytes; the limit is "
                f"{settings.VANTAGE_MAX_INPUT_BYTES}."
            )
        if collaboration.encrypted:
            if not payload:
                raise DomainError(f"Input for organisation {org_id} is empty.", field="organizations")
            continue
        # Unencrypted collaborations carry the container contract's JSON input in the clear:
        # reject what no algorithm could read, here rather than on every node.
        try:
            decoded = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DomainError(f"Input for organisation {org_id} is not valid JSON.", field="organizations")
        if not isinstance(decoded, dict):
            raise DomainError(f"Input for organisation {org_id} must be a JSON object.", field="organizations")


def _check_sealed(collaboration: Collaboration, organization_inputs: dict[int, bytes], init_organization_id) -> None:
    """In an encrypted collaboration, each input must be an envelope (client/vantage_client/crypto.py)
    sealed for its organisation's current public key, and the initiating organisation
    needs a key too: the nodes seal its results for it. The server cannot read any of it."""
    if not collaboration.encrypted:
        return
    keys = organization_public_keys(organization_ids=[*organization_inputs, init_organization_id])
    if not keys.get(init_organization_id):
        raise DomainError(
            f"Collaboration {collaboration.pk} is encrypted and organisation {init_organization_id}, which "
            "starts this task, has no public key to seal its results for.", field="organizations",
        )
    for org_id, payload in organization_inputs.items():
        if not keys.get(org_id):
            raise DomainError(f"Organisation {org_id} has no public key, so collaboration {collaboration.pk} "
                              "(encrypted) cannot send it input.", field="organizations")
        try:
            sealed_for = crypto.recipient(payload)
        except crypto.EnvelopeError as exc:
            raise DomainError(f"Input for organisation {org_id} must be encrypted in collaboration "
                              f"{collaboration.pk}: {exc}.", field="organizations")
        try:
            expected = crypto.fingerprint(crypto.load_public_key(keys[org_id]))
        except crypto.KeyFormatError as exc:
            raise DomainError(f"Organisation {org_id}'s public key cannot be used: {exc}.", field="organizations")
        if sealed_for != expected:
            raise DomainError(f"Input for organisation {org_id} is sealed for another key than its public key.",
                              field="organizations")


def _task_image(*, image: str, algorithm: Algorithm | None) -> tuple[str, str]:
    """The image a new task runs and its pinned digest ('' when the reference pins none):
    a catalogue algorithm's, or the reference the researcher named."""
    if algorithm is not None:
        if algorithm.status != Algorithm.Status.APPROVED:
            raise DomainError(f"Algorithm {algorithm.pk} is {algorithm.status}, not approved.", field="algorithm")
        return algorithm.image, algorithm.digest
    if not image or not isinstance(image, str):
        raise DomainError("Name the image to run.", field="image")
    return image, _image_digest(image)


@transaction.atomic
def task_create(
    *, actor, collaboration: Collaboration, name: str, image: str, method: str,
    organization_inputs: dict[int, bytes], databases: list | None = None, description: str = "",
    study: Study | None = None, algorithm: Algorithm | None = None,
) -> Task:
    """Create a task and one pending run per target organisation, for a researcher."""
    scope = user_scope(actor, Resource.TASK, Action.CREATE)
    if scope is None:
        raise NotAllowed("Your roles do not allow creating tasks.")
    if actor.organization_id is None:
        raise DomainError("Your account belongs to no organisation, so it cannot start tasks.")
    members = collaboration_member_ids(collaboration=collaboration)
    if scope != Scope.GLOBAL and actor.organization_id not in members:
        raise NotAllowed("You can only create tasks in collaborations your organisation belongs to.")
    if study is not None and study.collaboration_id != collaboration.pk:
        raise DomainError("The study belongs to another collaboration.", field="study")
    image, digest = _task_image(image=image, algorithm=algorithm)
    return _task_insert(
        actor=actor, members=members, organization_inputs=organization_inputs, databases=databases,
        audit_details={},
        collaboration=collaboration, study=study, algorithm=algorithm, name=name, description=description,
        image=image, digest=digest, method=method, init_organization_id=actor.organization_id, created_by=actor,
    )


def _check_subtask_request(parent_task: Task, collaboration: int | None, image: str) -> None:
    """A body may repeat the container's own collaboration and image (the vantage6 client
    sends both), but naming any other is refused rather than silently replaced."""
    if collaboration is not None and collaboration != parent_task.collaboration_id:
        raise DomainError("A container creates subtasks in its own collaboration only.", field="collaboration")
    if image:
        name, _, digest = image.partition("@")
        if name != parent_task.image.partition("@")[0] or (digest and digest != parent_task.digest):
            raise DomainError("A container creates subtasks with its own image only.", field="image")


@transaction.atomic
def subtask_create(
    *, container, name: str, method: str, organization_inputs: dict[int, bytes], databases: list | None = None,
    description: str = "", collaboration: int | None = None, image: str = "",
) -> Task:
    """Create a subtask from an algorithm container (a central function), in its own job.

    Collaboration, image and digest, study and algorithm come from the container's task;
    the subtask's parent is that task, its creator the job's researcher (so nodes apply
    their user policies to them), its initiating organisation the container's.
    `collaboration` and `image` are what the request named, checked, never used.
    """
    # Locked like run_finish locks it: a parent run cannot finish while its subtask is created.
    parent_run = container_run_for_update(container=container)
    if parent_run is None or parent_run.is_final:
        raise Conflict("The run that asks for this subtask has finished.")
    if parent_run.kill_requested_at is not None:
        raise Conflict("The job is being killed: it takes no new subtasks.")
    parent = parent_run.task
    _check_subtask_request(parent, collaboration, image)
    return _task_insert(
        actor=container, members=collaboration_member_ids(collaboration=parent.collaboration),
        organization_inputs=organization_inputs, databases=databases,
        audit_details={"parent": parent.pk, "job": parent.job_id or parent.pk, "created_by_run": parent_run.pk},
        collaboration=parent.collaboration, study=parent.study, algorithm_id=parent.algorithm_id, name=name,
        description=description, image=parent.image, digest=parent.digest, method=method,
        init_organization_id=parent_run.organization_id, created_by_id=parent.created_by_id,
        created_by_run=parent_run, parent=parent, job_id=parent.job_id or parent.pk,
    )


def _task_insert(
    *, actor, members: set[int], organization_inputs: dict[int, bytes], databases: list | None,
    audit_details: dict, collaboration: Collaboration, study: Study | None, method: str, **task_fields,
) -> Task:
    """The one path by which a task comes to be (task_create, subtask_create): the checks
    every task passes, the task and its pending runs, the audit event and run.created.

    `task_fields` are the Task's other fields, as its caller decided them; a task without
    `job_id` is the root of its own job.
    """
    if collaboration.status != Collaboration.Status.ACTIVE:
        raise DomainError("The collaboration is archived and accepts no new tasks.", field="collaboration")
    if not method or not isinstance(method, str):
        raise DomainError("Name the method to run.", field="method")
    cleaned_databases = _validate_databases(databases or [])
    _validate_inputs(collaboration, organization_inputs)
    outsiders = set(organization_inputs) - members
    if outsiders:
        raise DomainError(
            f"Organisations {sorted(outsiders)} are not members of collaboration {collaboration.pk}.",
            field="organizations",
        )
    _check_sealed(collaboration, organization_inputs, task_fields["init_organization_id"])
    if study is not None:
        outside_study = set(organization_inputs) - study_organization_ids(study=study)
        if outside_study:
            raise DomainError(
                f"Organisations {sorted(outside_study)} are not in study {study.pk}.", field="organizations"
            )

    task = Task(collaboration=collaboration, study=study, method=method, databases=cleaned_databases, **task_fields)
    # The related objects were all loaded and checked above: skip re-reading each one.
    task.full_clean(exclude=["job", "collaboration", "study", "algorithm", "init_organization", "created_by",
                             "created_by_run", "parent"])
    # Written without save() or bulk_create(), so no model signals (core.prepared).
    _insert_task.save_new(task)
    if task.job_id is None:
        task.job = task
        _set_job(where={"id": task.pk}, job=task)  # no save(), no signals
    runs = [Run(task=task, organization_id=org_id, input=payload) for org_id, payload in organization_inputs.items()]
    _insert_run.save_new(*runs)  # no save(), no signals
    audit_record(actor=actor, verb="task.created", target=task,
                 details={"organizations": sorted(organization_inputs), "image": task.image, "method": method,
                          **audit_details})
    task_events.task_created(task, runs)
    # What a caller would otherwise read back: every run of a new task is pending.
    task.status = Task.Status.PENDING
    task.created_runs = runs
    return task


# Researchers and their algorithms create tasks all day: the three statements are
# written once (core.prepared).
_insert_task = PreparedInsert(Task, fields=tuple(f.name for f in Task._meta.concrete_fields if not f.primary_key))
_set_job = PreparedUpdate(Task, set=("job",), where=("id",))
_insert_run = PreparedInsert(Run, fields=tuple(f.name for f in Run._meta.concrete_fields if not f.primary_key))


def _require_task_action(actor, task: Task, action: str) -> None:
    if actor is None or is_node(actor):
        return
    if not task_allows(user=actor, task=task, action=action):
        raise NotAllowed(f"Your roles do not allow {action} on this task.")


@transaction.atomic
def task_kill(*, actor, task: Task) -> int:
    """Stop a task: pending runs end as killed now, claimed/running ones are asked to stop.

    Returns the number of runs affected. Killing a finished task changes nothing.
    """
    _require_task_action(actor, task, Action.EDIT)
    now = timezone.now()
    runs = list(
        Run.objects.select_for_update(of=("self",)).select_related("task")
        .filter(task__job_id=task.job_id or task.pk, status__in=Run.ACTIVE_STATUSES, kill_requested_at__isnull=True)
    )
    # A run awaiting release has no container left to stop: it ends now, and the node's
    # later release or rejection finds it final and discards what it held.
    pending = [r for r in runs if r.status in (S.PENDING, S.AWAITING_RELEASE)]
    held = [r for r in runs if r.status not in (S.PENDING, S.AWAITING_RELEASE)]
    Run.objects.filter(pk__in=[r.pk for r in pending]).update(
        status=S.KILLED, error_kind=Run.ErrorKind.KILLED, finished_at=now
    )
    Run.objects.filter(pk__in=[r.pk for r in held]).update(kill_requested_at=now)
    for run in pending:
        run.status, run.error_kind, run.finished_at = S.KILLED, Run.ErrorKind.KILLED, now
        task_events.run_updated(run, run.task)
    for run in held:
        task_events.run_kill_requested(run)
    if runs:
        audit_record(actor=actor, verb="task.killed", target=task,
                     details={"killed": len(pending), "asked_to_stop": len(held)})
    return len(runs)


@transaction.atomic
def task_delete(*, actor, task: Task) -> None:
    """Delete a finished job (a root task with its subtasks), with its runs and result files."""
    _require_task_action(actor, task, Action.DELETE)
    if task.job_id not in (None, task.pk):
        raise Conflict(f"Task {task.pk} is a subtask: delete its job, task {task.job_id}.")
    if Run.objects.filter(task__job_id=task.job_id or task.pk, status__in=Run.ACTIVE_STATUSES).exists():
        raise Conflict("The task still has open runs: kill it first.")
    files = [name for name in Run.objects.filter(task__job_id=task.job_id or task.pk)
             .exclude(result="").values_list("result", flat=True)]
    audit_record(actor=actor, verb="task.deleted", target=task)
    task.delete()
    transaction.on_commit(lambda: [default_storage.delete(name) for name in files])


@transaction.atomic
def run_claim(*, run_id: int, node: Node) -> Run | None:
    """Move a pending run to claimed for this node; None if another node won."""
    # The node's answer names the task's creator and collaboration (tasks.serializers.NODE_RUN).
    # Read first: what decides the claim is the compare-and-swap below, and nothing read
    # here changes while the run is pending except its status, which the swap checks.
    run = run_for_claim(run_id=run_id, node=node)
    if run is None:
        return None
    now = timezone.now()
    deadline = now + timedelta(seconds=settings.VANTAGE_RUN_DEADLINE_SECONDS)
    # Every condition stays on the run's own row: PostgreSQL re-checks it when a
    # competing claim commits first, so exactly one claim wins.
    won = _claim_swap(  # no save(), no signals
        where={"id": run.pk, "status": S.PENDING},
        status=S.CLAIMED, node=node, claimed_at=now, deadline_at=deadline,
    )
    if won != 1:
        return None
    run.status, run.node, run.claimed_at, run.deadline_at = S.CLAIMED, node, now, deadline
    audit_record(actor=node, verb="run.claimed", target=run)
    task_events.run_updated(run, run.task)
    return run


# The claim's compare-and-swap is built once (core.prepared).
_claim_swap = PreparedUpdate(Run, set=("status", "node", "claimed_at", "deadline_at"), where=("id", "status"))


@transaction.atomic
def run_start(*, run_id: int, node: Node, digest: str = "") -> Run:
    """Mark a claimed run as running (its container has started); `digest` is the image
    digest the node verified and runs, recorded even when the task named a tag."""
    _check_digest(digest)
    won = _start_swap(where={"id": int(run_id), "status": S.CLAIMED, "node": node},  # no save(), no signals
                      status=S.RUNNING, started_at=timezone.now(), digest=digest)
    if won != 1:
        raise Conflict("Only a run this node has claimed can start.")
    run = run_with_task(run_id=run_id)
    audit_record(actor=node, verb="run.started", target=run, details={"digest": digest} if digest else None)
    task_events.run_updated(run, run.task)
    return run


_start_swap = PreparedUpdate(Run, set=("status", "started_at", "digest"), where=("id", "status", "node"))


@transaction.atomic
def run_append_log(*, run_id: int, node: Node, text: str) -> Run:
    """Append to a run's log, keeping only its newest VANTAGE_RUN_LOG_MAX_CHARS characters."""
    run = node_run_for_update(run_id=run_id, node=node)
    if run.node_id != node.pk:
        raise Conflict("Only the node that claimed the run may write its log.")
    if run.is_final:
        raise Conflict(f"The run is already {run.status}: its log is closed.")
    limit = settings.VANTAGE_RUN_LOG_MAX_CHARS
    log = run.log + text
    if len(log) > limit:
        log = log[-limit:]
        run.log_truncated = True
    run.log = log
    run.save(update_fields=["log", "log_truncated"])
    task_events.run_log(run, run.task, text)
    return run


HOLD_FLAGS_MAX = 20


@transaction.atomic
def run_hold(*, run_id: int, node: Node, output_type: str, size: int, flags: list[str], digest: str = "",
             started_at: datetime | None = None) -> Run:
    """The node's output gate held a claimed or running run's result for its steward.

    Only metadata arrives (what kind of output, how large, which checks flagged it);
    the result and its log stay at the node until it finishes the run after a decision.
    A start never reported is recorded as a finish records it (`digest`, `started_at`).
    """
    _check_digest(digest)
    run = node_run_for_update(run_id=run_id, node=node)
    if run.node_id != node.pk:
        raise Conflict("Only the node that claimed the run may hold its result.")
    if run.status not in (S.CLAIMED, S.RUNNING):
        raise Conflict(f"The run is {run.status}: only a claimed or running run can be held.")
    _record_unreported_start(run, node, digest=digest, started_at=started_at)
    run.status = S.AWAITING_RELEASE
    run.hold_info = {"output_type": output_type, "size": size, "flags": list(flags)[:HOLD_FLAGS_MAX],
                     "held_at": timezone.now().isoformat()}
    run.save(update_fields=["status", "hold_info", "started_at", "digest"])
    audit_record(actor=node, verb="run.held", target=run, details=run.hold_info)
    task_events.run_updated(run, run.task)
    return run


class _HashingFile(File):
    """Streams a file to storage while hashing and counting it, chunk by chunk."""

    def __init__(self, file):
        super().__init__(file, name=getattr(file, "name", None))
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def chunks(self, chunk_size=None):
        for chunk in super().chunks(chunk_size):
            self.sha256.update(chunk)
            self.bytes_read += len(chunk)
            if self.bytes_read > settings.VANTAGE_MAX_RESULT_BYTES:
                raise _too_large()
            yield chunk


def run_finish(
    *, run_id: int, node: Node, status: str, exit_code: int | None = None,
    error_kind: str = "", result=None, log: str = "", digest: str = "", started_at: datetime | None = None,
) -> Run:
    """Record a run's final state with its result: bytes, or a file streamed into storage.

    A start never reported is recorded first (`digest`, `started_at`: _record_unreported_start).

    A result of at most VANTAGE_RESULT_IN_DATABASE_BYTES is kept in the run's row, in
    the same transaction as its state. A larger one is written to storage before the
    transaction and deleted again if the transaction fails, so neither a result without
    a final state nor an orphan file remains.
    """
    if status not in Run.FINAL_STATUSES:
        raise DomainError(f"{status!r} is not a final state ({', '.join(Run.FINAL_STATUSES)}).", field="status")
    if error_kind not in _ERROR_KINDS:
        raise DomainError(f"Unknown error kind {error_kind!r}.", field="error_kind")
    _check_digest(digest)
    stored = _store_result(run_id, result) if result is not None else None
    try:
        return _run_finish_commit(
            run_id=run_id, node=node, status=status, exit_code=exit_code, error_kind=error_kind,
            stored=stored, log=log, digest=digest, started_at=started_at,
        )
    except BaseException:
        if stored and stored.name:
            default_storage.delete(stored.name)
        raise


_ERROR_KINDS = frozenset(Run.ErrorKind.values)  # .values builds a new list at every use


def _check_digest(digest: str) -> None:
    if digest and not DIGEST_RE.match(digest):
        raise DomainError("The digest must read sha256:<64 hex digits>.", field="digest")


def _record_unreported_start(run: Run, node: Node, *, digest: str, started_at: datetime | None) -> None:
    """A run that ran (`digest`: what it executed) without its start reported, as a quick
    round's: recorded as started, at `started_at` kept between its claim and now, with the
    audit's run.started, as run_start would have. A reported start is left as it was."""
    if run.status != S.CLAIMED or not digest:
        return
    now = timezone.now()
    run.started_at = min(max(started_at or now, run.claimed_at), now)
    run.digest = digest
    audit_record(actor=node, verb="run.started", target=run, details={"digest": digest})


@dataclass(frozen=True)
class StoredResult:
    """Where a result went: `data` for one kept in the row, else the storage `name` of its file."""

    size: int
    sha256: str
    data: bytes | None = None
    name: str = ""


def _too_large() -> TooLarge:
    return TooLarge(f"The result exceeds the limit of {settings.VANTAGE_MAX_RESULT_BYTES} bytes.")


def _store_result(run_id: int, result) -> StoredResult:
    """Keep a small result for the run's row; save a larger one to storage."""
    size = len(result) if isinstance(result, bytes) else getattr(result, "size", None)
    if size is not None and size > settings.VANTAGE_MAX_RESULT_BYTES:
        raise _too_large()
    if size is not None and size <= settings.VANTAGE_RESULT_IN_DATABASE_BYTES:
        data = result if isinstance(result, bytes) else result.read(size + 1)
        if len(data) != size:
            raise DomainError("The result file changed size while it was read.", field="result")
        return StoredResult(size, hashlib.sha256(data).hexdigest(), data=data)
    name = f"results/run-{run_id}"
    if isinstance(result, bytes):
        result = ContentFile(result)  # hashed on its way to storage, as any other file
    if isinstance(result, ReceivedResult):
        # Counted, limited and hashed while it arrived (tasks.uploads); a filesystem
        # storage then moves the temporary file instead of copying it.
        return StoredResult(result.size, result.sha256, name=default_storage.save(name, result))
    hashed = _HashingFile(result)
    saved = default_storage.save(name, hashed)
    return StoredResult(hashed.bytes_read, hashed.sha256.hexdigest(), name=saved)


@transaction.atomic
def _run_finish_commit(*, run_id, node, status, exit_code, error_kind, stored, log, digest, started_at) -> Run:
    run = node_run_for_update(run_id=run_id, node=node)
    if run.is_final:
        raise Conflict(f"The run is already {run.status}.")
    if run.status == S.PENDING and status not in (S.REJECTED, S.FAILED):
        raise Conflict("A pending run must be claimed before it can finish.")
    if run.status != S.PENDING and run.node_id != node.pk:
        raise Conflict("Only the node that claimed the run may finish it.")
    _record_unreported_start(run, node, digest=digest, started_at=started_at)
    run.status = status
    run.exit_code = exit_code
    run.error_kind = error_kind
    run.finished_at = timezone.now()
    if run.node_id is None:
        run.node = node
    # Always assigned: the lock leaves the old value unloaded, and the update writes it.
    run.result_data = stored.data if stored else None
    if stored:
        run.result.name, run.result_size, run.result_sha256 = stored.name, stored.size, stored.sha256
    if log:
        limit = settings.VANTAGE_RUN_LOG_MAX_CHARS
        combined = run.log + log
        run.log_truncated = run.log_truncated or len(combined) > limit
        run.log = combined[-limit:]
    # Only the columns a finish changes; no save(), no signals (core.prepared).
    _finish_update(where={"id": run.pk}, **{f.name: getattr(run, f.attname) for f in _FINISH_FIELDS})
    audit_record(actor=node, verb=f"run.{status}", target=run,
                 details={"exit_code": exit_code, "error_kind": error_kind, "result_size": run.result_size})
    task_events.run_updated(run, run.task)
    return run


_finish_update = PreparedUpdate(
    Run, set=("status", "exit_code", "error_kind", "finished_at", "node", "result", "result_data", "result_size",
              "result_sha256", "log", "log_truncated", "started_at", "digest"),
    where=("id",),
)
_FINISH_FIELDS = [Run._meta.get_field(name) for name in _finish_update.fields]


@transaction.atomic
def algorithm_submit(
    *, actor, name: str, image: str, digest: str, description: str = "", functions: list | None = None
) -> Algorithm:
    """Add an algorithm to the catalogue, awaiting review."""
    if actor is not None and user_scope(actor, Resource.ALGORITHM, Action.CREATE) is None:
        raise NotAllowed("Your roles do not allow submitting algorithms.")
    if not DIGEST_RE.match(digest or ""):
        raise DomainError("The digest must read sha256:<64 hex digits>.", field="digest")
    _validate_functions(functions or [])
    algorithm = Algorithm(
        name=name, image=image, digest=digest, description=description,
        functions=functions or [], submitted_by=actor,
    )
    algorithm.full_clean()
    algorithm.save()
    audit_record(actor=actor, verb="algorithm.submitted", target=algorithm)
    return algorithm


def _validate_functions(functions) -> None:
    if not isinstance(functions, list):
        raise DomainError("Expected a list of functions.", field="functions")
    for i, fn in enumerate(functions):
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise DomainError(f"Function {i}: needs a 'name'.", field="functions")
        if fn.get("kind", "partial") not in ("central", "partial"):
            raise DomainError(f"Function {i}: kind must be 'central' or 'partial'.", field="functions")
        if not isinstance(fn.get("arguments", {}), dict):
            raise DomainError(f"Function {i}: 'arguments' must be a JSON schema object.", field="functions")


def algorithm_review(*, actor, algorithm: Algorithm, status: str, note: str = "", signature_digest: str = "",
                     key_fingerprint: str = "") -> Algorithm:
    """Approve, reject or retire a catalogue entry.

    Approval takes VANTAGE_CATALOGUE_REVIEWERS reviewers other than the submitter, each
    with their own signature of the entry's digest: the server reads it from the image's
    registry and checks it against the reviewer's registered signing keys
    (tasks/signature_check.py; 400 under `signature` saying what is wrong). Each approval
    records the signed payload's digest and the key's fingerprint; the entry turns
    approved with the last one needed. Nodes check the signatures again themselves,
    against the keys their hospital trusts."""
    if actor is not None and user_scope(actor, Resource.ALGORITHM, Action.EDIT) != Scope.GLOBAL:
        raise NotAllowed("Only reviewers with global algorithm rights can review algorithms.")
    allowed = {Algorithm.Status.APPROVED, Algorithm.Status.REJECTED, Algorithm.Status.RETIRED}
    if status not in allowed:
        raise DomainError(f"Review outcome must be one of {', '.join(sorted(allowed))}.", field="status")
    if signature_digest and not DIGEST_RE.match(signature_digest):
        raise DomainError("The signature digest must read sha256:<64 hex digits>.", field="signature_digest")
    if key_fingerprint and not FINGERPRINT_RE.match(key_fingerprint):
        raise DomainError("The key fingerprint is the SHA-256 of the public key: 64 hex digits.",
                          field="key_fingerprint")
    signed = None
    if status == Algorithm.Status.APPROVED and algorithm.status != status:
        # Everything that needs no registry first; the registry is read outside the lock.
        _approval_precheck(actor, algorithm)
        signed = signature_check.reviewer_signature(algorithm=algorithm, reviewer=actor,
                                                    key_fingerprint=key_fingerprint.lower(),
                                                    signature_digest=signature_digest)
    return _algorithm_review_locked(actor, algorithm, status, note, signed)


def _approval_precheck(actor, algorithm: Algorithm) -> None:
    if actor is None or actor.pk == algorithm.submitted_by_id:
        raise DomainError("You submitted this algorithm: a reviewer other than the submitter must approve it.",
                          field="status")
    if algorithm.status == Algorithm.Status.RETIRED:
        raise DomainError("A retired algorithm is not approved again: submit it anew.", field="status")
    if AlgorithmApproval.objects.filter(algorithm=algorithm, reviewer=actor).exists():
        raise Conflict("You approved this algorithm already: another reviewer must approve it.")


@transaction.atomic
def _algorithm_review_locked(actor, algorithm: Algorithm, status: str, note: str, signed) -> Algorithm:
    algorithm = Algorithm.objects.select_for_update().get(pk=algorithm.pk)  # approvals are counted under the lock
    if algorithm.status == status:
        return algorithm
    if status == Algorithm.Status.APPROVED:
        _approval_precheck(actor, algorithm)  # again, under the lock
        return _algorithm_approve(actor, algorithm, note, signed)
    algorithm.status = status
    algorithm.reviewer = actor
    algorithm.reviewed_at = timezone.now()
    algorithm.review_note = note
    algorithm.save(update_fields=["status", "reviewer", "reviewed_at", "review_note"])
    audit_record(actor=actor, verb=f"algorithm.{status}", target=algorithm, details={"note": note})
    return algorithm


def _algorithm_approve(actor, algorithm: Algorithm, note: str, signed) -> Algorithm:
    signature_digest, key_fingerprint = signed.payload_digest, signed.key.fingerprint
    approval, created = AlgorithmApproval.objects.get_or_create(
        algorithm=algorithm, reviewer=actor,
        defaults={"signature_digest": signature_digest, "key_fingerprint": key_fingerprint, "note": note},
    )
    if not created:
        raise Conflict("You approved this algorithm already: another reviewer must approve it.")
    audit_record(actor=actor, verb="algorithm.approval", target=algorithm,
                 details={"signature_digest": signature_digest, "key_fingerprint": key_fingerprint,
                          "key": signed.key.name, "note": note})
    needed = settings.VANTAGE_CATALOGUE_REVIEWERS
    approvals = algorithm.approvals.exclude(reviewer_id=algorithm.submitted_by_id).count()
    if approvals < needed:
        algorithm.approvals_missing = needed - approvals
        return algorithm
    algorithm.status = Algorithm.Status.APPROVED
    algorithm.reviewer = actor
    algorithm.reviewed_at = timezone.now()
    algorithm.review_note = note
    algorithm.save(update_fields=["status", "reviewer", "reviewed_at", "review_note"])
    audit_record(actor=actor, verb="algorithm.approved", target=algorithm, details={"note": note})
    algorithm.approvals_missing = 0
    return algorithm


def runs_time_out_overdue(*, now=None) -> int:
    """End claimed or running runs past their deadline as timed out (their node went silent).

    Each run is its own compare-and-swap, so a node finishing a run at the same moment
    either wins (its result stands) or finds the run already final (409).
    """
    now = now or timezone.now()
    overdue = list(
        Run.objects.filter(status__in=(S.CLAIMED, S.RUNNING), deadline_at__lt=now).values_list("pk", flat=True)
    )
    timed_out = 0
    for run_id in overdue:
        with transaction.atomic():
            won = Run.objects.filter(pk=run_id, status__in=(S.CLAIMED, S.RUNNING), deadline_at__lt=now).update(
                status=S.TIMED_OUT, error_kind=Run.ErrorKind.TIMEOUT, finished_at=now
            )
            if not won:
                continue
            run = Run.objects.select_related("task").get(pk=run_id)
            audit_record(actor=None, verb="run.timed_out", target=run, details={"deadline_at": str(run.deadline_at)})
            task_events.run_kill_requested(run)
            task_events.run_updated(run, run.task)
            timed_out += 1
    return timed_out


def results_purge_expired(*, now=None) -> int:
    """Delete results older than their collaboration's retention period.

    The run keeps its size, hash and audit trail; only the result goes (its row copy, or
    its file). The database row is updated first, a file deleted after commit: a crash
    in between leaves an unreferenced file (harmless, found by size), never a row
    pointing at nothing.
    """
    now = now or timezone.now()
    candidates = (
        Run.objects.filter(task__collaboration__result_retention_days__isnull=False, result_purged_at__isnull=True)
        .filter(~Q(result="") | Q(result_data__isnull=False))
        .select_related("task__collaboration")
        .only("pk", "result", "finished_at", "task__collaboration__result_retention_days")
    )
    purged = 0
    for run in candidates.iterator(chunk_size=500):
        retention = timedelta(days=run.task.collaboration.result_retention_days)
        if run.finished_at is None or run.finished_at + retention > now:
            continue
        name = run.result.name
        with transaction.atomic():
            if not Run.objects.filter(pk=run.pk, result_purged_at__isnull=True).update(
                result="", result_data=None, result_purged_at=now
            ):
                continue
            audit_record(actor=None, verb="run.result_purged", target=run,
                         details={"retention_days": run.task.collaboration.result_retention_days})
            if name:
                transaction.on_commit(lambda name=name: default_storage.delete(name))
        purged += 1
    return purged
