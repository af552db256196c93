"""The admin as a whole: who gets in, every page loads, no changelist grows its queries with rows.

Behaviour of each model's admin is tested under tests/<app>/test_admin.py.
"""

import itertools

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import AuditChainHead, AuditEvent, Role, Rule, User
from accounts.services import role_create
from collaborations.models import Collaboration, Node, Organization, Study
from collaborations.services import study_create
from tasks.models import Algorithm, Run, Task
from tasks.services import algorithm_submit
from tests import factories

_seq = itertools.count(1)



def admin_url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


VANTAGE_MODELS = [User, Role, Rule, AuditEvent, Organization, Collaboration, Study, Node, Algorithm, Task, Run]
ADDABLE = [User, Role, Organization, Collaboration, Study, Node, Algorithm]


def test_every_vantage_model_is_registered_but_the_chain_head_and_django_groups():
    for model in VANTAGE_MODELS:
        assert admin.site.is_registered(model), model
    assert not admin.site.is_registered(AuditChainHead)
    assert not admin.site.is_registered(Group)


def test_anonymous_visitor_is_sent_to_login(client, db):
    response = client.get(admin_url(Task, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_user_without_staff_rights_is_sent_to_login(client, owner):
    client.force_login(owner)
    for url in (reverse("admin:index"), admin_url(Node, "changelist"), admin_url(Node, "add")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_admin_index_lists_the_vantage_apps(staff):
    response = staff.get(reverse("admin:index"))
    assert response.status_code == 200
    for model in VANTAGE_MODELS:
        assert admin_url(model, "changelist") in response.content.decode()


@pytest.fixture
def one_of_each(root, owner, collab, org_a, org_b, node_a, node_b):
    """At least one row of every model, so change pages can be opened too."""
    study_create(actor=None, collaboration=collab, name="Study 1", organizations=[org_a])
    algorithm_submit(actor=owner, name="cox", image="127.0.0.1:5000/cox", digest="sha256:" + "a" * 64)
    factories.make_task(owner, collab, [org_a, org_b])


@pytest.mark.parametrize("model", VANTAGE_MODELS, ids=lambda m: m.__name__)
def test_changelist_and_change_page_load(staff, one_of_each, model):
    assert staff.get(admin_url(model, "changelist")).status_code == 200
    obj = model.objects.order_by("pk").first()
    assert staff.get(admin_url(model, "change", obj.pk)).status_code == 200


@pytest.mark.parametrize("model", ADDABLE, ids=lambda m: m.__name__)
def test_add_page_loads(staff, model):
    assert staff.get(admin_url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", [Task, Run, AuditEvent, Rule], ids=lambda m: m.__name__)
def test_records_written_elsewhere_cannot_be_added(staff, model):
    assert staff.get(admin_url(model, "add")).status_code == 403


# --- Query counts: each changelist costs the same whatever the number of rows ---------


def add_organizations(n, ctx):
    for _ in range(n):
        factories.make_organization()


def add_collaborations(n, ctx):
    for _ in range(n):
        factories.make_collaboration([ctx["org_a"], ctx["org_b"]])


def add_studies(n, ctx):
    for _ in range(n):
        study_create(actor=None, collaboration=ctx["collab"], name=f"Study {next(_seq)}",
                     organizations=[ctx["org_a"], ctx["org_b"]])


def add_nodes(n, ctx):
    for _ in range(n):
        factories.make_node(ctx["org_a"], ctx["collab"])


def add_users(n, ctx):
    for _ in range(n):
        factories.make_user(ctx["org_a"], roles=("researcher", "viewer"))


def add_roles(n, ctx):
    rules = list(Rule.objects.all()[:3])
    for _ in range(n):
        role_create(actor=None, name=f"role-{next(_seq)}", rules=rules)


def add_rules(n, ctx):
    """No service creates rules: the built-in roles bring more than 20, and a rule row has no relation to follow."""


def add_audit_events(n, ctx):
    add_organizations(n, ctx)


def add_algorithms(n, ctx):
    for i in range(n):
        algorithm_submit(actor=ctx["owner"], name=f"algo {next(_seq)}", image=f"127.0.0.1:5000/a{next(_seq)}",
                         digest="sha256:" + f"{next(_seq):064x}")


def add_tasks(n, ctx):
    for _ in range(n):
        factories.make_task(ctx["owner"], ctx["collab"], [ctx["org_a"], ctx["org_b"]])


# Queries of every changelist: session, user, then the list's own (counts, rows,
# filter choices, prefetches). Pinned so that an N+1 shows up as a changed number.
CHANGELISTS = [
    (Organization, add_organizations, 6),
    (Collaboration, add_collaborations, 5),
    (Study, add_studies, 6),
    (Node, add_nodes, 7),
    (User, add_users, 8),
    (Role, add_roles, 5),
    (Rule, add_rules, 5),
    (AuditEvent, add_audit_events, 8),
    (Algorithm, add_algorithms, 5),
    (Task, add_tasks, 5),
    (Run, add_tasks, 4),
]


def changelist_queries(client, model) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("model, add_rows, expected", CHANGELISTS, ids=[c[0].__name__ for c in CHANGELISTS])
def test_changelist_query_count_does_not_grow_with_rows(staff, owner, collab, org_a, org_b, model, add_rows,
                                                        expected):
    ctx = {"owner": owner, "collab": collab, "org_a": org_a, "org_b": org_b}
    add_rows(21, ctx)
    assert model.objects.count() >= 20
    with_21 = changelist_queries(staff, model)
    add_rows(5, ctx)
    with_26 = changelist_queries(staff, model)
    assert (with_21, with_26) == (expected, expected)
