"""Row-level provenance for one user: `orchestrator explain --user ID`.

Everything here is read from what the models produced (the `migration_key_provenance` view and the
marts); nothing re-implements a merge rule. Every query filters on one user id, which the view
pushes down to the intermediate tables' user_id indexes.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from decimal import Decimal

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator import db, live
from orchestrator.config import Settings
from orchestrator.embedded import ConnInfo
from orchestrator.errors import CheckFailed, OrchestratorError


def _rows(pg: psycopg.Connection, query: sql.Composable, params: list) -> list[dict]:
    with pg.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def explain(settings: Settings, conn: ConnInfo, user_id: str) -> dict:
    dry, legacy = settings.dry_run_schema, settings.legacy_schema
    with db.connect(conn) as pg:
        pg.read_only = True
        # JSON numbers keep their text (1.50 stays 1.50)
        set_json_loads(functools.partial(json.loads, parse_float=Decimal), pg)
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
            raise CheckFailed(f'{user_id!r} is not a legacy user (no "User"."id" matches it byte for byte){hint}')
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
                'select context_type, field, "values", chosen from {} where user_id = %s'
                ' order by context_type nulls first, field collate "C"'
            ).format(sql.Identifier(dry, "migration_conflicts")),
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


# -- rendering ------------------------------------------------------------------------------------------


def _text(value) -> str:
    """User data as inert text for the terminal (rich markup escaped)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, Decimal)):
        value = to_json(value, indent=None)
    return escape(str(value))


def _json_text(value) -> str:
    """A JSON value as JSON (so " Bo " shows its spaces and "30" differs from 30), markup escaped."""
    return "" if value is None else escape(to_json(value, indent=None))


OUTCOME_WORDS = {
    "chosen": "chosen",
    "same_as_chosen": "agreed with the chosen value",
    "lost_conflict": "lost a conflict",
    "partly_lost_conflict": "some sub-keys lost a conflict",
    "merged": "merged into the array",
    "partly_deduplicated": "merged; some elements were duplicates",
    "deduplicated": "all elements were duplicates",
    "absent": "empty/absent after normalisation",
    "unmapped": "unmapped",
}


def render(result: dict, console: Console) -> None:
    console.print(f"User {result['user_id']!r}", style="bold", markup=False)
    table = Table(title="Context profiles (context order)")
    for column in ("context profile", "type", "created", "legacy profiles (in order)"):
        table.add_column(column)
    by_cp: dict[str, list[str]] = {}
    for profile in result["legacy_profiles"]:
        by_cp.setdefault(profile["context_profile_id"], []).append(
            f"#{profile['context_order']} {profile['legacy_profile_id']} ({profile['data_type']})"
        )
    for cp in result["context_profiles"]:
        table.add_row(
            _text(cp["context_profile_id"]),
            cp["context_type"],
            f"{cp['created_at']}",
            _text(", ".join(by_cp.get(cp["context_profile_id"], [])) or "no legacy Profile"),
        )
    console.print(table)

    console.print("Every legacy key (original -> normalised => target: outcome):", style="bold")
    current = None
    for row in result["keys"]:
        if row["legacy_profile_id"] != current:
            current = row["legacy_profile_id"]
            console.print(
                f"  #{row['context_order'] or '-'} legacy Profile {_text(current)} "
                f"(context profile {_text(row['context_profile_id'])}, {row['context_type']})"
            )
        target = ""
        if row["field"]:
            target = (
                "Profile." if row["target"] == "profile" else f"ContextIntent[{row['target_context_type']}]."
            ) + row["field"]
        outcome = OUTCOME_WORDS.get(row["outcome"], row["outcome"])
        if row["outcome"] == "unmapped":
            outcome += f" ({row['unmapped_reason']})"
        outcome = escape(outcome)
        for atom in row["atom_details"] or []:
            if atom.get("outcome") == "lost_conflict":
                where = f"{escape(atom['sub_key'])}: " if atom.get("sub_key") else ""
                outcome += (
                    f"; {where}lost to {_json_text(atom['chosen_value'])} "
                    f"from {_text(atom['chosen_from_legacy_profile_id'])}"
                )
        key = _text(row["legacy_key"]) if row["legacy_key"] is not None else "(the whole data)"
        normalised = f" -> {_json_text(row['normalised_value'])}" if row["normalised_value"] is not None else ""
        arrow = f" => {escape(target)}" if target else " =>"
        console.print(f"    {key}: {_json_text(row['legacy_value'])}{normalised}{arrow}: {outcome}")
    if not result["keys"]:
        console.print("  (no legacy keys)")

    for name, rows in result["dry_run"].items():
        for row in rows:
            title = "Profile" if name == "profile" else f"ContextIntent [{row['context_type']}]"
            filled = {k: v for k, v in row.items() if v not in (None, [], {}) and k not in ("user_id",)}
            console.print(
                f"{title} (dry run): completeness {row['completeness']}, missing {row['missing']}", markup=False
            )
            console.print("  " + to_json(filled, indent=None), markup=False)
    if result["live"] is None:
        console.print("Live tables: not promoted yet.")
    elif result["live_matches_dry_run"]:
        console.print("Live tables: this user's rows are identical to the dry run.")
    else:
        console.print("Live tables: this user's rows DIFFER from the dry run (promote again, or see --json).")


def to_json(value, indent: int | None = 2) -> str:
    """JSON in which numbers keep their exact text (Decimal 1.50 is written 1.50, not 1.5)."""
    nonce = secrets.token_hex(8)

    def default(item):
        if isinstance(item, Decimal):
            # a placeholder no JSON string from the database can contain (jsonb rejects \u0000)
            return f"\x00{nonce}:{item}\x00"
        return str(item)

    text = json.dumps(value, indent=indent, default=default, ensure_ascii=False)
    return re.sub(r'"\\u0000' + nonce + r':([^"\\]+)\\u0000"', r"\1", text)
