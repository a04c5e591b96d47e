"""Promote, rollback, verify, report and the audit, on a real server with the fixtures."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
from decimal import Decimal

import psycopg
import pytest
from helpers import EVERYTHING, LIVE_TABLE_NAMES, execute, invoke, no_prompt

from orchestrator import dry_run, fixtures, locks, metadata, reports, verify
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.db import LEGACY_TABLES
from orchestrator.errors import CheckFailed


def table_dump(pg, schema: str, table: str) -> list[str]:
    """Every row of a table as text, in id order: equal dumps mean identical rows and values."""
    if pg.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", [schema, table]).fetchone()[0] is None:
        return []
    return [
        row[0]
        for row in pg.execute(
            f'select t::text from "{schema}"."{table}" as t order by t."id" collate "C"'  # noqa: S608 (test constants)
        ).fetchall()
    ]


def live_dump(conn) -> dict[str, list[str]]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return {table: table_dump(pg, FIXTURES_SCHEMA, table) for table in LIVE_TABLE_NAMES}


def legacy_dump(conn) -> dict[str, list[str]]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return {table: table_dump(pg, FIXTURES_SCHEMA, table) for table in LEGACY_TABLES}


def audit(conn, settings) -> list[tuple]:
    with psycopg.connect(**conn.kwargs()) as pg:
        return pg.execute(
            f'select command, status, scope from "{settings.meta_schema}".runs order by started_at'  # noqa: S608
        ).fetchall()


@pytest.fixture()
def fresh(settings, database):
    """Fixtures reloaded, metadata and dry run cleared, dry run built: every test starts from here."""
    execute(database, f'drop schema if exists "{settings.meta_schema}" cascade')
    execute(database, f'drop schema if exists "{settings.dry_run_schema}" cascade')
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    return settings, database


def promote(settings, conn, **kwargs):
    kwargs.setdefault("max_conflict_rate", EVERYTHING)
    kwargs.setdefault("users", None)
    return promoting.promote(settings, conn, confirm=no_prompt, **kwargs)


def test_full_flow_promote_verify_and_live_rows_equal_the_dry_run(fresh):
    settings, conn = fresh
    legacy_before = legacy_dump(conn)
    result = promote(settings, conn)
    assert result.created_tables
    assert result.plan == {
        "UserProfile": {"inserted": 13, "updated": 0, "deleted": 0, "unchanged": 0},
        "ContextIntent": {"inserted": 23, "updated": 0, "deleted": 0, "unchanged": 0},
    }
    with psycopg.connect(**conn.kwargs()) as pg:
        # the live rows are the dry-run rows, column for column, ids included
        mismatched = pg.execute(
            'select count(*) from migration_dry_run.profile as d full join legacy_fixtures."UserProfile" as l'
            " on d.id = l.id where row(d.user_id, d.core_values, d.beliefs, d.interaction_style, d.lifestyle,"
            " d.constraints, d.location, d.age_range, d.name, d.completeness, d.missing, d.created_at, d.updated_at)"
            ' is distinct from row(l."userId", l."coreValues", l.beliefs, l."interactionStyle", l.lifestyle,'
            ' l.constraints, l.location, l."ageRange", l.name, l.completeness, l.missing, l."createdAt",'
            ' l."updatedAt")'
        ).fetchone()[0]
        assert mismatched == 0
        intent = pg.execute(
            'select "contextType"::text, "relationshipTimeline", missing from legacy_fixtures."ContextIntent"'
            " where \"userId\" = 'u07' and \"contextType\" = 'romantic'"
        ).fetchone()
        assert intent == ("romantic", "open_to_soon", ["attractionImportance"])
        # the live "missing" is '{}', not NULL, when nothing is missing
        assert (
            pg.execute('select missing from legacy_fixtures."UserProfile" where "userId" = \'u02\'').fetchone()[0] == []
        )
        # the promote analysed the tables it filled: a partial promote's plans need their statistics
        analysed = pg.execute(
            "select c.relname, count(s.starelid) from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " left join pg_statistic as s on s.starelid = c.oid where (n.nspname, c.relname) in ("
            "('legacy_fixtures', 'UserProfile'), ('legacy_fixtures', 'ContextIntent'),"
            " ('migration_meta', 'live_snapshot')) group by c.relname"
        ).fetchall()
        assert len(analysed) == 3 and all(columns > 0 for _, columns in analysed), analysed
    checks = verify.verify(settings, conn)
    assert [c["check"] for c in checks if not c["passed"]] == []
    assert len(checks) == 10
    assert legacy_dump(conn) == legacy_before  # legacy tables byte for byte
    assert audit(conn, settings) == [("promote", "committed", "all")]


def test_promoting_the_same_dry_run_twice_gives_identical_live_tables(fresh):
    settings, conn = fresh
    promote(settings, conn)
    first = live_dump(conn)
    second_result = promote(settings, conn)
    assert live_dump(conn) == first
    assert second_result.plan["UserProfile"] == {"inserted": 0, "updated": 0, "deleted": 0, "unchanged": 13}
    assert not second_result.created_tables


def test_partial_promote_rebuilds_only_the_given_users(fresh):
    settings, conn = fresh
    promote(settings, conn)
    before = live_dump(conn)
    # the app changes two users' legacy data after the full promote
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Lisbon"}' where id = 'p02r'""")
    execute(conn, """update legacy_fixtures."Profile" set data = '{"ageRange": "50+"}' where id = 'p11s'""")
    # a full promote now refuses: the legacy data changed since the dry run
    with pytest.raises(CheckFailed, match="legacy data unchanged since the dry run"):
        promote(settings, conn)
    result = promote(settings, conn, users=["u02"])
    assert result.plan["UserProfile"] == {"inserted": 0, "updated": 1, "deleted": 0, "unchanged": 0}
    after = live_dump(conn)
    changed = set(after["UserProfile"]) ^ set(before["UserProfile"])
    assert len(changed) == 2 and all('"u02"' in row or ",u02," in row for row in changed)
    assert after["ContextIntent"] == before["ContextIntent"]  # u02's intent did not change
    with psycopg.connect(**conn.kwargs()) as pg:
        assert (
            pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u02\'').fetchone()[0]
            == "Lisbon"
        )
        # u11 changed in legacy too, but was not in scope: its live row is untouched
        assert (
            pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u11\'').fetchone()[0]
            == "Lagos"
        )
        # the rebuild's staging models are tables of the scoped user only
        scoped_users = pg.execute("select count(*), min(user_id) from migration_dry_run_users.stg_legacy__users")
        assert scoped_users.fetchone() == (1, "u02")
    # the partial rebuild kept its own dbt state: the full dry run's run results are still the full one's
    full = json.loads((settings.home / "target" / "dry_run" / "run_results.json").read_text())
    partial = json.loads((settings.home / "partial" / "target" / "dry_run" / "run_results.json").read_text())
    # both read the copy of the legacy rows their snapshot made (orchestrator/snapshot.py)
    snapshot_vars = {
        "legacy_snapshot_schema": settings.snapshot_schema,
        "review_snapshot_schema": settings.snapshot_schema,
    }
    assert full["args"].get("vars") == snapshot_vars
    # the rebuild's summary checks the conflict rate at the threshold this promote uses (1: everything)
    assert partial["args"]["vars"] == {**snapshot_vars, "user_scope": True, "max_conflict_rate": 1.0}


