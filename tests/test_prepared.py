"""Prepared queries give what the plain ORM gives, for any argument values and shapes, and
the Django internals they read are still there (core.prepared lists them)."""

import inspect

import pytest
from django.db.models import Q

from collaborations.models import Organization
from collaborations.selectors import collaboration_list, collaboration_visible
from core.prepared import PreparedInsert, PreparedQuery, PreparedUpdate
from tasks.models import Run, Task
from tasks.services import run_claim
from tests.factories import make_task

run_with_task = PreparedQuery(
    lambda *, run_id, org_id: Run.objects.select_related("task__created_by", "task__collaboration").filter(
        pk=run_id, organization_id=org_id
    ),
    "run_id", "org_id",
)

organizations_named = PreparedQuery(
    lambda descending, *, org_id, name: Organization.objects.filter(Q(pk=org_id) | Q(name=name))
    .order_by("-name" if descending else "name")
    .only("id", "name", "country"),
    "org_id", "name",
)


def _same_instance(a, b):
    assert type(a) is type(b)
    assert a.get_deferred_fields() == b.get_deferred_fields()
    for field in a._meta.concrete_fields:
        if field.attname not in a.get_deferred_fields():
            assert getattr(a, field.attname) == getattr(b, field.attname), field.attname


def test_the_django_internals_it_reads_are_there(owner, collab, org_a):
    """Fails naming the internal that a Django upgrade moved, instead of a wrong row later."""
    from django.db import connection
    from django.db.models import query as query_module

    from core import prepared

    make_task(owner, collab, [org_a])
    compiler = Run.objects.select_related("task").filter(pk=1).query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    assert isinstance(sql, str) and list(params) == [1]
    for name in ("select", "col_count", "klass_info", "annotation_col_map", "has_extra_select"):
        assert hasattr(compiler, name), f"SQLCompiler.{name} is gone: core.prepared reads it"
    assert {"model", "select_fields", "related_klass_infos"} <= set(compiler.klass_info), compiler.klass_info
    assert callable(getattr(compiler, "get_converters", None)), "SQLCompiler.get_converters is gone"
    assert callable(getattr(query_module, "get_related_populators", None)), "get_related_populators is gone"
    parameters = list(inspect.signature(query_module.get_related_populators).parameters)
    assert parameters in (["klass_info", "select", "db"], ["klass_info", "select", "db", "fetch_mode"]), parameters
    plain = Run(task_id=1, organization_id=org_a.pk)
    assert plain._state.adding is True and plain._state.db is None, "Model._state changed"
    # And the module still works end to end on this database.
    assert prepared.PreparedQuery(lambda *, pk: Organization.objects.filter(pk=pk), "pk").first(pk=org_a.pk) == org_a


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


def test_each_shape_matches_the_orm(org_a, org_b, org_c):
    for descending in (False, True):
        for org in (org_a, org_b):
            for name in (org_c.name, "nobody", org.name):
                expected = list(
                    Organization.objects.filter(Q(pk=org.pk) | Q(name=name))
                    .order_by("-name" if descending else "name")
                    .only("id", "name", "country")
                )
                got = organizations_named.models(descending, org_id=org.pk, name=name)
                assert [o.pk for o in got] == [o.pk for o in expected]
                for a, b in zip(got, expected):
                    _same_instance(a, b)


def test_an_annotation_comes_back_as_the_orms(owner, collab, org_a, org_b, node_a):
    from tasks.selectors import task_status, with_status

    task = make_task(owner, collab, [org_a, org_b])
    run_claim(run_id=task.runs.get(organization=org_a).pk, node=node_a)
    assert task_status(task_id=task.pk) == with_status(Task.objects.filter(pk=task.pk)).get().status == "active"
    assert task_status(task_id=10**9) is None


def test_wrong_arguments_are_refused(org_a):
    with pytest.raises(TypeError, match="takes"):
        run_with_task.models(run_id=1)


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
        assert run.pk is not None
        run.save()  # an update of the inserted row, not a second insert
        stored = Run.objects.get(pk=run.pk)
        assert (stored.task_id, stored.organization_id, bytes(stored.input)) == (task.pk, run.organization_id,
                                                                               bytes(run.input))
        assert stored.created_at == run.created_at is not None  # auto_now_add filled in by pre_save
    assert Run.objects.filter(task=task).count() == 2
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


@pytest.mark.parametrize("logged", [False, True], ids=["unlogged", "logged"])
def test_statements_agree_and_translate_errors_whether_or_not_queries_are_logged(logged, org_a, org_b):
    from django.db import IntegrityError, connection, transaction
    from django.utils import timezone

    insert = PreparedInsert(Organization, fields=("id", "name", "country", "domain", "public_key",
                                                   "require_second_factor", "created_at"))
    update = PreparedUpdate(Organization, set=("country",), where=("name",))
    lookup = PreparedQuery(lambda *, name: Organization.objects.filter(name=name).only("id", "country"), "name")
    connection.force_debug_cursor = logged
    try:
        insert(id=9001, name="with %s and %% in it", country="NL", domain="", public_key="", require_second_factor=False,
               created_at=timezone.now())
        assert update(where={"name": "with %s and %% in it"}, country="BE") == 1
        assert [(o.pk, o.country) for o in lookup.models(name="with %s and %% in it")] == [(9001, "BE")]
        with pytest.raises(IntegrityError), transaction.atomic():  # the driver's error, as Django's
            insert(id=9001, name="another", country="NL", domain="", public_key="", require_second_factor=False,
               created_at=timezone.now())
    finally:
        connection.force_debug_cursor = False
    assert Organization.objects.get(pk=9001).country == "BE"
