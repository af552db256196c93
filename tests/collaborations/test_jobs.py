from datetime import timedelta

from django.utils import timezone

from collaborations.jobs import mark_offline_nodes
from collaborations.models import Node
from collaborations.services import node_heartbeat


def test_nodes_silent_past_the_limit_go_offline_once(node_a, node_b, settings):
    settings.VANTAGE_NODE_OFFLINE_AFTER_SECONDS = 90
    node_heartbeat(node_id=node_a.pk)
    node_heartbeat(node_id=node_b.pk)
    Node.objects.filter(pk=node_a.pk).update(last_seen_at=timezone.now() - timedelta(seconds=91))

    assert mark_offline_nodes.delay().get() == 1
    assert mark_offline_nodes.delay().get() == 0
    statuses = dict(Node.objects.values_list("pk", "status"))
    assert statuses == {node_a.pk: Node.Status.OFFLINE, node_b.pk: Node.Status.ONLINE}


def test_a_heartbeat_brings_an_offline_node_back(node_a):
    node_heartbeat(node_id=node_a.pk)
    Node.objects.filter(pk=node_a.pk).update(status=Node.Status.OFFLINE)
    node_heartbeat(node_id=node_a.pk)
    assert Node.objects.get(pk=node_a.pk).status == Node.Status.ONLINE
