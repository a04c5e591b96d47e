"""Reviewer decisions through the whole flow on the fixtures (spec §11): every rebuild applies them (full,
partial, catch-up, sync), a decision made stale by a legacy change blocks promote until it is decided
again or cleared, a decision made after the dry run blocks it until the next dry run, and explain and
the report show who decided what. Through the real CLI and core calls, on a real server."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import psycopg
import pytest
from helpers import invoke

from orchestrator import dry_run, fixtures, reports
from orchestrator.config import FIXTURES_SCHEMA

HEADER = "user_id,context_type,field,values,chosen,decision,note"
STALE_GATE = "gate 'no stale reviewer decision' failed"
CHANGED_GATE = "gate 'reviewer decisions unchanged since the dry run' failed"


def execute(conn, statement: str, params=None) -> None:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pg.execute(statement, params)


def query(conn, statement: str, params=None) -> list[tuple]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return pg.execute(statement, params).fetchall()


@pytest.fixture()
def fresh(settings, database, cli_env):
    """Fixtures reloaded, metadata (decisions included) and dry run cleared, dry run built."""
    execute(database, f'drop schema if exists "{settings.meta_schema}" cascade')
    execute(database, f'drop schema if exists "{settings.dry_run_schema}" cascade')
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    return settings, database, {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}


def decide(env, tmp_path, *rows: str, by: str = "Ann") -> None:
    path = tmp_path / f"decisions-{len(list(tmp_path.iterdir()))}.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    result = invoke(["decisions", "import", str(path), "--by", by], env)
    assert result.exit_code == 0, result.output


def rebuild(env) -> dict:
    """`orchestrator dry-run --json`: built (exit 0) whatever the decisions; the summary by metric."""
    result = invoke(["dry-run", "--json"], env)
    assert result.exit_code == 0, result.output
    return {row["metric"]: row for row in json.loads(result.stdout)["summary"]}


def promote(env, *args: str):
    return invoke(["promote", "--yes", "--max-conflict-rate", "1", *args], env)


def live_location(conn, user_id: str) -> str:
    return query(conn, 'select location from legacy_fixtures."UserProfile" where "userId" = %s', [user_id])[0][0]


def live_timeline(conn, user_id: str) -> str:
    return query(
        conn,
        'select "relationshipTimeline" from legacy_fixtures."ContextIntent" where "userId" = %s'
        " and \"contextType\" = 'romantic'",
        [user_id],
    )[0][0]


def test_decisions_are_migrated_logged_explained_and_promoted(fresh, tmp_path):
    settings, conn, env = fresh
    decide(
        env,
        tmp_path,
        'u04,,location,"[""NYC"", ""SF""]","""NYC""",2,lives in SF now',
        'u04,,beliefs.religion,,,"""catholic""",',
        "u07,romantic,relationshipTimeline,,,2,",
    )
    # decided after the dry run: promote would ignore them, so it refuses until the dry run applies them
    refused = promote(env)
    assert refused.exit_code == 1 and CHANGED_GATE in refused.output
    assert "(3 conflicts decided, decided again or cleared since the dry run)" in refused.output
    summary = rebuild(env)
    assert summary["conflicts_decided"]["value"] == 3
    assert (summary["decisions_stale"]["value"], summary["decisions_stale"]["passed"]) == (0, True)
    dry = settings.dry_run_schema
    assert query(conn, f"select location, beliefs->>'religion' from {dry}.profile where user_id = 'u04'") == [
        ("SF", "catholic")
    ]
    assert query(
        conn,
        f"select relationship_timeline from {dry}.context_intent where user_id = 'u07' and context_type = 'romantic'",
    ) == [("actively_looking",)]
    conflicts = query(conn, f"select user_id, field, chosen::text, decided_by from {dry}.migration_conflicts")
    assert sorted(conflicts) == [
        ("u04", "beliefs.religion", '"catholic"', "reviewer"),
        ("u04", "location", '"SF"', "reviewer"),
        ("u07", "relationshipTimeline", '"actively_looking"', "reviewer"),
        ("u10", "location", '"Quito"', "first_value"),
        ("u12", "location", '"Accra"', "first_value"),
        ("u13", "location", '"Porto"', "first_value"),
        ("u13", "relationshipTimeline", '"taking_my_time"', "first_value"),
    ]
    assert {row["status"] for row in json.loads(invoke(["decisions", "list", "--json"], env).stdout)} == {"applied"}
    # explain: the decision, who made it, when and why; the first value lost to it
    explained = invoke(["explain", "--user", "u04"], env).output
    assert re.search(
        r'Reviewer decision on location: "SF", applied; by Ann at \S+ \S+; note: lives in SF now', explained
    )
    assert 'location: "NYC" -> "NYC" => Profile.location: lost a conflict; lost to "SF" from p04r' in explained
    as_json = json.loads(invoke(["explain", "--user", "u04", "--json"], env).stdout)
    assert [(d["field"], d["decided_value"], d["reviewer"], d["status"]) for d in as_json["decisions"]] == [
        ("beliefs.religion", "catholic", "Ann", "applied"),
        ("location", "SF", "Ann", "applied"),
    ]
    promoted = promote(env)
    assert promoted.exit_code == 0, promoted.output
    assert live_location(conn, "u04") == "SF" and live_timeline(conn, "u07") == "actively_looking"


@pytest.mark.slow  # CI runs it on one version: the decisions SQL runs on both versions in the first test
def test_a_stale_decision_blocks_promote_until_decided_again_or_cleared(fresh, tmp_path):
    settings, conn, env = fresh
    decide(env, tmp_path, "u04,,location,,,2,", "u10,,location,,,2,")
    rebuild(env)
    # the application changes u04's romantic profile: "SF" is no longer among the conflict's values
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "LA"}' where id = 'p04r'""")
    summary = rebuild(env)  # still built and reviewable (exit 0)
    assert summary["decisions_stale"]["value"] == 1 and summary["decisions_stale"]["passed"] is False
    assert summary["conflicts_decided"]["value"] == 1  # u10's still applies
    assert query(conn, f"select location from {settings.dry_run_schema}.profile where user_id = 'u04'") == [("NYC",)]
    refused = promote(env)
    assert refused.exit_code == 1
    assert f"{STALE_GATE} (1 stale reviewer decision in the dry run" in refused.output
    assert "list them with `orchestrator decisions list`" in refused.output
    listed = json.loads(invoke(["decisions", "list", "--json"], env).stdout)
    assert [(row["user_id"], row["status"], row["conflict_values"]) for row in listed] == [
        ("u04", "stale", ["NYC", "LA"]),
        ("u10", "applied", ["Quito", "Lima"]),
    ]
    # decided again: the next dry run applies it, and promote goes through
    decide(env, tmp_path, 'u04,,location,"[""NYC"", ""LA""]",,2,moved again', by="Bob")
    assert rebuild(env)["decisions_stale"]["value"] == 0
    promoted = promote(env)
    assert promoted.exit_code == 0, promoted.output
    assert live_location(conn, "u04") == "LA"
    # stale again, then cleared: the first value is migrated and promote goes through
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Rome"}' where id = 'p04r'""")
    built = invoke(["dry-run"], env)  # built and reviewable: exit 0, and it says what promote will say
    assert built.exit_code == 0, built.output
    assert "Stale reviewer decisions: 1 (the legacy data changed since they were made" in built.output
    assert "`orchestrator decisions list`" in built.output
    assert promote(env).exit_code == 1
    cleared = invoke(["decisions", "clear", "--user", "u04", "--yes"], env)
    assert cleared.exit_code == 0
    refused = promote(env)  # cleared after the dry run: it still holds the stale decision
    assert refused.exit_code == 1 and STALE_GATE in refused.output and CHANGED_GATE in refused.output
    assert rebuild(env)["decisions_stale"]["value"] == 0
    promoted = promote(env)
    assert promoted.exit_code == 0, promoted.output
    assert live_location(conn, "u04") == "NYC"  # the first value again


