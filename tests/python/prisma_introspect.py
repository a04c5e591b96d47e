"""What PostgreSQL's catalog says about a schema's tables, in a form two schemas can be compared by.

``describe_live_tables(conn, schema)`` answers "are these the tables Prisma Migrate would have
made?": build Prisma's tables in one schema and ours in another, describe both, compare the dicts.
Everything that names the schema itself is stripped, so two schemas built from the same DDL
describe identically; everything else PostgreSQL would let differ (types, defaults, nullability,
constraint and index names and definitions, persistence, enum labels and their order) is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import psycopg
from helpers import LIVE_TABLE_NAMES
from psycopg import sql

# LIVE_TABLE_NAMES, the two tables promote writes (spec §7): the original plan's Profile (mapped to
# "UserProfile", the legacy table owns "Profile") and ContextIntent.

_TABLES = """
select c.oid, c.relname, c.relkind, c.relpersistence
from pg_class as c
where c.relnamespace = %(schema)s::regnamespace
  and c.relkind in ('r', 'p')
  and (%(tables)s::text[] is null or c.relname = any(%(tables)s::text[]))
order by c.relname collate "C"
"""

_COLUMNS = """
select
    a.attname,
    format_type(a.atttypid, a.atttypmod),
    a.attnotnull,
    pg_get_expr(d.adbin, d.adrelid),
    a.attidentity,
    a.attgenerated,
    coll.collname
from pg_attribute as a
left join pg_attrdef as d on d.adrelid = a.attrelid and d.adnum = a.attnum
left join pg_collation as coll on coll.oid = a.attcollation and a.attcollation <> 0
where a.attrelid = %(table)s and a.attnum > 0 and not a.attisdropped
order by a.attnum
"""

_CONSTRAINTS = """
select con.conname, con.contype::text, pg_get_constraintdef(con.oid), con.condeferrable, con.condeferred
from pg_constraint as con
where con.conrelid = %(table)s
order by con.conname collate "C"
"""

_INDEXES = """
select ic.relname, pg_get_indexdef(i.indexrelid)
from pg_index as i
join pg_class as ic on ic.oid = i.indexrelid
where i.indrelid = %(table)s
order by ic.relname collate "C"
"""

_ENUMS = """
select t.typname, array_agg(e.enumlabel order by e.enumsortorder)
from pg_type as t
join pg_enum as e on e.enumtypid = t.oid
where t.typnamespace = %(schema)s::regnamespace
group by t.typname
order by t.typname collate "C"
"""


def describe_live_tables(
    conn: psycopg.Connection, schema: str, tables: Iterable[str] | None = LIVE_TABLE_NAMES
) -> dict:
    """Describe ``tables`` of ``schema`` (default: the two live tables; ``None``: every table).

    Returns ``{"tables": {name: {...}}, "enums": {name: [labels]}}``: per table its kind and
    persistence (an unlogged table is not what Prisma makes), columns in order (type, not null,
    default, identity, generated, collation), constraints by name (type, ``pg_get_constraintdef``,
    deferrability) and indexes by name (``pg_get_indexdef``). Enum types are those of ``schema``.
    Names are resolved with ``search_path`` set to ``schema`` alone, and the schema's own name is
    removed from definitions PostgreSQL always qualifies (index definitions), so the result does not
    depend on what the schema is called. A requested table that does not exist is simply absent:
    compare the result with another schema's, or check ``result["tables"].keys()``.

    Runs in a transaction of its own (rolled back), leaving the connection's settings as they were.
    """
    wanted = None if tables is None else list(tables)
    with conn.transaction(force_rollback=True), conn.cursor() as cur:
        cur.execute(sql.SQL("set local search_path to {}").format(sql.Identifier(schema)))
        unqualify = _unqualifier(cur, schema)
        cur.execute(_TABLES, {"schema": schema, "tables": wanted})
        described = {}
        for oid, name, kind, persistence in cur.fetchall():
            cur.execute(_COLUMNS, {"table": oid})
            columns = [
                {
                    "name": column,
                    "type": unqualify(type_name),
                    "not_null": not_null,
                    "default": unqualify(default) if default is not None else None,
                    "identity": identity,
                    "generated": generated,
                    "collation": collation,
                }
                for column, type_name, not_null, default, identity, generated, collation in cur.fetchall()
            ]
            cur.execute(_CONSTRAINTS, {"table": oid})
            constraints = {
                conname: {
                    "type": contype,
                    "definition": unqualify(definition),
                    "deferrable": deferrable,
                    "deferred": deferred,
                }
                for conname, contype, definition, deferrable, deferred in cur.fetchall()
            }
            cur.execute(_INDEXES, {"table": oid})
            indexes = {index: unqualify(definition) for index, definition in cur.fetchall()}
            described[name] = {
                "kind": kind,
                "persistence": persistence,
                "columns": columns,
                "constraints": constraints,
                "indexes": indexes,
            }
        cur.execute(_ENUMS, {"schema": schema})
        enums = {name: list(labels) for name, labels in cur.fetchall()}
    return {"tables": described, "enums": enums}


def _unqualifier(cur: psycopg.Cursor, schema: str):
    """Remove ``schema.`` (spelt as the catalog functions spell it, ``quote_ident``) before names."""
    quoted = cur.execute("select quote_ident(%s)", (schema,)).fetchone()[0]
    prefix = re.compile(r'(?<![\w"$])' + re.escape(quoted + "."))

    def unqualify(text: str) -> str:
        return prefix.sub("", text)

    return unqualify