@pytest.mark.slow  # CI runs it on one version: which dbt nodes run: the partial rebuild runs on both versions
def test_a_partial_rebuild_runs_the_unit_tests_and_seed_checks_unless_a_full_dry_run_of_its_models_passed_them(
    fresh, tmp_path
):
    settings, conn = fresh

    def partial_rebuild(settings):
        with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
            metadata.write_user_scope(pg, settings.meta_schema, ["u02"])
            outcome = dry_run.rebuild_users(settings, conn, pg)
        if outcome.record["status"] != "built":
            raise CheckFailed(outcome.dbt.describe_failure())
        return outcome

    def unit_tests(outcome):
        return [node.status for node in outcome.dbt.nodes if node.resource_type == "unit_test"]

    def seed_checks(outcome):
        # the tests of the field map and the required fields (tag seed_checks), by name
        return {
            node.unique_id.split(".")[2]: node.status
            for node in outcome.dbt.nodes
            if node.resource_type == "test"
            and any(name in node.unique_id for name in ("field_map", "required_fields", "field_catalog"))
        }

    # the full dry run passed them with these models: the rebuild leaves them out, and runs every other test
    outcome = partial_rebuild(settings)
    assert outcome.record["status"] == "built" and unit_tests(outcome) == [] and seed_checks(outcome) == {}
    assert any(node.unique_id == "test.migration.key_accounting_reconciles" for node in outcome.dbt.nodes)
    # no full dry run of these models passed them (a model changed since, say): the rebuild runs them
    execute(conn, f"update \"{settings.meta_schema}\".dry_runs set models_version = 'older' where scope = 'all'")
    outcome = partial_rebuild(settings)
    assert outcome.record["status"] == "built" and len(unit_tests(outcome)) >= 10
    assert set(unit_tests(outcome)) == {"pass"}
    checks = seed_checks(outcome)
    assert {"field_catalog_matches_seeds", "field_map_one_kind_per_field", "unique_field_map_priority"} <= set(checks)
    assert set(checks.values()) == {"pass"}
    # ... and one failing fails the rebuild (in a copy of the project where a unit test expects a wrong row)
    ignored = shutil.ignore_patterns(".git", ".venv", ".orchestrator", "target", "node_modules")
    copy = tmp_path / "project"
    shutil.copytree(settings.project_dir, copy, ignore=ignored)
    models_yaml = copy / "models" / "intermediate" / "_intermediate__models.yml"
    right = "p1,relationshipTimeline,context_intent,relationshipTimeline,"  # the key's expected field
    wrong = "p1,relationshipTimeline,context_intent,relationshipTimelime,"
    assert right in models_yaml.read_text()
    models_yaml.write_text(models_yaml.read_text().replace(right, wrong))
    failed = r"`dbt test --select resource_type:unit_test tag:seed_checks` failed: unit_test\.migration\."
    with pytest.raises(CheckFailed, match=failed):
        partial_rebuild(dataclasses.replace(settings, project_dir=copy))
    # ... and so does a seed check (another copy, whose field map gives a Profile field a second kind)
    copy = tmp_path / "project-with-two-kinds"
    shutil.copytree(settings.project_dir, copy, ignore=ignored)
    field_map = copy / "seeds" / "lookup" / "field_map.csv"
    field_map.write_text(field_map.read_text().rstrip("\n") + "\n4000,coreValuesText,profile,,coreValues,scalar\n")
    with pytest.raises(CheckFailed, match=r"test\.migration\.field_map_one_kind_per_field \(fail\)"):
        partial_rebuild(dataclasses.replace(settings, project_dir=copy))


