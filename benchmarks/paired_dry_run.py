"""Is the dry run of one checkout slower than another's? Paired, alternating runs on one database.

Runs `orchestrator dry-run` of checkout A, then of checkout B, and so on, ``--rounds`` times each, on
the same legacy schema of the same server (the one the PG* variables name), each checkout with its own
venv and its own ORCHESTRATOR_HOME (dbt state), and prints each run's wall time, the medians and their
ratio. Alternating puts both under the same load on a shared machine; the median of each resists one
slow run. Each checkout needs a venv with the project installed (`python3 -m venv .venv && .venv/bin/pip
install -e .`).

Example (the code before and after a refactoring, on a 1M-user schema):
    git worktree add --detach /tmp/before <commit>   # + its venv
    PGHOST=... PGPORT=... PGUSER=... PGPASSWORD=... PGDATABASE=... \\
        .venv/bin/python benchmarks/paired_dry_run.py --schema legacy_1m --a /tmp/before --b . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--a", type=Path, required=True, help="the first checkout (e.g. before a change)")
    parser.add_argument("--b", type=Path, required=True, help="the second checkout (e.g. after it)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    if not os.environ.get("PGHOST"):
        raise SystemExit("set PGHOST (and PGPORT, PGUSER, PGPASSWORD, PGDATABASE): both checkouts use that server")
    homes = {name: Path(tempfile.mkdtemp(prefix=f"paired-{name}-")) for name in ("a", "b")}
    times: dict[str, list[float]] = {"a": [], "b": []}
    log_path = Path(tempfile.mkdtemp(prefix="paired-log-")) / "dry_runs.log"
    with open(log_path, "a") as log:
        for round_number in range(1, args.rounds + 1):
            for name in ("a", "b"):
                seconds = dry_run(getattr(args, name).resolve(), homes[name], args.schema, log)
                times[name].append(seconds)
                print(f"round {round_number}: {name} ({getattr(args, name)}) {seconds} s", flush=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "schema": args.schema,
        "a": str(args.a),
        "b": str(args.b),
        "seconds": times,
        "median": medians,
        "b_over_a": round(medians["b"] / medians["a"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
