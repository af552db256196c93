from datetime import timedelta

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from accounts.models import AuditEvent
from tasks.jobs import purge_expired_results, time_out_overdue_runs
from tasks.models import Run
from tasks.services import run_claim, run_finish, run_start
from tests.factories import make_task


def test_overdue_runs_time_out_and_the_job_is_idempotent(owner, collab, org_a, org_b, node_a, node_b):
    task = make_task(owner, collab, [org_a, org_b])
    overdue = task.runs.get(organization=org_a)
    fresh = task.runs.get(organization=org_b)
    run_claim(run_id=overdue.pk, node=node_a)
    run_start(run_id=overdue.pk, node=node_a)
    run_claim(run_id=fresh.pk, node=node_b)
    Run.objects.filter(pk=overdue.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))

    assert time_out_overdue_runs.delay().get() == 1
    assert time_out_overdue_runs.delay().get() == 0
    overdue.refresh_from_db()
    fresh.refresh_from_db()
    assert (overdue.status, overdue.error_kind) == (Run.Status.TIMED_OUT, Run.ErrorKind.TIMEOUT)
    assert fresh.status == Run.Status.CLAIMED
    assert AuditEvent.objects.filter(verb="run.timed_out", target_id=str(overdue.pk)).count() == 1


def test_claim_sets_the_deadline_from_settings(owner, collab, org_a, node_a, settings):
    settings.VANTAGE_RUN_DEADLINE_SECONDS = 600
    run = make_task(owner, collab, [org_a]).runs.get()
    before = timezone.now()
    claimed = run_claim(run_id=run.pk, node=node_a)
    assert timedelta(seconds=599) < claimed.deadline_at - before < timedelta(seconds=601)


def test_results_past_retention_are_purged_but_metadata_stays(
    owner, collab, org_a, org_b, node_a, node_b, django_capture_on_commit_callbacks, settings
):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 0  # files; results kept in the row: test_result_storage.py
    collab.result_retention_days = 30
    collab.save()
    task = make_task(owner, collab, [org_a, org_b])
    for run, node in ((task.runs.get(organization=org_a), node_a), (task.runs.get(organization=org_b), node_b)):
        run_claim(run_id=run.pk, node=node)
        run_finish(run_id=run.pk, node=node, status=Run.Status.COMPLETED, exit_code=0,
                   result=ContentFile(b'{"n": 10}', name="output"))
    old = task.runs.get(organization=org_a)
    recent = task.runs.get(organization=org_b)
    Run.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=31))
    old_name = old.result.name
    assert default_storage.exists(old_name)

    with django_capture_on_commit_callbacks(execute=True):
        assert purge_expired_results.delay().get() == 1
    assert purge_expired_results.delay().get() == 0

    old.refresh_from_db()
    recent.refresh_from_db()
    assert not old.result and old.result_purged_at is not None
    assert old.result_size == 9 and len(old.result_sha256) == 64
    assert not default_storage.exists(old_name)
    assert recent.result and default_storage.exists(recent.result.name)
    default_storage.delete(recent.result.name)


def test_collaborations_without_retention_keep_results(owner, collab, org_a, node_a, settings):
    settings.VANTAGE_RESULT_IN_DATABASE_BYTES = 0
    run = make_task(owner, collab, [org_a]).runs.get()
    run_claim(run_id=run.pk, node=node_a)
    run_finish(run_id=run.pk, node=node_a, status=Run.Status.COMPLETED, exit_code=0,
               result=ContentFile(b"{}", name="output"))
    Run.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=3650))
    assert purge_expired_results.delay().get() == 0
    run.refresh_from_db()
    default_storage.delete(run.result.name)