def test_partial_promote_refuses_unknown_users(fresh):
    settings, conn = fresh
    with pytest.raises(CheckFailed, match=r"not legacy users: 'U02', 'ghost'"):
        promote(settings, conn, users=["u02", "ghost", "U02"])


def test_gate_conflict_rate_above_threshold(fresh):
    settings, conn = fresh
    with pytest.raises(CheckFailed) as refusal:
        promote(settings, conn, max_conflict_rate=Decimal("0.05"))
    message = str(refusal.value)
    assert "gate 'conflict rate within threshold' failed" in message
    assert "38.46%" in message and "--max-conflict-rate" in message
    assert live_dump(conn) == {"UserProfile": [], "ContextIntent": []}  # nothing created
    assert audit(conn, settings) == [("promote", "refused", "all")]


def test_gate_legacy_changed_after_the_dry_run(fresh):
    settings, conn = fresh
    execute(conn, """insert into legacy_fixtures."User" (id, "updatedAt") values ('late', now())""")
    with pytest.raises(CheckFailed, match=r"User \(13 -> 14 rows"):
        promote(settings, conn)
    execute(conn, """delete from legacy_fixtures."User" where id = 'late'""")
    execute(conn, """update legacy_fixtures."ContextProfile" set "tonePreference" = 'cold' where id = 'cp02r'""")
    with pytest.raises(CheckFailed, match=r"ContextProfile \(28 -> 28 rows, contents changed\)"):
        promote(settings, conn)


