"""Benchmark a live application's cutover (spec §10; docs/cutover.md): what following the writes costs,
with the change stream (orchestrator/stream.py) and with the digests it falls back to, side by side.

On a generated legacy schema (`orchestrator generate --users N --schema S` first), with the real CLI in
subprocesses, one after the other:
  1. `orchestrator dry-run` (timed; where the server offers it, it makes the change stream's slot), then,
     in-process, the digests of every owner (what a round without the stream reads) and a legacy
     fingerprint (for scale);
  2. `orchestrator promote --yes --max-conflict-rate 1` (creates the live tables);
  3. a 10-user `promote --user` (timed);
  4. the blobs of `--changed` users (default 100) updated, then `orchestrator sync --yes` (timed), twice,
     and a round with nothing changed; then the same with MIGRATION_CHANGE_SOURCE=digests;
  5. a new review (`orchestrator dry-run --max-conflict-rate 1`), a plain `orchestrator promote --yes`
     of it on the existing live tables (a full promote: every row compared, none written), then the blobs
     of `--catch-up-changed` users (default 1,000) updated and `orchestrator promote --catch-up --yes`
     (timed), with the stream, then again with the digests: the catch-up's cost over a full promote.
The server is the one the PG* variables name, else the project's embedded server under
ORCHESTRATOR_HOME. The figures are merged into docs/benchmarks-live.json (the latest per server and
size; benchmarks/live_report.py) and docs/benchmarks.md is rendered again
(`benchmarks/run_benchmark.py --render-only`).

Example:
    ORCHESTRATOR_HOME=/tmp/bench .venv/bin/orchestrator generate --users 1000000 --schema legacy_1m
    ORCHESTRATOR_HOME=/tmp/bench .venv/bin/python benchmarks/live_app.py --schema legacy_1m
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import live_report
from psycopg import sql

from orchestrator import changes, db, fingerprint

PROJECT = Path(__file__).resolve().parents[1]
DIGESTS = {"MIGRATION_CHANGE_SOURCE": "digests"}


def cli(args: list[str], env: dict[str, str], log: Path) -> float:
    """Run `orchestrator ARGS`; its wall time in seconds (it must succeed)."""
    started = time.monotonic()
    with open(log, "a") as handle:
        handle.write(f"\n$ orchestrator {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            cwd=PROJECT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    seconds = round(time.monotonic() - started, 2)
    if done.returncode != 0:
        raise SystemExit(f"`orchestrator {' '.join(args)}` exited {done.returncode}: see {log}")
    print(f"  orchestrator {' '.join(args)}: {seconds} s", flush=True)
    return seconds


def timed(action) -> float:
    started = time.monotonic()
    action()
    return round(time.monotonic() - started, 2)


def change_blobs(pg, schema: str, users: int, salt: str) -> int:
    """Update one legacy Profile of each of ``users`` users (the first by id): what the app does on a chat."""
    return pg.execute(
        sql.SQL(
            "update {profiles} as p"
            " set data = coalesce(p.data, '{{}}'::jsonb) || jsonb_build_object('location', %s::text)"
            " where p.id in (select min(p2.id) from {profiles} as p2"
            ' join {contexts} as cp on cp.id = p2."contextProfileId"'
            ' where cp."userId" in (select id from {users} order by id limit %s) group by cp."userId")'
        ).format(
            profiles=sql.Identifier(schema, "Profile"),
            contexts=sql.Identifier(schema, "ContextProfile"),
            users=sql.Identifier(schema, "User"),
        ),
        [f"moved-{salt}", users],
    ).rowcount


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True, help="the generated legacy schema")
    parser.add_argument("--changed", type=int, default=100, help="users changed before each sync round")
    parser.add_argument("--catch-up-changed", type=int, default=1000, help="users changed before the catch-up")
    parser.add_argument("--log", type=Path, default=Path("live_app.log"), help="the CLI runs' output")
    args = parser.parse_args()

    settings = db.load_settings(legacy_schema=args.schema)
    conn = db.server(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGRATION_", "DBT_ENV_SECRET"))}
    env.update(MIGRATION_LEGACY_SCHEMA=args.schema, PYTHONUNBUFFERED="1", DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    digests = {**env, **DIGESTS}
    log = args.log
    result: dict = {"schema": args.schema, "changed": args.changed, "catch_up_changed": args.catch_up_changed}
    with db.connect(conn, autocommit=True) as pg:
        result["users"] = pg.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(args.schema, "User"))
        ).fetchone()[0]
        result["server"] = pg.execute("show server_version").fetchone()[0]
        result["wal_level"] = pg.execute("show wal_level").fetchone()[0]
        for schema in (settings.dry_run_schema, settings.meta_schema, settings.partial_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        for table in ("ContextIntent", "UserProfile"):
            pg.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(args.schema, table)))
    print(f"{result['users']:,} users, PostgreSQL {result['server']}, wal_level {result['wal_level']}", flush=True)

    result["dry_run"] = cli(["dry-run"], env, log)
    with db.connect(conn, autocommit=True) as pg:
        result["digests_take"] = timed(lambda: changes.take(pg, args.schema, settings.meta_schema))
        result["fingerprint"] = timed(lambda: fingerprint.legacy_fingerprint(pg, args.schema))
    result["promote_create"] = cli(["promote", "--yes", "--max-conflict-rate", "1"], env, log)
    with db.connect(conn, autocommit=True) as pg:
        users = [
            row[0]
            for row in pg.execute(
                sql.SQL("select id from {} order by id limit 10").format(sql.Identifier(args.schema, "User"))
            )
        ]
    partial = ["promote", "--yes", "--max-conflict-rate", "1"] + [arg for user in users for arg in ("--user", user)]
    result["partial_promote_10"] = cli(partial, env, log)

    for source, round_env in (("stream", env), ("digests", digests)):
        rounds = []
        for round_number in range(2):
            with db.connect(conn, autocommit=True) as pg:
                changed = change_blobs(pg, args.schema, args.changed, f"sync-{source}-{round_number}")
            rounds.append({"changed_profiles": changed, "seconds": cli(["sync", "--yes"], round_env, log)})
        result[f"sync_rounds_{source}"] = rounds
        result[f"sync_nothing_{source}"] = cli(["sync", "--yes"], round_env, log)

    cli(["dry-run", "--max-conflict-rate", "1"], env, log)
    result["promote_full"] = cli(["promote", "--yes"], env, log)
    for source, round_env in (("stream", env), ("digests", digests)):
        with db.connect(conn, autocommit=True) as pg:
            result[f"catch_up_changed_profiles_{source}"] = change_blobs(
                pg, args.schema, args.catch_up_changed, f"catch-up-{source}"
            )
        result[f"promote_catch_up_{source}"] = cli(["promote", "--catch-up", "--yes"], round_env, log)

    live_report.save(result)
    print("\n".join(live_report.render_section(live_report.load())), flush=True)
    subprocess.run([sys.executable, str(PROJECT / "benchmarks" / "run_benchmark.py"), "--render-only"], check=True)


if __name__ == "__main__":
    main()
