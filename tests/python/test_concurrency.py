"""Concurrency (docs/reliability.md, "Concurrency"), on a real server: a second promote or rollback
while one runs, two promotes started together, a dry run rebuilt (by hand, or by a real dry run)
while a promote runs, and a dry run that has not finished.

A promote is stopped inside its transaction with a ``pause`` fault (orchestrator/faults.py) while the
test acts from another process or connection.
"""

from __future__ import annotations

import re
import threading

import psycopg
import pytest
from helpers import PROMOTE_ARGS, query, run_cli, start_cli, wait_for
from psycopg import sql

from orchestrator import dry_run, faults
from orchestrator.config import ConnInfo
from orchestrator.errors import OrchestratorError


def test_a_second_promote_or_rollback_refuses_while_one_runs(stage, tmp_path):
    stage.go("old")
    runs_before = stage.audit()
    seen = {}

    def meanwhile(_process):
        second = run_cli(PROMOTE_ARGS, stage.env)
        seen["promote"] = second
        with pytest.raises(OrchestratorError, match="another promote, sync round or rollback is running") as refused:
            stage.rollback()
        seen["rollback"] = str(refused.value)
        seen["live"] = stage.live()  # the first promote has not committed: no reader sees half of it

    # the first promote stands inside its transaction, between deleting and re-inserting rows
    first = run_cli(PROMOTE_ARGS, stage.env, fault="promote:mid-write:pause", fault_dir=tmp_path, on_pause=meanwhile)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"Promoted (all users) into schema {stage.settings.live_schema}: run " in first.stdout, (
        first.stdout + first.stderr
    )
    second = seen["promote"]
    assert second.returncode == 2
    assert re.match(
        r"Error: another promote, sync round or rollback is running on this database "
        r"\(orchestrator promote, pid \d+, since "
        r"\d\d:\d\d:\d\d\): wait for it to finish, then retry",
        second.stderr,
    ), second.stderr
    assert seen["live"] == stage.old
    assert stage.state() == "new"
    assert [(c, s) for _, c, s in stage.audit() if (_, c, s) not in runs_before] == [("promote", "committed")]


def test_two_promotes_started_together_never_interleave(stage):
    stage.go("old")
    runs_before = stage.audit()
    processes = [start_cli(PROMOTE_ARGS, stage.env) for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in processes]
    results = [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]
    for code, out, err in results:
        if code == 0:
            assert f"Promoted (all users) into schema {stage.settings.live_schema}: run " in out, out + err
        else:
            assert code == 2 and "another promote, sync round or rollback is running" in err, out + err
    committed = [run for run in stage.audit() if run not in runs_before]
    assert [(c, s) for _, c, s in committed] == [("promote", "committed")] * sum(r[0] == 0 for r in results)
    assert stage.state() == "new"


def swap_in_dry_run_table(conn: ConnInfo, schema: str, table: str, change: str) -> None:
    """What dbt's table materialization does: build `<table>__dbt_tmp`, then in one transaction rename the
    old table to `<table>__dbt_backup` and the new one into place (the old one is kept here, to put back)."""
    with psycopg.connect(**conn.kwargs()) as pg:
        tmp = sql.Identifier(schema, f"{table}__dbt_tmp")
        pg.execute(sql.SQL("create table {} as select * from {}").format(tmp, sql.Identifier(schema, table)))
        pg.execute(sql.SQL(change).format(tmp))
        pg.execute(
            sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(schema, table), sql.Identifier(f"{table}__dbt_backup")
            )
        )
        pg.execute(sql.SQL("alter table {} rename to {}").format(tmp, sql.Identifier(table)))


def put_back_dry_run_table(conn: ConnInfo, schema: str, table: str) -> None:
    with psycopg.connect(**conn.kwargs()) as pg:
        pg.execute(sql.SQL("drop table {}").format(sql.Identifier(schema, table)))
        pg.execute(
            sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(schema, f"{table}__dbt_backup"), sql.Identifier(table)
            )
        )


def test_dry_run_tables_replaced_after_the_gates_are_refused(stage, tmp_path):
    """A dbt build replacing the dry-run tables between the gates and the write (here: by hand, with
    other content) makes promote refuse: it writes only the very tables the gated dry run built."""
    stage.go("old")
    schema = stage.settings.dry_run_schema

    def rebuild_by_hand(_process):
        swap_in_dry_run_table(stage.conn, schema, "profile", "update {} set location = 'not gated'")

    try:
        result = run_cli(
            PROMOTE_ARGS, stage.env, fault="promote:started:pause", fault_dir=tmp_path, on_pause=rebuild_by_hand
        )
    finally:
        put_back_dry_run_table(stage.conn, schema, "profile")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"the tables in schema {schema} are not the ones dry run" in result.stderr
    assert stage.state() == "old"
    assert stage.audit()[-1][1:] == ("promote", "refused")


def test_a_dry_run_rebuilt_while_promote_writes_waits_and_cannot_corrupt_it(stage, tmp_path):
    """A real dry run started while promote is inside its transaction: dbt's rename waits for the commit,
    the promote writes exactly the gated dry run, and a third dry run meanwhile is refused."""
    stage.go("old")
    schema = stage.settings.dry_run_schema
    fault = "promote:mid-write:pause"
    outcome = {}

    def meanwhile():
        try:
            # dbt has built its new tables and waits to rename them into place
            outcome["waited"] = wait_for(
                lambda: (
                    query(
                        stage.conn,
                        "select count(*) from pg_locks as l join pg_class as c on c.oid = l.relation"
                        " join pg_namespace as n on n.oid = c.relnamespace where not l.granted and n.nspname = %s",
                        [schema],
                    )[0][0]
                    > 0
                ),
                240,  # dbt builds every intermediate model first: generous for a loaded 2-core CI
                "the dry run to wait on the promote's lock",
            )
            try:
                dry_run.dry_run(stage.settings, stage.conn)
            except OrchestratorError as exc:
                outcome["third"] = str(exc)
        finally:
            faults.marker_paths(fault.rpartition(":")[0], tmp_path)[1].touch()  # let the promote go on

    def rebuild(_process):
        helper = threading.Thread(target=meanwhile)
        helper.start()
        try:
            outcome["record"] = dry_run.dry_run(stage.settings, stage.conn).record  # waits for the commit
        finally:
            helper.join(timeout=120)

    result = run_cli(PROMOTE_ARGS, stage.env, fault=fault, fault_dir=tmp_path, on_pause=rebuild)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Promoted (all users) into schema {stage.settings.live_schema}: run " in result.stdout, (
        result.stdout + result.stderr
    )
    assert "another dry run is building on this database" in outcome["third"]
    assert outcome["record"]["status"] == "built"
    assert stage.state() == "new"  # exactly the gated dry run, not a mix
    # the rebuilt dry run (same models, same legacy data) is promotable in turn: nothing to change
    assert stage.promote().plan["UserProfile"]["updated"] == 0