@pytest.mark.slow  # CI runs it on one version: the decisions SQL runs on both versions in the first test
def test_a_partial_promote_applies_and_counts_only_its_users_decisions(fresh, tmp_path):
    settings, conn, env = fresh
    assert promote(env).exit_code == 0  # live, no decision yet
    decide(env, tmp_path, "u04,,location,,,2,", "u10,,location,,,2,")
    # u10's decision goes stale in legacy; a partial promote of u04 neither reads nor counts it
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Cusco"}' where id = 'p10b'""")
    promoted = promote(env, "--user", "u04")
    assert promoted.exit_code == 0, promoted.output
    assert live_location(conn, "u04") == "SF" and live_location(conn, "u10") == "Quito"
    partial = settings.partial_schema
    figures = dict(query(conn, f"select metric, value from {partial}.migration_summary"))
    assert (figures["conflicts_decided"], figures["decisions_stale"]) == (Decimal(1), Decimal(0))
    assert query(conn, f"select user_id, status from {partial}.migration_decisions") == [("u04", "applied")]
    # a partial promote of u10 rebuilds it: its decision is stale, refused
    refused = promote(env, "--user", "u10")
    assert refused.exit_code == 1 and STALE_GATE in refused.output


@pytest.mark.slow  # CI runs it on one version: the decisions SQL runs on both versions in the first test
def test_catch_up_and_sync_rebuild_the_changed_users_with_their_decisions(fresh, tmp_path):
    settings, conn, env = fresh
    decide(env, tmp_path, "u04,,location,,,2,", "u07,romantic,relationshipTimeline,,,2,")
    rebuild(env)
    # u07 changes after the dry run (not its conflict): promote --catch-up rebuilds it, decision applied
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"name": "Kim"}' where id = 'p07r2'""")
    caught_up = promote(env, "--catch-up")
    assert caught_up.exit_code == 0, caught_up.output
    assert "1 user changed since was rebuilt" in caught_up.output
    assert live_timeline(conn, "u07") == "actively_looking" and live_location(conn, "u04") == "SF"
    assert query(conn, f"select count(*) from {settings.dry_run_schema}.migration_decisions") == [(2,)]
    # u04 changes after the promote: the sync round rebuilds it with its decision
    execute(
        conn,
        """update legacy_fixtures."Profile" set data = data || '{"lifestyle": {"pets": "dog"}}'"""
        """ where id = 'p04r'""",
    )
    synced = invoke(["sync", "--yes", "--max-conflict-rate", "1"], env)
    assert synced.exit_code == 0, synced.output
    assert query(conn, 'select lifestyle, location from legacy_fixtures."UserProfile" where "userId" = \'u04\'') == [
        ({"pets": "dog"}, "SF")
    ]
    figures = dict(query(conn, f"select metric, value from {settings.dry_run_schema}.migration_summary"))
    assert (figures["conflicts_decided"], figures["decisions_stale"]) == (Decimal(2), Decimal(0))
    # a decision after the promote makes its user a changed one: the next round rebuilds it, decision applied
    decide(env, tmp_path, "u13,,location,,,2,")
    assert invoke(["promote", "--yes"], env).exit_code == 1  # a plain promote of the dry run refuses it
    synced = invoke(["sync", "--yes", "--max-conflict-rate", "1"], env)
    assert synced.exit_code == 0 and "1 user changed" in synced.output, synced.output
    assert live_location(conn, "u13") == "Lisbon"  # the second of ["Porto", "Lisbon"]
    decided = query(conn, f"select status from {settings.dry_run_schema}.migration_decisions where user_id = 'u13'")
    assert decided == [("applied",)]


@pytest.mark.slow  # CI runs it on one version: the report's rendering
def test_the_report_shows_decided_conflicts_apart_and_links_the_template(fresh, tmp_path):
    settings, conn, env = fresh
    decide(env, tmp_path, "u04,,location,,,2,checked with the user", "u10,,location,,,2,")
    rebuild(env)
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Cusco"}' where id = 'p10b'""")
    rebuild(env)  # u10's decision is now stale
    html, template = reports.write(settings, conn, "html", tmp_path / "report")
    assert template == tmp_path / "report" / "decisions_template.csv"
    page = html.read_text()
    assert '<a href="decisions_template.csv">' in page
    assert "1 conflict decided by a reviewer, 6 defaulted to their first value" in page
    assert '<span class="fail">1 stale decision</span>' in page
    assert "checked with the user" in page and "value_not_among_values" in page
    assert page.count("<td>reviewer</td>") == 1 and page.count("<td>first value</td>") == 6
    lines = template.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 8
