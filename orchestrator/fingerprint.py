"""Fingerprints: row counts and an order-independent content hash of tables.

The legacy fingerprint covers "User", "ContextProfile" and "Profile" (every input of a migrated
row, spec §9); chat messages are fingerprinted separately for verification. A subset fingerprint
covers only given users' rows: their User rows, their ContextProfiles, and those profiles' Profiles.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

FINGERPRINTED_TABLES = ("User", "ContextProfile", "Profile")


def _table_fingerprint(pg: psycopg.Connection, relation: sql.Composable, where: sql.Composable) -> dict:
    # the sum of a 64-bit hash of each row's text: independent of row order, changes with any value
    # (sum of bigint is exact: numeric, accumulated in 128 bits)
    query = sql.SQL("select count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text from {} as t {}").format(
        relation, where
    )
    count, digest = pg.execute(query).fetchone()
    return {"rows": count, "hash": digest}


def legacy_fingerprint(pg: psycopg.Connection, schema: str, users_table: sql.Composable | None = None) -> dict:
    """``users_table``: a table of user_id limiting the fingerprint to those users' rows."""
    table = {name: sql.Identifier(schema, name) for name in FINGERPRINTED_TABLES}
    if users_table is None:
        filters = dict.fromkeys(FINGERPRINTED_TABLES, sql.SQL(""))
    else:
        scope = users_table
        filters = {
            "User": sql.SQL("where t.{} in (select user_id from {})").format(sql.Identifier("id"), scope),
            "ContextProfile": sql.SQL("where t.{} in (select user_id from {})").format(sql.Identifier("userId"), scope),
            "Profile": sql.SQL(
                "where t.{} in (select cp.{} from {} as cp where cp.{} in (select user_id from {}))"
            ).format(
                sql.Identifier("contextProfileId"),
                sql.Identifier("id"),
                table["ContextProfile"],
                sql.Identifier("userId"),
                scope,
            ),
        }
    return {name: _table_fingerprint(pg, table[name], filters[name]) for name in FINGERPRINTED_TABLES}


def chat_fingerprint(pg: psycopg.Connection, schema: str) -> dict:
    return _table_fingerprint(pg, sql.Identifier(schema, "ChatMessage"), sql.SQL(""))


def describe_difference(before: dict, after: dict) -> str:
    changed = [
        f"{name} ({before[name]['rows']} -> {after[name]['rows']} rows"
        + (", contents changed)" if before[name]["hash"] != after[name]["hash"] else ")")
        for name in before
        if before[name] != after.get(name)
    ]
    return ", ".join(changed) or "no difference"
