"""Server-side set-up for the live tests, run inside the live server's own database.

The live server is a separate process with its own database, so tests cannot
use pytest-django's test database to seed it. They run this module instead:
`python -m tests.nodeagent.seed <op> '<json kwargs>'`, with the live server's
DATABASE_URL, and read one JSON object from stdout. It goes through the services, as
an administrator would.
"""

import json
import sys


def world(n_orgs: int = 2, prefix: str = "") -> dict:
    """Organisations, one collaboration, a researcher in the first organisation, a node each."""
    from tests import factories

    orgs = [factories.make_organization(f"{prefix}Hospital {i}") for i in range(n_orgs)]
    collab = factories.make_collaboration(orgs, name=f"{prefix}Study")
    user = factories.make_user(orgs[0], username=f"{prefix}researcher")
    nodes = []
    for org in orgs:
        node, key = factories.make_node(org, collab, name=f"{prefix}node-{org.pk}")
        nodes.append({"id": node.pk, "organization": org.pk, "api_key": key})
    return {
        "organizations": [o.pk for o in orgs], "collaboration": collab.pk, "nodes": nodes,
        "user": {"id": user.pk, "username": user.username, "password": factories.PASSWORD},
    }


def worlds(count: int, prefix: str) -> list[dict]:
    """Several independent worlds at once: one process start instead of `count`."""
    return [world(prefix=f"{prefix}{i}-") for i in range(count)]


def migrate_and_worlds(count: int, prefix: str) -> list[dict]:
    """Create the schema, then the first worlds: one process start for both."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return worlds(count, prefix)


def catalogue(image: str, digest: str, statuses: list[str], organization: int) -> dict:
    """A catalogue entry submitted by one user and reviewed by another (root), taken through
    `statuses` in turn (e.g. ["approved", "retired"]): approval is marked in the database
    (the reviewer's signature check on approval is tested in tests/tasks/test_catalogue.py),
    the other outcomes go through the service."""
    from collaborations.models import Organization
    from tasks.services import algorithm_review, algorithm_submit
    from tests import factories

    org = Organization.objects.get(pk=organization)
    submitter = factories.make_user(org, roles=("root",), username=f"dev-{digest[7:19]}")
    reviewer = factories.make_user(org, roles=("root",), username=f"reviewer-{digest[7:19]}")
    algorithm = algorithm_submit(actor=submitter, name="signed probe", image=image, digest=digest)
    for status in statuses:
        if status == "approved":
            algorithm = factories.approved_algorithm(algorithm, reviewer)
        else:
            algorithm = algorithm_review(actor=reviewer, algorithm=algorithm, status=status)
    return {"id": algorithm.pk, "status": algorithm.status}


OPS = {"world": world, "worlds": worlds, "migrate_and_worlds": migrate_and_worlds, "catalogue": catalogue}


def main() -> None:
    import django

    django.setup()
    op, kwargs = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
    print(json.dumps({"result": OPS[op](**kwargs)}))


if __name__ == "__main__":
    main()