def test_gate_failing_dbt_test(fresh):
    settings, conn = fresh
    # real drift: a legacy table that lost its primary key and holds a duplicate id
    execute(conn, 'alter table legacy_fixtures."User" drop constraint "User_pkey"')
    execute(conn, """insert into legacy_fixtures."User" (id, name, "updatedAt") values ('u02', 'twin', now())""")
    with pytest.raises(CheckFailed, match="stg_legacy__users"):
        dry_run.dry_run(settings, conn)
    with pytest.raises(CheckFailed, match="gate 'dry run complete, every error-severity dbt test passed' failed"):
        promote(settings, conn)


def test_gate_unreconciled_key_accounting(fresh):
    settings, conn = fresh
    # a dry run whose accounting does not reconcile (as a broken model would leave it)
    execute(
        conn,
        "update migration_dry_run.migration_summary set value = value - 1, passed = false"
        " where metric = 'keys_accounted'",
    )
    with pytest.raises(
        CheckFailed, match=r"gate 'key accounting reconciles' failed \(keys seen 98, mapped \+ unmapped 97"
    ):
        promote(settings, conn)


def key_accounting_test(settings, conn, rebuild: str | None = None):
    """Rebuild ``rebuild`` (a model) if given, then run the key accounting dbt test on the dry run."""
    from orchestrator.dbt import DbtProject

    run = DbtProject(settings, conn).full()
    if rebuild is not None:
        assert run.invoke(["run", "--select", rebuild]).success
    result = run.invoke(["test", "--select", "key_accounting_reconciles"])
    return [(node.status, node.failures) for node in result.nodes]


def test_key_accounting_test_fails_on_a_lost_key_or_log_row(fresh):
    settings, conn = fresh
    assert key_accounting_test(settings, conn) == [("pass", 0)]
    # a key the classification dropped: the blob holds one more key than were classified from it
    execute(
        conn,
        "delete from migration_dry_run.int_profile_keys_classified where (legacy_profile_id, legacy_key) ="
        " (select legacy_profile_id, legacy_key from migration_dry_run.int_profile_keys_classified"
        " where is_mapped order by 1, 2 limit 1)",
    )
    assert key_accounting_test(settings, conn, rebuild="int_legacy_profile_key_counts") == [("fail", 1)]
    dry_run.dry_run(settings, conn)
    # an unmapped key missing from the log, and a non-object blob logged twice
    execute(
        conn,
        "delete from migration_dry_run.migration_unmapped_fields where ctid ="
        " (select min(ctid) from migration_dry_run.migration_unmapped_fields where key is not null)",
    )
    execute(
        conn,
        "insert into migration_dry_run.migration_unmapped_fields"
        " select * from migration_dry_run.migration_unmapped_fields where key is null limit 1",
    )
    assert key_accounting_test(settings, conn) == [("fail", 2)]


def test_gate_no_dry_run(settings, database):
    execute(database, f'drop schema if exists "{settings.meta_schema}" cascade')
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    with pytest.raises(CheckFailed, match="run `orchestrator dry-run` first"):
        promote(settings, database)


def test_rollback_restores_the_state_before_the_last_promote(fresh):
    settings, conn = fresh
    legacy_before = legacy_dump(conn)
    promote(settings, conn)
    first = live_dump(conn)
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Lisbon"}' where id = 'p02r'""")
    dry_run.dry_run(settings, conn)
    promote(settings, conn)
    assert live_dump(conn) != first
    result = rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    assert not result.dropped and result.legacy_unchanged
    assert live_dump(conn) == first
    # the next rollback undoes the first promote, which created the tables: they are dropped
    result = rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    assert result.dropped
    assert live_dump(conn) == {"UserProfile": [], "ContextIntent": []}
    with pytest.raises(CheckFailed, match="no promote to roll back"):
        rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    legacy_after = legacy_dump(conn)
    assert legacy_after["ChatMessage"] == legacy_before["ChatMessage"]
    assert legacy_after["User"] == legacy_before["User"]


