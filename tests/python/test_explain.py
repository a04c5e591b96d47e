"""Row-level provenance: the migration_key_provenance view and `orchestrator explain`."""

from __future__ import annotations

import dataclasses
import json

import legacy_generator
import psycopg
import pytest
from helpers import invoke

from orchestrator import dry_run, fixtures
from orchestrator import promote as promoting
from orchestrator.config import FIXTURES_SCHEMA


def reconciliation_problems(conn, dry_run_schema: str) -> dict[str, int]:
    """Every way the provenance could disagree with the logs and the accounting (all must be 0)."""
    checks = {
        "keys appearing other than exactly once": """
            select count(*) from (
                select legacy_profile_id, legacy_key from {p} where legacy_key is not null
                group by 1, 2 having count(*) <> 1) as d""",
        "provenance keys <> keys seen": """
            select (select count(*) from {p} where legacy_key is not null)
                 - (select value from {s} where metric = 'keys_seen')""",
        "mapped provenance keys <> keys mapped": """
            select (select count(*) from {p} where legacy_key is not null and outcome <> 'unmapped')
                 - (select value from {s} where metric = 'keys_mapped')""",
        "unmapped rows not in the unmapped log (or the reverse)": """
            select count(*) from (
                (select legacy_profile_id, legacy_key, unmapped_reason from {p} where outcome = 'unmapped'
                 except all
                 select legacy_profile_id, key, reason from {u})
                union all
                (select legacy_profile_id, key, reason from {u}
                 except all
                 select legacy_profile_id, legacy_key, unmapped_reason from {p} where outcome = 'unmapped')) as d""",
        "lost atoms without a logged conflict": """
            select count(*) from {p} as p, jsonb_array_elements(p.atom_details) as atom
            where atom ->> 'outcome' = 'lost_conflict' and not exists (
                select 1 from {c} as c where c.user_id = p.user_id
                and c.context_type is not distinct from p.target_context_type
                and c.field = p.field || coalesce('.' || (atom ->> 'sub_key'), ''))""",
        "logged conflicts without a lost atom": """
            select count(*) from {c} as c where not exists (
                select 1 from {p} as p, jsonb_array_elements(p.atom_details) as atom
                where atom ->> 'outcome' = 'lost_conflict' and c.user_id = p.user_id
                and c.context_type is not distinct from p.target_context_type
                and c.field = p.field || coalesce('.' || (atom ->> 'sub_key'), ''))""",
        "chosen values that are not the conflict's chosen value": """
            select count(*) from {p} as p, jsonb_array_elements(p.atom_details) as atom, {c} as c
            where atom ->> 'outcome' = 'lost_conflict' and c.user_id = p.user_id
            and c.context_type is not distinct from p.target_context_type
            and c.field = p.field || coalesce('.' || (atom ->> 'sub_key'), '')
            and c.chosen <> atom -> 'chosen_value'""",
    }
    names = {
        "p": f"{dry_run_schema}.migration_key_provenance",
        "s": f"{dry_run_schema}.migration_summary",
        "u": f"{dry_run_schema}.migration_unmapped_fields",
        "c": f"{dry_run_schema}.migration_conflicts",
    }
    with psycopg.connect(**conn.kwargs()) as pg:
        return {name: pg.execute(query.format(**names)).fetchone()[0] for name, query in checks.items()}


@pytest.fixture(scope="module")
def built(settings, database):
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    return settings, database


def test_provenance_reconciles_on_the_fixtures(built):
    settings, conn = built
    problems = reconciliation_problems(conn, settings.dry_run_schema)
    assert problems == dict.fromkeys(problems, 0)


def test_provenance_reconciles_on_generated_drift_data(settings, database):
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        legacy_generator.load(pg, "legacy_provenance", legacy_generator.generate(seed=7, n_users=250))
    generated = dataclasses.replace(settings, legacy_schema="legacy_provenance", dry_run_schema="provenance_dry_run")
    dry_run.dry_run(generated, database)
    problems = reconciliation_problems(database, generated.dry_run_schema)
    assert problems == dict.fromkeys(problems, 0)
    with psycopg.connect(**database.kwargs()) as pg:
        outcomes = dict(
            pg.execute(
                "select outcome, count(*) from provenance_dry_run.migration_key_provenance group by 1"
            ).fetchall()
        )
    # the generated drift exercises every outcome
    assert set(outcomes) >= {
        "chosen",
        "same_as_chosen",
        "lost_conflict",
        "merged",
        "partly_deduplicated",
        "absent",
        "unmapped",
    }


def test_explain_one_user_json(built):
    from orchestrator import explain
    from orchestrator.console import to_json

    settings, conn = built
    result = json.loads(to_json(explain.explain(settings, conn, "u04")))
    assert [cp["context_profile_id"] for cp in result["context_profiles"]] == ["cp04f", "cp04r"]
    keys = {(k["legacy_profile_id"], k["legacy_key"]): k for k in result["keys"]}
    assert len(keys) == 10
    location = keys[("p04r", "location")]
    assert location["outcome"] == "lost_conflict" and location["target"] == "profile"
    assert location["atom_details"] == [
        {"value": "SF", "outcome": "lost_conflict", "chosen_value": "NYC", "chosen_from_legacy_profile_id": "p04f"}
    ]
    assert keys[("p04r", "name")]["legacy_value"] == " Bo " and keys[("p04r", "name")]["normalised_value"] == "Bo"
    assert keys[("p04r", "name")]["outcome"] == "same_as_chosen"
    assert keys[("p04f", "friendshipDepth")]["target_context_type"] == "friendship"
    assert result["dry_run"]["profile"][0]["location"] == "NYC"
    assert result["live"] is None and result["live_matches_dry_run"] is None


def test_explain_keeps_number_text(built):
    from orchestrator import explain
    from orchestrator.console import to_json

    settings, conn = built
    text = to_json(explain.explain(settings, conn, "u09"))
    assert '"legacy_value": 1.500' in text and '"normalised_value": "1.500"' in text


def test_explain_cli(built, cli_env):
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}
    result = invoke(["explain", "--user", "u04"], env)
    assert result.exit_code == 0, result.output
    assert "lost a conflict" in result.output  # the table wraps cells at the runner's width
    assert "ContextIntent[friendship]" in result.output  # user data and targets are not taken as markup
    unknown = invoke(["explain", "--user", "ghost"], env)
    assert unknown.exit_code == 1
    assert "is not a legacy user" in unknown.output and "orphan_context_profile" in unknown.output


def test_explain_after_promote_compares_live_rows(built):
    from orchestrator import explain

    settings, conn = built
    promoting.promote(settings, conn, max_conflict_rate=1, users=None, confirm=lambda plan: None)
    assert explain.explain(settings, conn, "u07")["live_matches_dry_run"] is True
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pg.execute("""update legacy_fixtures."UserProfile" set location = 'elsewhere' where "userId" = 'u07'""")
    assert explain.explain(settings, conn, "u07")["live_matches_dry_run"] is False
