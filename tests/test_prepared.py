"""Prepared queries give what the plain ORM gives, for any argument values and shapes."""

import pytest
from django.db.models import Q

from collaborations.models import Organization
from collaborations.selectors import collaboration_list, collaboration_visible
from tasks.models import Run
from tasks.services import run_claim
from tests.factories import make_task
from vantage.prepared import PreparedInsert, PreparedQuery, PreparedUpdate

run_with_task = PreparedQuery(
    lambda *, run_id, org_id: Run.objects.select_related("task__created_by", "task__collaboration").filter(
        pk=run_id, organization_id=org_id
    ),
    "run_id", "org_id",
)

organizations_named = PreparedQuery(
    lambda descending, *, org_id, name: Organization.objects.filter(Q(pk=org_id) | Q(name=name))
    .order_by("-name" if descending else "name")
    .values("id", "name", "country"),
    "org_id", "name",
)


def _same_instance(a, b):
    assert type(a) is type(b)
    assert a.__dict__.keys() - {"_state"} == b.__dict__.keys() - {"_state"}
    for key in a.__dict__.keys() - {"_state"}:
        assert getattr(a, key) == getattr(b, key), key
    assert a._state.adding is b._state.adding is False
    assert a._state.db == b._state.db


def test_models_match_the_orm_with_related_objects_and_converted_values(owner, collab, org_a, org_b, node_a):
    tasks = [make_task(owner, collab, [org_a, org_b], name=f"t{i}") for i in range(3)]
    run = tasks[1].runs.get(organization=org_a)
    run_claim(run_id=run.pk, node=node_a)  # a datetime and a foreign key set, for the converters
    for candidate in Run.objects.all():
        for org in (org_a, org_b):
            expected = list(
                Run.objects.select_related("task__created_by", "task__collaboration").filter(
                    pk=candidate.pk, organization_id=org.pk
                )
            )
            got = run_with_task.models(run_id=candidate.pk, org_id=org.pk)
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                _same_instance(a, b)
                _same_instance(a.task, b.task)
                _same_instance(a.task.created_by, b.task.created_by)
                _same_instance(a.task.collaboration, b.task.collaboration)
    claimed = run_with_task.first(run_id=run.pk, org_id=org_a.pk)
    assert claimed.claimed_at is not None and claimed.claimed_at.tzinfo is not None
    assert claimed.input == Run.objects.get(pk=run.pk).input
    assert run_with_task.first(run_id=run.pk, org_id=org_b.pk) is None


def test_values_match_the_orm_for_each_shape(org_a, org_b, org_c):
    for descending in (False, True):
        for org in (org_a, org_b):
            for name in (org_c.name, "nobody", org.name):
                expected = list(
                    Organization.objects.filter(Q(pk=org.pk) | Q(name=name))
                    .order_by("-name" if descending else "name")
                    .values("id", "name", "country")
                )
                assert organizations_named.values(descending, org_id=org.pk, name=name) == expected


def test_wrong_arguments_are_refused(org_a):
    with pytest.raises(TypeError, match="takes"):
        run_with_task.models(run_id=1)
    with pytest.raises(TypeError, match="use .values"):
        organizations_named.models(False, org_id=org_a.pk, name="x")
    with pytest.raises(TypeError, match="use .models"):
        run_with_task.values(run_id=1, org_id=org_a.pk)


def test_an_argument_missing_from_the_sql_is_refused(db):
    unused = PreparedQuery(lambda *, org_id: Organization.objects.all(), "org_id")
    with pytest.raises(ValueError, match="org_id"):
        unused.models(org_id=1)


def test_save_new_gives_each_row_its_id_and_prepares_values_as_save_does(owner, collab, org_a, org_b):
    task = make_task(owner, collab, [org_a])  # a task for the runs to belong to
    task.runs.all().delete()
    runs = [Run(task=task, organization_id=org.pk, input=b"payload-%d" % org.pk) for org in (org_a, org_b)]
    columns = tuple(f.name for f in Run._meta.concrete_fields if not f.primary_key)
    PreparedInsert(Run, fields=columns).save_new(*runs)
    for run in runs:
        assert run.pk is not None and not run._state.adding
        stored = Run.objects.get(pk=run.pk)
        assert (stored.task_id, stored.organization_id, bytes(stored.input)) == (task.pk, run.organization_id,
                                                                               bytes(run.input))
        assert stored.created_at == run.created_at is not None  # auto_now_add filled in by pre_save
    with pytest.raises(ValueError, match="new instances"):
        PreparedInsert(Run, fields=columns).save_new(runs[0])


def test_update_changes_only_rows_matching_every_condition(owner, collab, org_a, node_a):
    task = make_task(owner, collab, [org_a])
    run = task.runs.get()
    swap = PreparedUpdate(Run, set=("status", "node"), where=("id", "status"))
    assert swap(where={"id": run.pk, "status": Run.Status.CLAIMED}, status=Run.Status.RUNNING, node=node_a) == 0
    assert swap(where={"id": run.pk, "status": Run.Status.PENDING}, status=Run.Status.CLAIMED, node=node_a) == 1
    run.refresh_from_db()
    assert (run.status, run.node_id) == (Run.Status.CLAIMED, node_a.pk)
    with pytest.raises(TypeError, match="exactly"):
        swap(where={"id": run.pk}, status=Run.Status.RUNNING, node=node_a)


def test_visible_collaboration_agrees_with_the_collaboration_list(owner, outsider, root, collab, other_collab):
    for user in (owner, outsider, root):
        for collaboration in (collab, other_collab):
            expected = collaboration_list(user=user).filter(pk=collaboration.pk).first()
            assert collaboration_visible(user=user, pk=collaboration.pk) == expected
        assert collaboration_visible(user=user, pk=10**9) is None


@pytest.mark.parametrize("logged", [False, True], ids=["driver-sql", "django-path"])
def test_statements_agree_and_translate_errors_whether_or_not_queries_are_logged(logged, org_a, org_b):
    from django.db import IntegrityError, connection, transaction
    from django.utils import timezone

    insert = PreparedInsert(Organization, fields=("id", "name", "country", "domain", "public_key",
                                                   "require_second_factor", "created_at"))
    update = PreparedUpdate(Organization, set=("country",), where=("name",))
    lookup = PreparedQuery(lambda *, name: Organization.objects.filter(name=name).values("id", "country"), "name")
    connection.force_debug_cursor = logged
    try:
        insert(id=9001, name="with %s and %% in it", country="NL", domain="", public_key="", require_second_factor=False,
               created_at=timezone.now())
        assert update(where={"name": "with %s and %% in it"}, country="BE") == 1
        assert lookup.values(name="with %s and %% in it") == [{"id": 9001, "country": "BE"}]
        with pytest.raises(IntegrityError), transaction.atomic():  # the driver's error, as Django's
            insert(id=9001, name="another", country="NL", domain="", public_key="", require_second_factor=False,
               created_at=timezone.now())
    finally:
        connection.force_debug_cursor = False
    assert Organization.objects.get(pk=9001).country == "BE"
