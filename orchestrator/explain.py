"""Row-level provenance for one user: `orchestrator explain --user ID`.

Everything here is read from what the models produced (the `migration_key_provenance` view and the
marts); nothing re-implements a merge rule. Every query filters on one user id, which the view
pushes down to the intermediate tables' user_id indexes.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from orchestrator import db, live
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.formats import json_loads, shown_repr


def _rows(pg: psycopg.Connection, query: sql.Composable, params: list) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def explain(settings: Settings, conn: ConnInfo, user_id: str) -> dict:
    dry, legacy = settings.dry_run_schema, settings.legacy_schema
    with db.connect(conn) as pg:
        pg.read_only = True
        # JSON numbers keep their text (1.50 stays 1.50), integers of any length included
        set_json_loads(json_loads, pg)
        if not db.table_exists(pg, dry, "profile"):
            raise OrchestratorError(f"there is no dry run in schema {dry}: run `orchestrator dry-run` first")
        user = _rows(
            pg,
            sql.SQL('select "id" as user_id, "createdAt" as created_at from {} where "id" = %s').format(
                sql.Identifier(legacy, "User")
            ),
            [user_id],
        )
        if not user:
            dangling = pg.execute(
                sql.SQL('select count(*) from {} where "userId" = %s').format(sql.Identifier(legacy, "ContextProfile")),
                [user_id],
            ).fetchone()[0]
            hint = (
                (
                    f" ({dangling} context profiles name it as their user: they are orphans, logged in "
                    f"migration_unmapped_fields with reason orphan_context_profile)"
                )
                if dangling
                else ""
            )
            raise CheckFailed(
                f'{shown_repr(user_id)} is not a legacy user (no "User"."id" matches it byte for byte){hint}'
            )
        context_profiles = _rows(
            pg,
            sql.SQL(
                'select "id" as context_profile_id, "contextType"::text as context_type, "createdAt" as created_at'
                ' from {} where "userId" = %s order by "createdAt", "id" collate "C"'
            ).format(sql.Identifier(legacy, "ContextProfile")),
            [user_id],
        )
        legacy_profiles = _rows(
            pg,
            sql.SQL(
                "select legacy_profile_id, context_profile_id, context_type, context_order, data_type, created_at,"
                " updated_at from {} where user_id = %s and orphan_reason is null order by context_order"
            ).format(sql.Identifier(dry, "int_legacy_profiles_ordered")),
            [user_id],
        )
        keys = _rows(
            pg,
            sql.SQL(
                "select legacy_profile_id, context_profile_id, context_type, context_order, legacy_key, legacy_value,"
                " target, target_context_type, field, kind, normalised_value, outcome, unmapped_reason, atom_details"
                ' from {} where user_id = %s order by context_order, legacy_key collate "C" nulls first'
            ).format(sql.Identifier(dry, "migration_key_provenance")),
            [user_id],
        )
        conflicts = _rows(
            pg,
            sql.SQL(
                'select context_type, field, "values", chosen, decided_by from {} where user_id = %s'
                ' order by context_type nulls first, field collate "C"'
            ).format(sql.Identifier(dry, "migration_conflicts")),
            [user_id],
        )
        # the reviewers' decisions the dry run read for this user: who, when, why, and whether each applied
        decisions = _rows(
            pg,
            sql.SQL(
                "select context_type, field, decided_value, reviewer, decided_at, note, status, stale_reason"
                ' from {} where user_id = %s order by context_type nulls first, field collate "C"'
            ).format(sql.Identifier(dry, "migration_decisions")),
            [user_id],
        )
        dry_rows = {
            "profile": _rows(
                pg, sql.SQL("select * from {} where user_id = %s").format(sql.Identifier(dry, "profile")), [user_id]
            ),
            "context_intent": _rows(
                pg,
                sql.SQL("select * from {} where user_id = %s order by context_type").format(
                    sql.Identifier(dry, "context_intent")
                ),
                [user_id],
            ),
        }
        live_rows = _live_rows(pg, settings, user_id)
    result = {
        "user_id": user_id,
        "context_profiles": context_profiles,
        "legacy_profiles": legacy_profiles,
        "keys": keys,
        "conflicts": conflicts,
        "decisions": decisions,
        "dry_run": dry_rows,
        "live": live_rows,
    }
    result["live_matches_dry_run"] = None if live_rows is None else _same(dry_rows, live_rows)
    return result


def _live_rows(pg, settings: Settings, user_id: str) -> dict | None:
    present = live.live_tables_present(pg, settings.live_schema)
    if not all(present.values()):
        return None
    rows = {}
    for dry_table, live_table in live.LIVE_TABLES.items():
        found = _rows(
            pg,
            sql.SQL('select * from {} where "userId" = %s order by "id"').format(
                sql.Identifier(settings.live_schema, live_table)
            ),
            [user_id],
        )
        rows[dry_table] = [{_snake(key): value for key, value in row.items()} for row in found]
    return rows


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _same(dry_rows: dict, live_rows: dict) -> bool:
    def key(rows):
        return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)

    return all(key(dry_rows[table]) == key(live_rows[table]) for table in dry_rows)
