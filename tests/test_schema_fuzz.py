"""The whole OpenAPI schema fuzzed with schemathesis, as a researcher, a node and an admin.

Every operation of /api/schema/ gets a fixed number of generated requests (hypothesis,
derandomized: the same requests on every run), sent in-process through Django's WSGI
handler with each persona's bearer token, against the shared personas and a task with
runs. Each answer must not be a 5xx, must have the content type the schema declares,
and must match the schema's response body for its status. Status codes the schema does
not list (a 400 or 404 that drf-spectacular leaves out) are not failures here.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from schemathesis.checks import not_a_server_error

from collaborations.authentication import node_access_token
from tests import factories

EXAMPLES = 10  # per operation; about a minute of CPU for the whole schema (3-4 min wall on a loaded 2-core machine)


@pytest.fixture
def api_schema(db):
    # Django's WSGI handler closes the database connection at the end of each request when
    # it is inside a transaction, as the test's is: on PostgreSQL that would end the test's
    # transaction. Django's own test client keeps it open the same way, for the same reason.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def tokens(owner, member, root, node_a, node_b, collab, org_a, org_b):
    factories.make_task(owner, collab, [org_a, org_b])
    return {
        "researcher": factories.access_token(owner),
        "admin": factories.access_token(root),
        "node": str(node_access_token(node_a)),
    }


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_no_schema_violations(case, tokens):
    # Each generated request is sent as each persona: one generation, three callers.
    for persona in ("researcher", "node", "admin"):
        case.call_and_validate(
            headers={"Authorization": f"Bearer {tokens[persona]}"},
            checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
        )
