"""Celery housekeeping jobs for runs: idempotent, each calls one service."""

from celery import shared_task

from tasks.services import results_purge_expired, runs_time_out_overdue


@shared_task(name="tasks.jobs.time_out_overdue_runs")
def time_out_overdue_runs() -> int:
    return runs_time_out_overdue()


@shared_task(name="tasks.jobs.purge_expired_results")
def purge_expired_results() -> int:
    return results_purge_expired()
