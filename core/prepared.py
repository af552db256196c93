"""ORM queries and writes of a fixed shape whose SQL is built once, not once per request.

The one compiled-query mechanism of the project, kept because bench/api.py needs it for
the ≥10× goal on the node's claim, start and finish and on task creation
(bench/README.md, "Consolidation"). Building a queryset's SQL (filters, joins,
select_related, ordering) costs 0.3-1 ms of CPU each time, several times what running
it costs. A prepared query is built once per database and shape, with marker values
where its arguments go; every later call runs that SQL with the arguments bound in the
markers' places.

Rows come back as the ORM would give them: model instances with their select_related
objects and annotations, with the database's converters applied (dates, JSON, booleans).

Private or undocumented Django internals this module touches (Django 5.2), each checked
by tests/test_prepared.py::test_the_django_internals_it_reads_are_there, which fails
naming the one that changed:
- `QuerySet.query.get_compiler()` and the compiler's `as_sql()`, `select`, `col_count`,
  `klass_info`, `annotation_col_map`, `has_extra_select`, `get_converters()`: what
  Django's own ModelIterable reads;
- `django.db.models.query.get_related_populators`: fills select_related objects (with
  the queryset's `_fetch_mode` on Django 6.1 and later, which added that parameter);
- `Model._state.adding` and `_state.db` (documented in the model instance reference):
  set on instances inserted by `PreparedInsert.save_new`, as save() sets them.

PreparedUpdate and PreparedInsert write without save() and without model signals; their
call sites say so.

Only plain values can be arguments (ints and strings compared with =, a single-value
IN): anything that changes the SQL itself (a list's length, LIMIT, which filter
applies) is part of the shape, so it goes in `shape`, and each shape is built once.
"""

import inspect
import threading
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

# Far from any id or value a real query uses; one per argument.
_MARKER_BASE = -7_300_000_001


class _Plan:
    __slots__ = ("sql", "params", "slots", "compiler", "converters", "model", "model_columns", "init_list",
                 "populators", "annotations")

    def __init__(self, queryset: QuerySet, markers: dict[str, Any], connection):
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        params = list(params)
        slots = {}
        for name, marker in markers.items():
            # A text column gets the marker as a string: the ORM prepares values by field.
            where = [i for i, p in enumerate(params) if type(p) in (int, str) and p in (marker, str(marker))]
            if not where:
                raise ValueError(f"prepared query: argument {name!r} is not a bound parameter of its SQL")
            slots[name] = where
        self.sql, self.params, self.slots, self.compiler = sql, params, slots, compiler
        fields = [s[0] for s in compiler.select[: compiler.col_count]]
        # Converter functions read no per-connection state but the database's time zone,
        # which every connection to one alias shares: any thread's connection may apply them.
        self.converters = compiler.get_converters(fields)
        klass_info = compiler.klass_info
        populator_arguments = [klass_info, compiler.select, connection.alias]
        if "fetch_mode" in inspect.signature(get_related_populators).parameters:  # Django 6.1 and later
            populator_arguments.append(queryset._fetch_mode)
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.model = klass_info["model"]
        self.model_columns = (start, end)
        self.init_list = [f[0].target.attname for f in compiler.select[start:end]]
        self.populators = get_related_populators(*populator_arguments)
        self.annotations = dict(compiler.annotation_col_map or {})

    def rows(self, arguments: dict[str, Any], connection) -> list:
        params = list(self.params)
        for name, positions in self.slots.items():
            for i in positions:
                params[i] = arguments[name]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.compiler.has_extra_select:  # ordering columns the rows do not include
            rows = [row[: self.compiler.col_count] for row in rows]
        if self.converters:
            rows = [_convert(row, self.converters, connection) for row in rows]
        return rows


def _convert(row, converters, connection) -> tuple:
    row = list(row)
    for pos, (convs, expression) in converters.items():
        value = row[pos]
        for converter in convs:
            value = converter(value, expression, connection)
        row[pos] = value
    return tuple(row)


class PreparedQuery:
    """`build(*shape, **markers)` returns the queryset; each argument name is a keyword.

        claim_lookup = PreparedQuery(
            lambda *, run_id, org_id: Run.objects.select_related("task").filter(pk=run_id, organization_id=org_id),
            "run_id", "org_id",
        )
        run = claim_lookup.first(run_id=5, org_id=2)
    """

    def __init__(self, build: Callable[..., QuerySet], *arguments: str, using: str = DEFAULT_DB_ALIAS):
        self._build = build
        self._arguments = arguments
        self._using = using
        self._plans: dict[tuple, _Plan] = {}
        self._lock = threading.Lock()

    def _plan(self, shape: tuple, connection) -> _Plan:
        key = (connection.alias, connection.vendor, shape)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = self._plans.get(key)
                if plan is None:
                    markers = {name: _MARKER_BASE - i for i, name in enumerate(self._arguments)}
                    queryset = self._build(*shape, **markers)
                    plan = self._plans[key] = _Plan(queryset, markers, connection)
        return plan

    def _check(self, arguments: dict) -> None:
        if set(arguments) != set(self._arguments):
            raise TypeError(f"prepared query takes {sorted(self._arguments)}, got {sorted(arguments)}")

    def models(self, *shape, **arguments) -> list[Model]:
        self._check(arguments)
        connection = connections[self._using]
        plan = self._plan(shape, connection)
        start, end = plan.model_columns
        objects = []
        for row in plan.rows(arguments, connection):
            obj = plan.model.from_db(connection.alias, plan.init_list, row[start:end])
            for populator in plan.populators:
                populator.populate(row, obj)
            for name, pos in plan.annotations.items():
                setattr(obj, name, row[pos])
            objects.append(obj)
        return objects

    def first(self, *shape, **arguments) -> Model | None:
        objects = self.models(*shape, **arguments)
        return objects[0] if objects else None