def test_rollback_drop_removes_the_new_tables(fresh):
    settings, conn = fresh
    promote(settings, conn)
    promote(settings, conn)
    result = rolling_back.rollback(settings, conn, drop=True, confirm=no_prompt)
    assert result.dropped and result.legacy_unchanged
    with psycopg.connect(**conn.kwargs()) as pg:
        assert pg.execute("select to_regclass('legacy_fixtures.\"UserProfile\"')").fetchone()[0] is None
        # the foreign keys went with the tables: "User" has no referential triggers left
        triggers = pg.execute(
            "select count(*) from pg_trigger where tgrelid = 'legacy_fixtures.\"User\"'::regclass"
        ).fetchone()[0]
        assert triggers == 0


def test_live_drift_refuses_without_force(fresh):
    settings, conn = fresh
    promote(settings, conn)
    execute(conn, """update legacy_fixtures."UserProfile" set location = 'app wrote this' where "userId" = 'u03'""")
    with pytest.raises(CheckFailed, match=r'1 rows differ: "UserProfile" 1'):
        promote(settings, conn)
    with pytest.raises(CheckFailed, match="--force"):
        rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    promote(settings, conn, force=True)
    with psycopg.connect(**conn.kwargs()) as pg:
        assert (
            pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u03\'').fetchone()[0]
            == "Paris"
        )


def test_live_drift_of_every_kind_is_found_when_the_tables_are_compared_whole(fresh):
    """A full promote first compares each live table with the snapshot as a whole (a count and a sum of row
    hashes); a row the application deleted, added or changed still makes it count the rows that differ."""
    settings, conn = fresh
    promote(settings, conn)
    intents = 'legacy_fixtures."ContextIntent"'
    first = f"(select min(id) from {intents})"
    execute(conn, f"delete from {intents} where id = {first}")  # noqa: S608 (test constants)
    with pytest.raises(CheckFailed, match=r'1 rows differ: "ContextIntent" 1'):
        promote(settings, conn)
    # the application gives a row a new id: one row gone, one added
    execute(
        conn,
        f"with moved as (delete from {intents} where id = {first} returning *)"  # noqa: S608
        f" insert into {intents} select * from moved",
    )
    execute(conn, f"update {intents} set id = 'app-' || id where id = {first}")  # noqa: S608
    execute(conn, """update legacy_fixtures."UserProfile" set name = 'app wrote this' where "userId" = 'u01'""")
    with pytest.raises(CheckFailed, match=r'4 rows differ: "UserProfile" 1, "ContextIntent" 3'):
        promote(settings, conn)
    promote(settings, conn, force=True)
    assert promote(settings, conn).plan["UserProfile"]["unchanged"] == 13  # and nothing differs any more


def snapshot_and_reads(conn, settings) -> tuple[set, set, set, set]:
    """The live snapshot as recorded and as a full refresh would record it now; the live reads and the
    dry-run state's reads."""
    meta = settings.meta_schema
    with psycopg.connect(**conn.kwargs()) as pg:
        recorded = set(pg.execute(f'select table_name, id, user_id, row_hash from "{meta}".live_snapshot').fetchall())  # noqa: S608
        now = set()
        for table in LIVE_TABLE_NAMES:
            now |= set(
                pg.execute(
                    f'select %s::text, l.id, l."userId", md5(l::text) from {FIXTURES_SCHEMA}."{table}" as l',  # noqa: S608
                    [table],
                ).fetchall()
            )
        reads = [
            set(pg.execute(f'select owner_kind, owner_id, digest from "{meta}".{state}').fetchall())  # noqa: S608
            for state in ("live_reads", "dry_run_reads")
        ]
    return recorded, now, *reads


