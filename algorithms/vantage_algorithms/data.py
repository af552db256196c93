"""Loading a site's database by label: CSV, Parquet, Excel or SQL (SQLAlchemy URL).

Parquet needs pyarrow, Excel openpyxl, SQL SQLAlchemy; the reference images include
them. Without one, loading that type fails with a sentence saying which package is missing.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vantage_algorithms.errors import AlgorithmError

if TYPE_CHECKING:
    import pandas as pd

TYPES = ("csv", "parquet", "excel", "sql")


@dataclass(frozen=True)
class Database:
    label: str
    uri: str
    type: str


def _require(module: str, package: str, kind: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise AlgorithmError(f"reading {kind} databases needs the Python package {package}, "
                             f"which this image does not include") from None


def load(database: Database, *, table: str | None = None, query: str | None = None) -> pd.DataFrame:
    """The whole database as a DataFrame; for SQL, one table or the result of one query."""
    kind = database.type.lower()
    if kind not in TYPES:
        raise AlgorithmError(f"database {database.label!r} has type {database.type!r}; "
                             f"the toolkit reads {', '.join(TYPES)}")
    if kind != "sql" and (table or query):
        raise AlgorithmError(f"table and query apply to SQL databases; {database.label!r} is {kind}")
    import pandas as pd  # here, not at the top: a central method's container never reads data

    try:
        if kind == "csv":
            return pd.read_csv(database.uri)
        if kind == "parquet":
            _require("pyarrow", "pyarrow", "Parquet")
            return pd.read_parquet(database.uri)
        if kind == "excel":
            _require("openpyxl", "openpyxl", "Excel")
            return pd.read_excel(database.uri)
        return _load_sql(database, table=table, query=query)
    except FileNotFoundError:
        raise AlgorithmError(f"database {database.label!r}: no file at {database.uri}") from None


def _load_sql(database: Database, *, table: str | None, query: str | None) -> pd.DataFrame:
    _require("sqlalchemy", "SQLAlchemy", "SQL")
    import pandas as pd
    import sqlalchemy

    if bool(table) == bool(query):
        raise AlgorithmError(f"database {database.label!r} is SQL: give either table or query")
    engine = sqlalchemy.create_engine(_read_only_url(database.uri))
    try:
        with engine.connect() as connection, _rolled_back(connection):
            if table:
                if table not in sqlalchemy.inspect(connection).get_table_names():
                    raise AlgorithmError(f"database {database.label!r} has no table {table!r}")
                quoted = connection.dialect.identifier_preparer.quote(table)
                statement = sqlalchemy.text(f"SELECT * FROM {quoted}")
            else:
                statement = sqlalchemy.text(query)
            result = connection.execute(statement)
            # As pandas.read_sql does, without its ties to one SQLAlchemy major version.
            return pd.DataFrame.from_records(result.fetchall(), columns=list(result.keys()), coerce_float=True)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise AlgorithmError(f"database {database.label!r}: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300]}") from None
    finally:
        engine.dispose()


@contextmanager
def _rolled_back(connection):
    """Whatever a query did, nothing of it is kept."""
    transaction = connection.begin()
    try:
        yield
    finally:
        transaction.rollback()


def _read_only_url(uri: str) -> str:
    """SQLite files are opened read-only (the node mounts them read-only as well)."""
    if uri.startswith("sqlite:///") and "mode=ro" not in uri:
        path = uri[len("sqlite:///"):]
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return uri
