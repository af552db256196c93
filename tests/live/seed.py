"""Seed a live server's database, run in its environment by `manage.py shell -c`.

Org A (two nodes, for claim races) and org B (one node) collaborate; `owner` is a
researcher of org A. Prints one line `SEED <json>` with ids and access tokens, signed
with the server's SECRET_KEY, so the tests need no login endpoint, and the nodes' API
keys, for tests of the node agent's own client.
"""

import json


from collaborations.authentication import node_access_token
from tests import factories


def main() -> None:
    org_a = factories.make_organization("Live Hospital A")
    org_b = factories.make_organization("Live Hospital B")
    collab = factories.make_collaboration([org_a, org_b], name="Live collaboration")
    owner = factories.make_user(org_a, username="live-owner")
    factories.make_user(org_a, username="live-guarded")  # sets up a second factor in the portal's browser test
    factories.make_user(org_a, username="live-logouts")  # logs out everywhere (test_revocation_live): not the owner
    made = {
        "a1": factories.make_node(org_a, collab, name="live-node-a1"),
        "a2": factories.make_node(org_a, collab, name="live-node-a2"),
        "b": factories.make_node(org_b, collab, name="live-node-b"),
    }
    seed = {
        "collaboration": collab.pk,
        "org_a": org_a.pk,
        "org_b": org_b.pk,
        "owner_token": factories.access_token(owner),
        "nodes": {key: {"id": node.pk, "token": str(node_access_token(node)), "api_key": api_key}
                  for key, (node, api_key) in made.items()},
    }
    print("SEED " + json.dumps(seed))