def test_a_full_promote_rewrites_only_what_differs_and_keeps_its_records_exact(fresh):
    """A full promote of a state the live tables mostly hold writes only the rows that differ, refreshes
    the snapshot and the reads of those only, and still leaves both exactly as a full refresh would."""
    settings, conn = fresh
    promote(settings, conn)
    first = live_dump(conn)

    def versions() -> list:  # the row versions of what is kept for the users the promote does not write
        with psycopg.connect(**conn.kwargs()) as pg:
            return [
                pg.execute(
                    f'select array_agg(xmin::text order by xmin::text) from "{settings.meta_schema}".{table}'  # noqa: S608
                    f" where {column} <> 'u02'"
                ).fetchone()[0]
                for table, column in (("live_snapshot", "user_id"), ("live_reads", "owner_id"))
            ]

    kept = versions()
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Lisbon"}' where id = 'p02r'""")
    dry_run.dry_run(settings, conn)
    result = promote(settings, conn)
    assert result.plan["UserProfile"] == {"inserted": 0, "updated": 1, "deleted": 0, "unchanged": 12}
    assert versions() == kept  # not rewritten
    with psycopg.connect(**conn.kwargs()) as pg:
        backed_up = pg.execute(
            f"select distinct row_data->>'userId' from \"{settings.meta_schema}\".run_backups where run_id = %s",  # noqa: S608
            [result.run_id],
        ).fetchall()
        reads_backed_up = pg.execute(
            f'select owner_id from "{settings.meta_schema}".run_read_backups where run_id = %s',  # noqa: S608
            [result.run_id],
        ).fetchall()
    assert [user for (user,) in backed_up] == ["u02"]  # the only user whose rows changed
    assert [owner for (owner,) in reads_backed_up] == ["u02"]
    recorded, now, live_reads, dry_run_reads = snapshot_and_reads(conn, settings)
    assert recorded == now
    assert live_reads == dry_run_reads
    # an application write overwritten with --force: the snapshot records the rows as the promote left them
    execute(conn, """update legacy_fixtures."UserProfile" set location = 'app wrote this' where "userId" = 'u03'""")
    promote(settings, conn, force=True)
    recorded, now, _, _ = snapshot_and_reads(conn, settings)
    assert recorded == now
    # its rollback puts the application's row back, and the snapshot follows
    rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    recorded, now, _, _ = snapshot_and_reads(conn, settings)
    assert recorded == now
    with psycopg.connect(**conn.kwargs()) as pg:
        location = pg.execute('select location from legacy_fixtures."UserProfile" where "userId" = \'u03\'').fetchone()
    assert location == ("app wrote this",)
    assert live_dump(conn) != first


def test_a_run_that_died_is_reported_by_the_next(fresh):
    settings, conn = fresh
    promote(settings, conn)
    execute(
        conn,
        f"""insert into "{settings.meta_schema}".runs (run_id, command, status, os_user, live_schema, scope)
                      values ('dead1', 'promote', 'started', 'someone', 'legacy_fixtures', 'all')""",
    )
    result = promote(settings, conn)
    assert [run["run_id"] for run in result.dead_runs] == ["dead1"]
    assert ("promote", "died", "all") in audit(conn, settings)


