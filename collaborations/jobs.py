"""Celery housekeeping jobs for nodes: idempotent, each calls one service."""

from celery import shared_task

from collaborations.services import nodes_mark_offline


@shared_task(name="collaborations.jobs.mark_offline_nodes")
def mark_offline_nodes() -> int:
    return nodes_mark_offline()
