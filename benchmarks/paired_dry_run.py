"""Is the dry run of one checkout slower than another's? Paired, alternating runs on one database.

Runs `orchestrator dry-run` of checkout A, then of checkout B, and so on, ``--rounds`` times each, on
the same legacy schema of the same server (the one the PG* variables name), each checkout with its own
venv and its own ORCHESTRATOR_HOME (dbt state), and prints each run's wall time, the medians and their
ratio. Alternating puts both under the same load on a shared machine; the median of each resists one
slow run. Each checkout needs a venv with the project installed (`python3 -m venv .venv && .venv/bin/pip
install -e .`).

After each dry run it also hashes every output table of the dry-run schema (the marts and the seeds: what
other tools read; not the intermediate and staging relations, whose columns a refactoring may change):
the row count and the sums of two pieces of each row's md5, free of the rows' order. The two checkouts
must give the same digest for every table, run after run (a refactoring that changes no output row); the
script says which tables differ and exits 1 if any does. `--no-compare` skips the hashing.

Example (the code before and after a refactoring, on a 1M-user schema):
    git worktree add --detach /tmp/before <commit>   # + its venv
    PGHOST=... PGPORT=... PGUSER=... PGPASSWORD=... PGDATABASE=... \\
        .venv/bin/python benchmarks/paired_dry_run.py --schema legacy_1m --a /tmp/before --b . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

DRY_RUN_SCHEMA = os.environ.get("MIGRATION_DRY_RUN_SCHEMA", "migration_dry_run")
NOT_OUTPUTS = re.compile(r"^(int_|stg_)|__batch_[0-9]+$")


def dry_run(checkout: Path, home: Path, schema: str, log) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGRATION_", "ORCHESTRATOR_"))}
    env.update(MIGRATION_LEGACY_SCHEMA=schema, ORCHESTRATOR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    started = time.monotonic()
    done = subprocess.run(
        [str(checkout / ".venv" / "bin" / "orchestrator"), "dry-run"],
        env=env,
        cwd=checkout,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):  # 1: built, a check failed (the data's, not the code's)
        raise SystemExit(f"the dry run of {checkout} exited {done.returncode}: see {log.name}")
    return round(seconds, 1)


def output_digests(schema: str) -> dict[str, str]:
    """table -> digest of its rows (md5 of each row's text, sorted, hashed again): the output tables and views
    of the dry-run schema ``schema``."""
    with psycopg.connect(autocommit=True) as pg:
        names = [
            name
            for (name,) in pg.execute(
                "select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relkind in ('r', 'v', 'm') order by c.relname",
                [schema],
            ).fetchall()
            if not NOT_OUTPUTS.search(name)
        ]
        # the sums of two 60-bit pieces of each row's md5: free of the rows' order, and no 1 GB string of
        # hashes for a view of 27M keys (numeric sums do not overflow)
        digest = sql.SQL(
            "select count(*) || ':' || coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0)"
            " || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint), 0)"
            " from (select md5(t::text) as h from {} as t) as rows"
        )
        return {name: pg.execute(digest.format(sql.Identifier(schema, name))).fetchone()[0] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--a", type=Path, required=True, help="the first checkout (e.g. before a change)")
    parser.add_argument("--b", type=Path, required=True, help="the second checkout (e.g. after it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    parser.add_argument("--no-compare", action="store_true", help="do not hash the output tables after each run")
    args = parser.parse_args()
    if not os.environ.get("PGHOST"):
        raise SystemExit("set PGHOST (and PGPORT, PGUSER, PGPASSWORD, PGDATABASE): both checkouts use that server")
    homes = {name: Path(tempfile.mkdtemp(prefix=f"paired-{name}-")) for name in ("a", "b")}
    times: dict[str, list[float]] = {"a": [], "b": []}
    digests: dict[str, list[dict[str, str]]] = {"a": [], "b": []}
    log_path = Path(tempfile.mkdtemp(prefix="paired-log-")) / "dry_runs.log"
    with open(log_path, "a") as log:
        for round_number in range(1, args.rounds + 1):
            for name in ("a", "b"):
                seconds = dry_run(getattr(args, name).resolve(), homes[name], args.schema, log)
                times[name].append(seconds)
                print(f"round {round_number}: {name} ({getattr(args, name)}) {seconds} s", flush=True)
                if not args.no_compare:
                    digests[name].append(output_digests(DRY_RUN_SCHEMA))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "schema": args.schema,
        "a": str(args.a),
        "b": str(args.b),
        "seconds": times,
        "median": medians,
        "b_over_a": round(medians["b"] / medians["a"], 3),
    }
    differing = []
    if not args.no_compare:
        runs = [run for checkout in ("a", "b") for run in digests[checkout]]
        tables = sorted({table for run in runs for table in run})
        # a table missing from a run (None) differs too
        differing = [table for table in tables if len({run.get(table) for run in runs}) > 1]
        result["output_tables"] = {table: runs[0].get(table) for table in tables}
        result["output_tables_differing"] = differing
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if differing:
        raise SystemExit(f"the output tables differ between the runs: {', '.join(differing)}")


if __name__ == "__main__":
    main()