def test_concurrent_promote_is_refused_clearly(fresh):
    settings, conn = fresh
    with psycopg.connect(**conn.kwargs(), autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", [locks.LOCK_KEY])
        with pytest.raises(Exception, match="another promote, sync round or rollback is running"):
            promote(settings, conn)


def test_report_files_are_private_and_stable(fresh, tmp_path):
    settings, conn = fresh
    first = reports.write(settings, conn, "csv", tmp_path / "a")
    second = reports.write(settings, conn, "csv", tmp_path / "b")
    assert [p.name for p in first] == [
        "migration_summary.csv",
        "migration_conflicts.csv",
        "migration_unmapped_fields.csv",
    ]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
        assert stat.S_IMODE(os.stat(a).st_mode) == 0o600
    conflicts = (tmp_path / "a" / "migration_conflicts.csv").read_text().splitlines()
    assert conflicts[0] == "user_id,context_type,field,values,chosen,decided_by"
    assert conflicts[1] == 'u04,,beliefs.religion,"[""atheist"", ""catholic""]","""atheist""",first_value'
    for fmt in ("json", "md"):
        for path in reports.write(settings, conn, fmt, tmp_path / fmt):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- the CLI ---------------------------------------------------------------------------------------


@pytest.fixture()
def cli(fresh, cli_env):
    settings, conn = fresh
    return {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}


def test_cli_promote_without_terminal_or_yes_exits_2(cli):
    result = invoke(["promote"], cli)
    assert result.exit_code == 2
    assert "use --yes" in result.output


def test_cli_gate_refusal_exits_1_and_names_the_gate(cli):
    result = invoke(["promote", "--yes"], cli)
    assert result.exit_code == 1
    assert "gate 'conflict rate within threshold' failed" in result.output


def test_cli_answering_no_changes_nothing(cli, monkeypatch, fresh):
    monkeypatch.setattr("orchestrator.console.interactive", lambda: True)
    result = invoke(["promote", "--max-conflict-rate", "0.5"], cli, input="n\n")
    assert result.exit_code == 1, result.output
    assert "insert" in result.output  # the plan was shown before asking
    assert "Promote these changes? [y/N]: n" in result.output
    assert result.output.endswith("Error: nothing was changed\n")
    assert live_dump(fresh[1]) == {"UserProfile": [], "ContextIntent": []}


def test_cli_full_flow(cli, tmp_path):
    promoted = invoke(["promote", "--yes", "--max-conflict-rate", "0.5"], cli)
    assert promoted.exit_code == 0, promoted.output
    assert re.search(r"^Promoted \(all users\) into schema legacy_fixtures: run \S+ \(created the live tables\)\.$",
                     promoted.output, re.MULTILINE), promoted.output  # fmt: skip
    verified = invoke(["verify"], cli)
    assert verified.exit_code == 0, verified.output
    assert "Verification of the live tables in schema legacy_fixtures" in verified.output
    assert "pass" in verified.output and "FAIL" not in verified.output
    reported = invoke(["report", "--format", "json", "--out", str(tmp_path)], cli)
    assert reported.exit_code == 0 and (tmp_path / "migration_conflicts.json").exists()
    assert f"Wrote {tmp_path / 'migration_conflicts.json'}" in reported.output
    history = invoke(["runs", "--json"], cli)
    assert '"status": "committed"' in history.output
    users_file = tmp_path / "ids.txt"
    users_file.write_text("u03\n\n# a comment\nu03\n  u04  \n")
    partial = invoke(["promote", "--yes", "--max-conflict-rate", "1", "--users-file", str(users_file)], cli)
    assert partial.exit_code == 0, partial.output
    assert "Promoted (2 users)" in partial.output
    unknown = invoke(["promote", "--yes", "--user", "nobody-here"], cli)
    assert unknown.exit_code == 1 and "not legacy users" in unknown.output
    rolled = invoke(["rollback", "--yes"], cli)
    assert rolled.exit_code == 0 and "Legacy tables verified unchanged" in rolled.output


@pytest.mark.slow  # CI runs it on one version: rollback runs on both versions in the tests above
def test_rollback_survives_the_legacy_schema_being_recreated(fresh):
    """Backups must not depend on the legacy schema's types: reloading the fixtures drops the enum
    "RelationshipContextType" with its schema, and the metadata (kept) must still restore exactly."""
    settings, conn = fresh
    promote(settings, conn)
    fixtures.load(settings, conn, FIXTURES_SCHEMA)  # drops and recreates the schema, live tables and enum included
    dry_run.dry_run(settings, conn)
    promote(settings, conn)
    before_change = live_dump(conn)
    execute(
        conn,
        """update legacy_fixtures."Profile" set data = data || '{"friendshipDepth": "best_friend"}'
                     where id = 'p03f'""",
    )
    dry_run.dry_run(settings, conn)
    promote(settings, conn)
    assert live_dump(conn) != before_change
    rolling_back.rollback(settings, conn, drop=False, confirm=no_prompt)
    assert live_dump(conn) == before_change


def test_promote_fails_clearly_when_the_app_holds_a_live_table(fresh):
    settings, conn = fresh
    promote(settings, conn)
    execute(conn, """update legacy_fixtures."Profile" set data = data || '{"location": "Rome"}' where id = 'p02r'""")
    dry_run.dry_run(settings, conn)
    before = live_dump(conn)
    with psycopg.connect(**conn.kwargs()) as app_session:
        app_session.execute('lock table legacy_fixtures."UserProfile" in access exclusive mode')
        with pytest.raises(Exception, match=r"could not lock .* within 1s .*nothing was changed"):
            promote(settings, conn, lock_timeout="1s")  # the plan reads the live table: it must not queue
    assert live_dump(conn) == before
    assert audit(conn, settings) == [("promote", "committed", "all")]  # refused before it acted
