"""`orchestrator verify`: the original plan's verification queries, on the live tables (spec §8)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from orchestrator import db, fingerprint, metadata
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import CheckFailed


def verify(settings: Settings, conn: ConnInfo) -> list[dict]:
    """The original plan's verification queries, on the live tables (spec §8)."""
    live_schema, legacy = settings.live_schema, settings.legacy_schema
    profile, intent = sql.Identifier(live_schema, "UserProfile"), sql.Identifier(live_schema, "ContextIntent")
    users, cps = sql.Identifier(legacy, "User"), sql.Identifier(legacy, "ContextProfile")
    messages = sql.Identifier(legacy, "ChatMessage")
    with db.connect(conn) as pg:
        # one snapshot for every query: counts of a database the application writes to agree with each other
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        pg.read_only = True
        if not (db.table_exists(pg, live_schema, "UserProfile") and db.table_exists(pg, live_schema, "ContextIntent")):
            raise CheckFailed(f"there are no live tables in schema {live_schema}: run `orchestrator promote` first")
        checks = [
            (
                "every user has exactly one profile",
                sql.SQL(
                    "select count(*) from {u} as u where (select count(*) from {p} as p where p.{uid} = u.{id}) <> 1"
                ),
                0,
            ),
            (
                "no profile without a user",
                sql.SQL(
                    "select count(*) from {p} as p where not exists (select 1 from {u} as u where u.{id} = p.{uid})"
                ),
                0,
            ),
            (
                "no context intent without a user",
                sql.SQL(
                    "select count(*) from {i} as i where not exists (select 1 from {u} as u where u.{id} = i.{uid})"
                ),
                0,
            ),
            (
                "no duplicate (user, context type)",
                sql.SQL("select count(*) from (select 1 from {i} group by {uid}, {ct} having count(*) > 1) as d"),
                0,
            ),
            (
                "profile completeness within 0-100",
                sql.SQL("select count(*) from {p} where completeness not between 0 and 100"),
                0,
            ),
            (
                "context intent completeness within 0-100",
                sql.SQL("select count(*) from {i} where completeness not between 0 and 100"),
                0,
            ),
            ("profile count = user count", sql.SQL("select count(*) from {p}"), sql.SQL("select count(*) from {u}")),
            (
                "context intent count = non-orphan (user, context type) pairs",
                sql.SQL("select count(*) from {i}"),
                sql.SQL(
                    "select count(*) from (select distinct cp.{cuid}, cp.{ct} from {cp} as cp"
                    " join {u} as u on u.{id} = cp.{cuid}) as pairs"
                ),
            ),
            (
                "every chat message of a migrated context profile maps to exactly one intent",
                sql.SQL(
                    "select count(*) from {m} as m join {cp} as cp on cp.{id} = m.{mcp}"
                    " join {u} as u on u.{id} = cp.{cuid}"
                    " where (select count(*) from {i} as i where i.{uid} = cp.{cuid} and i.{ct} = cp.{ct}) <> 1"
                ),
                0,
            ),
        ]
        names = {
            "u": users,
            "p": profile,
            "i": intent,
            "cp": cps,
            "m": messages,
            "id": sql.Identifier("id"),
            "uid": sql.Identifier("userId"),
            "cuid": sql.Identifier("userId"),
            "ct": sql.Identifier("contextType"),
            "mcp": sql.Identifier("contextProfileId"),
        }
        results = []
        for name, query, expected in checks:
            value = pg.execute(query.format(**names)).fetchone()[0]
            if isinstance(expected, sql.Composable):
                expected = pg.execute(expected.format(**names)).fetchone()[0]
            results.append({"check": name, "value": value, "expected": expected, "passed": value == expected})
        dry_run = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=legacy
        )
        if dry_run is not None and dry_run.get("chat_fingerprint"):
            now = fingerprint.chat_fingerprint(pg, legacy)
            then = dry_run["chat_fingerprint"]
            results.append(
                {
                    "check": "chat messages unchanged since the dry run",
                    "value": now["rows"],
                    "expected": then["rows"],
                    "passed": now == then,
                }
            )
    return results
