"""Benchmark a live application's cutover (spec §10; docs/cutover.md): what following the writes costs.

On a generated legacy schema (`orchestrator generate --users N --schema S` first), with the real CLI in
subprocesses, one after the other:
  1. `orchestrator dry-run` (timed), then, in-process, what it spent recording its reads (the per-owner
     digests and their copy into the metadata) against a legacy fingerprint (for scale);
  2. `orchestrator promote --yes --max-conflict-rate 1` (creates the live tables);
  3. the change scan alone (digests now + the owners changed since the live tables' reads: nothing), and
     a 10-user partial promote (the partial rebuild the scan feeds), both timed;
  4. the blobs of `--changed` users (default 100) updated, then `orchestrator sync --yes` (timed), twice;
  5. a new review (`orchestrator dry-run --max-conflict-rate 1`), a plain `orchestrator promote --yes`
     of it on the existing live tables (a full promote: every row compared, none written), then the blobs
     of `--catch-up-changed` users (default 1,000) updated and `orchestrator promote --catch-up --yes`
     (timed): the catch-up's cost over a full promote.
The server is the one the PG* variables name, else the project's embedded server under
ORCHESTRATOR_HOME. The figures are merged into docs/benchmarks-live.json (the latest per server and
size) and docs/benchmarks.md is rendered again (benchmarks/run_benchmark.py renders this section from
that file, `--render-only` too).

Example:
    ORCHESTRATOR_HOME=/tmp/bench .venv/bin/orchestrator generate --users 1000000 --schema legacy_1m
    ORCHESTRATOR_HOME=/tmp/bench .venv/bin/python benchmarks/live_app.py --schema legacy_1m
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from psycopg import sql

from orchestrator import changes, db, fingerprint, metadata

PROJECT = Path(__file__).resolve().parents[1]
LIVE_JSON = PROJECT / "docs" / "benchmarks-live.json"


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
    log = args.log
    result: dict = {"schema": args.schema, "changed": args.changed, "catch_up_changed": args.catch_up_changed}
    with db.connect(conn, autocommit=True) as pg:
        result["users"] = pg.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(args.schema, "User"))
        ).fetchone()[0]
        result["server"] = pg.execute("show server_version").fetchone()[0]
        for schema in (settings.dry_run_schema, settings.meta_schema, settings.partial_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        for table in ("ContextIntent", "UserProfile"):
            pg.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(args.schema, table)))
    print(f"{result['users']:,} users, PostgreSQL {result['server']}", flush=True)

    result["dry_run"] = cli(["dry-run"], env, log)
    with db.connect(conn, autocommit=True) as pg:
        result["reads_take"] = timed(lambda: changes.take(pg, args.schema, settings.meta_schema))
        result["reads_record"] = timed(
            lambda: changes.replace(pg, settings.meta_schema, "dry_run", sql.Identifier(changes.NOW))
        )
        result["fingerprint"] = timed(lambda: fingerprint.legacy_fingerprint(pg, args.schema))
    result["promote_create"] = cli(["promote", "--yes", "--max-conflict-rate", "1"], env, log)

    with db.connect(conn, autocommit=True) as pg:
        metadata.ensure(pg, settings.meta_schema)

        def scan() -> None:
            now = changes.take(pg, args.schema, settings.meta_schema)
            changes.changed_since(pg, settings.meta_schema, "live", now)

        result["change_scan"] = timed(scan)
        users = [
            row[0]
            for row in pg.execute(
                sql.SQL("select id from {} order by id limit 10").format(sql.Identifier(args.schema, "User"))
            )
        ]
    partial = ["promote", "--yes", "--max-conflict-rate", "1"] + [arg for user in users for arg in ("--user", user)]
    result["partial_promote_10"] = cli(partial, env, log)

    result["sync_rounds"] = []
    for round_number in range(2):
        with db.connect(conn, autocommit=True) as pg:
            changed = change_blobs(pg, args.schema, args.changed, f"sync-{round_number}")
        result["sync_rounds"].append({"changed_profiles": changed, "seconds": cli(["sync", "--yes"], env, log)})

    cli(["dry-run", "--max-conflict-rate", "1"], env, log)
    result["promote_full"] = cli(["promote", "--yes"], env, log)
    with db.connect(conn, autocommit=True) as pg:
        result["catch_up_changed_profiles"] = change_blobs(pg, args.schema, args.catch_up_changed, "catch-up")
    result["promote_catch_up"] = cli(["promote", "--catch-up", "--yes"], env, log)

    save(result)
    print("\n".join(render_section(load())), flush=True)
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    import run_benchmark

    run_benchmark.render(run_benchmark.load_results())


def load() -> list[dict]:
    return json.loads(LIVE_JSON.read_text()) if LIVE_JSON.exists() else []


def save(result: dict) -> None:
    """Keep the latest result per server version and size."""
    kept = [r for r in load() if (r["server"], r["users"]) != (result["server"], result["users"])]
    kept.append(result)
    kept.sort(key=lambda r: (r["server"], r["users"]))
    LIVE_JSON.write_text(json.dumps(kept, indent=2) + "\n")


def render_section(results: list[dict]) -> list[str]:
    """docs/benchmarks.md's section on a live application (spec §10), from docs/benchmarks-live.json."""
    if not results:
        return []
    lines = [
        "",
        "## A live application (`promote --catch-up`, `sync`)",
        "",
        "Measured by `benchmarks/live_app.py` on a generated schema (see its docstring), the real CLI in",
        "subprocesses, one after the other on the same server, on 2 cores with nothing else running; compare",
        "figures of one row rather than across rows (each row is one run). *Reads* is what a dry run spends",
        "recording what it read per user (the digests, then their copy into the metadata), against a",
        "legacy fingerprint for scale; the change scan is the digests now plus the comparison, against",
        "the 10-user partial promote the scan feeds; a sync round follows updates of one Profile of each of",
        "the users changed; the catch-up is `promote --catch-up` after that many users changed, against a",
        "full promote of the same dry run (every row compared, none written).",
        "",
        "| users | server | dry run | reads (% of the dry run) | fingerprint | change scan / partial |"
        " sync after N changed | full promote / catch-up (M changed) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        reads = r["reads_take"] + r["reads_record"]
        syncs = ", ".join(f"{x['seconds']} s" for x in r["sync_rounds"])
        lines.append(
            f"| {r['users']:,} | {r['server']} | {r['dry_run']} s | {reads:.1f} s ({100 * reads / r['dry_run']:.1f}%)"
            f" | {r['fingerprint']} s | {r['change_scan']} s / {r['partial_promote_10']} s"
            f" | N = {r['changed']}: {syncs} | {r['promote_full']} s / {r['promote_catch_up']} s"
            f" (M = {r['catch_up_changed']}, +{r['promote_catch_up'] - r['promote_full']:.1f} s) |"
        )
    return lines + [""]


if __name__ == "__main__":
    main()
