"""Seed for the client tests, run in the live server's environment by `manage.py shell -c`.

Two hospitals share a plain and an encrypted collaboration. `researcher` (hospital 1)
is also its organisation admin, so it may publish hospital 1's public key;
`admin2` publishes hospital 2's; `client-guarded` logs in with a second factor. Each hospital has a node in each collaboration.
Prints one line `CLIENTSEED <json>` with ids, usernames and node tokens.
"""

import json

from collaborations.authentication import node_access_token
from tasks.services import algorithm_submit
from tests import factories

# A catalogue entry for `vantage tasks create --algorithm`: its central method's arguments
# have a JSON schema, which the command line types --arg values by and checks.
SURVIVAL_FUNCTIONS = [
    {"name": "cox", "kind": "central", "description": "Cox model over all sites.",
     "arguments": {"type": "object", "required": ["duration", "event", "covariates"], "additionalProperties": False,
                   "properties": {"duration": {"type": "string"}, "event": {"type": "string"},
                                  "covariates": {"type": "array", "items": {"type": "string"}},
                                  "alpha": {"type": "number"}, "max_iterations": {"type": "integer"}}}},
    {"name": "cox_site_terms", "kind": "partial", "arguments": {"type": "object"}},
]


def main() -> None:
    org_1 = factories.make_organization("Client Hospital 1")
    org_2 = factories.make_organization("Client Hospital 2")
    plain = factories.make_collaboration([org_1, org_2], name="Client plain study")
    sealed = factories.make_collaboration([org_1, org_2], name="Client sealed study", encrypted=True)
    researcher = factories.make_user(org_1, roles=("researcher", "organization-admin"), username="client-researcher")
    admin_2 = factories.make_user(org_2, roles=("organization-admin",), username="client-admin2")
    # For publish-key's advice: a plain researcher, and an account of no organisation.
    factories.make_user(org_2, roles=("researcher",), username="client-plain2")
    factories.make_user(None, roles=("researcher",), username="client-nobody")
    factories.make_user(None, roles=(), username="client-noroles")
    algorithm = algorithm_submit(actor=None, name="client-cox", image="127.0.0.1:5000/vantage/alg-cox",
                                 digest="sha256:" + "c" * 64, functions=SURVIVAL_FUNCTIONS)
    # Four eyes: a reviewer other than the submitter approved it (marked in the database: the
    # reviewer's signature check is tested in tests/tasks/test_catalogue.py).
    reviewer = factories.make_user(org_2, roles=("root",), username="client-reviewer")
    factories.approved_algorithm(algorithm, reviewer)
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
        "node_tokens": nodes, "algorithm": algorithm.pk, "guarded": guarded.username, "guarded_secret": guarded_secret,
    }))
