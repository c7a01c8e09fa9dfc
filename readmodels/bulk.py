"""A batch's rows written, and looked up by key, in one statement each, through the
database driver: the projections' bulk path.

SQLAlchemy's ``executemany`` of an ``insert()`` builds and type-processes every row's
parameters in Python, and psycopg then sends each row as a statement of its own; with
thousands of heatmap cells and metric points a batch, that per-row work was most of a
projection's time. Here the values are converted a column at a time with the same rules
as the tables' types (``UTCDateTime``: naive UTC, read back as UTC; SQLite keeps it as
SQLAlchemy's text; JSON as the engine's serializer writes it), then:

- SQLite: one ``INSERT ... VALUES (?, ...)`` run by ``sqlite3``'s own ``executemany``;
- PostgreSQL: one ``INSERT ... SELECT ... FROM unnest(...)`` with a column a parameter
  (an array, in the binary format: the text format quotes each element in Python), so a
  whole batch is one round trip and one short statement the driver prepares once. Text
  columns go as ``text[]``: the insert's own cast to ``varchar(n)`` refuses a value too
  long, as a row-by-row insert does; floats as floats (the driver refuses an array that
  mixes ints and floats).

The statements run on the session's connection, inside the batch's transaction, and
errors come back as SQLAlchemy's (``IntegrityError``, ``DataError``): the runner's
fallback, an event at a time in savepoints, works as before.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from readmodels.tables import UTCDateTime

Conflict = Literal["error", "keep", "overwrite"]
Convert = Callable[[Any], Any]
CHUNK = 200  # keys to a SQLite look-up's IN (...)


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    getter: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values, in order
    converts: tuple[tuple[int, Convert, bool], ...]  # column, conversion, once a value
    postgres: bool


def insert(
    session: Session,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Conflict = "error",
) -> None:
    """Insert ``rows`` (each with every column of ``table``) in one statement. A key the
    table holds already: ``error`` raises ``IntegrityError``, ``keep`` leaves the row as
    it is, ``overwrite`` gives every other column the new row's value. Rows with the same
    key in one call are an error for ``overwrite`` on PostgreSQL: give each key once."""
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect
    plan = _plan(dialect.name, table, conflict, _json_dumps(dialect))
    # A column at a time: the values taken out by ``itemgetter`` and ``zip`` (C loops),
    # each distinct time converted once (a window's cells share theirs).
    columns: list[Sequence[Any]] = list(zip(*map(plan.getter, rows), strict=True))
    for i, convert, distinct in plan.converts:
        if distinct:
            done = {v: convert(v) for v in set(columns[i])}
            columns[i] = list(map(done.__getitem__, columns[i]))
        else:
            columns[i] = list(map(convert, columns[i]))
    if plan.postgres:
        conn.exec_driver_sql(plan.sql, tuple(map(list, columns)))
    else:
        conn.exec_driver_sql(plan.sql, list(zip(*columns, strict=True)))


def by_keys(
    session: Session, table: sa.Table, keys: Collection[tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """The rows of ``table`` whose primary key (in the table's key order) is among
    ``keys``, read as SQLAlchemy reads them (UTC times, decoded JSON)."""
    if not keys:
        return []
    cols = list(table.primary_key.columns)
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        out = []
        ordered = list(keys)
        for i in range(0, len(ordered), CHUNK):
            query = sa.select(table).where(sa.tuple_(*cols).in_(ordered[i : i + CHUNK]))
            out += [dict(r) for r in session.execute(query).mappings()]
        return out
    query, converts = _lookup(table)
    params = {
        f"k{n}": [k[n] if convert is None else convert(k[n]) for k in keys]
        for n, convert in enumerate(converts)
    }
    return [dict(r) for r in session.execute(query, params).mappings()]


def among(session: Session, column: sa.ColumnElement[Any], values: Collection[Any]) -> Any:
    """``column IN (values)`` as a clause. On PostgreSQL, ``IN (SELECT unnest(array))``
    of one parameter: one statement text whatever the count, which the driver prepares
    once (an ``IN`` of a new length is a new statement to parse), and a join the planner
    looks up by index (``= ANY(array)`` in a prepared plan compares each row with every
    element)."""
    if session.get_bind().dialect.name == "postgresql":
        array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column.in_(sa.select(sa.func.unnest(array)))
    return column.in_(list(values))


# -- the statements ------------------------------------------------------------------------


def _json_dumps(dialect: sa.Dialect) -> Callable[[Any], str]:
    return getattr(dialect, "_json_serializer", None) or json.dumps


@functools.cache
def _plan(dialect: str, table: sa.Table, conflict: Conflict, dumps: Callable[[Any], str]) -> _Plan:
    """Built once per table: the statement and each column's conversion."""
    postgres = dialect == "postgresql"
    d = postgresql.dialect() if postgres else sqlite.dialect()
    quote = d.identifier_preparer.quote
    cols = list(table.columns)
    names = ", ".join(quote(c.name) for c in cols)
    target = quote(table.name)
    keys = ", ".join(quote(c.name) for c in table.primary_key.columns)
    if conflict == "keep":
        tail = f" ON CONFLICT ({keys}) DO NOTHING"
    elif conflict == "overwrite":
        sets = ", ".join(
            f"{quote(c.name)} = excluded.{quote(c.name)}" for c in cols if not c.primary_key
        )
        tail = f" ON CONFLICT ({keys}) DO UPDATE SET {sets}"
    else:
        tail = ""
    converts = tuple(
        (i, convert, isinstance(c.type, UTCDateTime))
        for i, c in enumerate(cols)
        if (convert := _convert(c.type, postgres, dumps)) is not None
    )
    if postgres:
        arrays = ", ".join(f"%b::{_array_type(c.type, d)}" for c in cols)
        alias = ", ".join(f"c{i}" for i in range(len(cols)))
        picked = ", ".join(
            f"c{i}::json" if isinstance(c.type, sa.JSON) else f"c{i}" for i, c in enumerate(cols)
        )
        sql = f"INSERT INTO {target} ({names}) SELECT {picked} FROM unnest({arrays}) AS u({alias})"
    else:
        marks = ", ".join("?" for _ in cols)
        sql = f"INSERT INTO {target} ({names}) VALUES ({marks})"
    getter = operator.itemgetter(*(c.name for c in cols))
    if len(cols) == 1:  # itemgetter of one name gives the value, not a tuple
        name = cols[0].name
        getter = lambda row: (row[name],)  # noqa: E731
    return _Plan(sql + tail, getter, converts, postgres)


@functools.cache
def _lookup(table: sa.Table) -> tuple[sa.TextClause, tuple[Convert | None, ...]]:
    """PostgreSQL's look-up by key: the table joined with the keys as arrays."""
    d = postgresql.dialect()
    quote = d.identifier_preparer.quote
    cols = list(table.primary_key.columns)
    arrays = ", ".join(f"CAST(:k{i} AS {_array_type(c.type, d)})" for i, c in enumerate(cols))
    alias = ", ".join(f"k{i}" for i in range(len(cols)))
    on = " AND ".join(f"t.{quote(c.name)} = u.k{i}" for i, c in enumerate(cols))
    sql = f"SELECT t.* FROM {quote(table.name)} AS t JOIN unnest({arrays}) AS u({alias}) ON {on}"
    query = sa.text(sql).columns(*table.columns)
    return query, tuple(_convert(c.type, True, json.dumps) for c in cols)


def _array_type(t: sa.types.TypeEngine[Any], d: sa.Dialect) -> str:
    if isinstance(t, sa.String | sa.JSON):
        return "text[]"  # the insert casts to varchar(n): a value too long is refused
    if isinstance(t, UTCDateTime):
        return "timestamp[]"
    return f"{t.compile(dialect=d)}[]"


def _convert(t: sa.types.TypeEngine[Any], postgres: bool, dumps: Callable[[Any], str]) -> Any:
    if isinstance(t, UTCDateTime):
        return _naive_utc if postgres else _sqlite_time
    if isinstance(t, sa.JSON):
        return functools.partial(_json, dumps)
    if postgres and isinstance(t, sa.Float):
        return _float
    return None


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _naive_utc(value: datetime | None) -> datetime | None:
    """As ``UTCDateTime`` binds it."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        return value.replace(tzinfo=None)
    if value.tzinfo is None:
        raise ValueError("a time without a time zone: the read models keep UTC")
    return value.astimezone(UTC).replace(tzinfo=None)


def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy's SQLite ``DATETIME`` stores it: ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    naive = _naive_utc(value)
    return None if naive is None else naive.isoformat(" ", "microseconds")


def _json(dumps: Callable[[Any], str], value: Any) -> str:
    """As SQLAlchemy's ``JSON`` binds it (``None`` too: JSON's ``null``)."""
    return dumps(value)
