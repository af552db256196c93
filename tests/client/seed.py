"""Seed for the client tests, run in the live server's environment by `manage.py shell -c`.

Two hospitals share a plain and an encrypted collaboration. `researcher` (hospital 1)
is also its organisation admin, so it may publish hospital 1's public key;
`admin2` publishes hospital 2's; `client-guarded` logs in with a second factor. Each hospital has a node in each collaboration.
Prints one line `CLIENTSEED <json>` with ids, usernames and node tokens.
"""

import json

from accounts.authentication import node_access_token
from tests import factories


def main() -> None:
    org_1 = factories.make_organization("Client Hospital 1")
    org_2 = factories.make_organization("Client Hospital 2")
    plain = factories.make_collaboration([org_1, org_2], name="Client plain study")
    sealed = factories.make_collaboration([org_1, org_2], name="Client sealed study", encrypted=True)
    researcher = factories.make_user(org_1, roles=("researcher", "organization-admin"), username="client-researcher")
    admin_2 = factories.make_user(org_2, roles=("organization-admin",), username="client-admin2")
    guarded = factories.make_user(org_1, username="client-guarded")
    guarded_secret = factories.enrol_second_factor(guarded)
    nodes = {}
    for label, collab in (("plain", plain), ("sealed", sealed)):
        for org in (org_1, org_2):
            node, _key = factories.make_node(org, collab, name=f"client-{label}-{org.pk}")
            nodes[f"{label}-{org.pk}"] = str(node_access_token(node))
    print("CLIENTSEED " + json.dumps({
        "org_1": org_1.pk, "org_2": org_2.pk, "plain": plain.pk, "sealed": sealed.pk,
        "researcher": researcher.username, "admin_2": admin_2.username, "password": factories.PASSWORD,
        "node_tokens": nodes, "guarded": guarded.username, "guarded_secret": guarded_secret,
    }))