class PreparedUpdate:
    """`UPDATE table SET <fields> WHERE <conditions>`, each condition a column = value.

    The ORM's update() builds an UpdateQuery and compiles it on every call; this writes
    the statement once per database and prepares each value by its field, as save() does.
    Returns the number of rows changed, so a condition on the old state makes it a
    compare-and-swap.
    """

    def __init__(self, model: type[Model], *, set: tuple[str, ...], where: tuple[str, ...], using=DEFAULT_DB_ALIAS):
        meta = model._meta
        self.fields = set
        self._set = [meta.get_field(name) for name in set]
        self._where = [meta.get_field(name) for name in where]
        self._table = meta.db_table
        self._using = using
        self._sql: dict[str, str] = {}

    def __call__(self, *, where: dict[str, Any], **values) -> int:
        if set(values) != {f.name for f in self._set} or set(where) != {f.name for f in self._where}:
            raise TypeError("prepared update: the values and conditions must name exactly its fields")
        connection = connections[self._using]
        sql = self._sql.get(connection.vendor)
        if sql is None:
            quote = connection.ops.quote_name
            sql = self._sql[connection.vendor] = (
                f"UPDATE {quote(self._table)} SET "
                + ", ".join(f"{quote(f.column)} = %s" for f in self._set)
                + " WHERE "
                + " AND ".join(f"{quote(f.column)} = %s" for f in self._where)
            )
        params = [f.get_db_prep_save(_key(values[f.name]), connection) for f in self._set]
        params += [f.get_db_prep_value(_key(where[f.name]), connection, prepared=False) for f in self._where]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount


class PreparedInsert:
    """`INSERT INTO table (<fields>) VALUES (...)`, written once per database and row count.

    For rows written on every request (the audit log, a task and its runs), where
    save() and bulk_create() spend most of their time building the statement. Values
    are prepared by field as save() prepares them (pre_save included, so auto_now_add
    and file fields behave); no model signals are sent.

    `__call__(**values)` inserts one row from plain values; `save_new(*instances)`
    inserts new instances and gives each its primary key, read back in the same
    statement (RETURNING, as bulk_create does on PostgreSQL and SQLite).
    """

    def __init__(self, model: type[Model], *, fields: tuple[str, ...], using=DEFAULT_DB_ALIAS):
        self._model = model
        self._fields = [model._meta.get_field(name) for name in fields]
        self._using = using
        self._sql: dict[tuple, str] = {}

    def _statement(self, connection, rows: int, returning: bool) -> str:
        key = (connection.vendor, rows, returning)
        sql = self._sql.get(key)
        if sql is None:
            quote = connection.ops.quote_name
            row = f"({', '.join(['%s'] * len(self._fields))})"
            sql = (
                f"INSERT INTO {quote(self._model._meta.db_table)} ({', '.join(quote(f.column) for f in self._fields)}) "
                f"VALUES {', '.join([row] * rows)}"
            )
            if returning:
                sql += f" RETURNING {quote(self._model._meta.pk.column)}"
            sql = self._sql[key] = sql
        return sql

    def __call__(self, **values) -> None:
        connection = connections[self._using]
        with connection.cursor() as cursor:
            self.execute(connection, cursor, **values)

    def execute(self, connection, cursor, **values) -> None:
        """Insert one row through a cursor the caller holds on `connection` (several statements, one cursor)."""
        if set(values) != {f.name for f in self._fields}:
            raise TypeError("prepared insert: the values must name exactly its fields")
        cursor.execute(
            self._statement(connection, 1, False),
            [f.get_db_prep_save(_key(values[f.name]), connection) for f in self._fields],
        )

    def save_new(self, *instances: Model) -> None:
        connection = connections[self._using]
        if not connection.features.can_return_rows_from_bulk_insert:
            raise NotImplementedError("prepared insert: this database cannot return the new rows' ids")
        params = []
        for instance in instances:
            if not instance._state.adding:
                raise ValueError("prepared insert: only new instances can be inserted")
            params += [f.get_db_prep_save(f.pre_save(instance, True), connection) for f in self._fields]
        with connection.cursor() as cursor:
            cursor.execute(self._statement(connection, len(instances), True), params)
            ids = [row[0] for row in cursor.fetchall()]
        for instance, pk in zip(instances, ids, strict=True):
            instance.pk = pk
            instance._state.adding = False
            instance._state.db = connection.alias


def execute(connection, cursor, sql: str, params: list) -> None:
    """Run a fixed statement on a cursor of `connection` (the audit log's statements)."""
    cursor.execute(sql, params)


def _key(value):
    """A related object stands for its primary key, as in filter(node=node)."""
    return value.pk if isinstance(value, Model) else value
