"""What one snapshot of the legacy tables costs (orchestrator/snapshot.py, spec §10): time and disk.

Takes a full dry run's snapshot of a generated legacy schema (snapshot.take_all: the copy of "User",
"ContextProfile", "Profile" and the narrow "ChatMessage", the digests of the same moment, the copy's
indexes and the fingerprint of it) ``--rounds`` times, and prints the median seconds (and of the
fingerprint alone) and the size of the copy beside the size of the legacy tables it copies. The server
is the one the PG* variables name.

Example (after `orchestrator generate --users 1000000 --schema legacy_1m`, `eval "$(orchestrator db env)"`):
    .venv/bin/python benchmarks/snapshot_cost.py --schema legacy_1m --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import psycopg
from psycopg import sql

from orchestrator import fingerprint, metadata, snapshot
from orchestrator.config import Settings, external_conninfo


def sizes(pg: psycopg.Connection, schema: str) -> dict[str, int]:
    """Bytes of each snapshot table (heap, TOAST and indexes) in ``schema``."""
    return dict(
        pg.execute(
            "select c.relname, pg_total_relation_size(c.oid) from pg_class as c"
            " join pg_namespace as n on n.oid = c.relnamespace where n.nspname = %s and c.relname = any(%s)",
            [schema, list(snapshot.TABLES)],
        ).fetchall()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True, help="the generated legacy schema")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="also write the figures here (JSON)")
    args = parser.parse_args()
    if not os.environ.get("PGHOST"):
        raise SystemExit("set PGHOST (and PGPORT, PGUSER, PGPASSWORD, PGDATABASE)")
    settings = dataclasses.replace(
        Settings.load(legacy_schema=args.schema),
        dry_run_schema="snapshot_cost_dry_run",
        meta_schema="snapshot_cost_meta",
    )
    parts: dict[str, list[float]] = {"snapshot": [], "of which the fingerprint": []}
    with psycopg.connect(**external_conninfo().kwargs(), autocommit=True) as pg:
        metadata.ensure(pg, settings.meta_schema)
        for _ in range(args.rounds):
            started = time.monotonic()
            snapshot.take_all(pg, settings)  # the copy, the digests, the indexes, the fingerprint
            taken = time.monotonic()
            fingerprint.legacy_fingerprint(pg, settings.snapshot_schema)  # the fingerprint part, once more
            parts["snapshot"].append(round(taken - started, 1))
            parts["of which the fingerprint"].append(round(time.monotonic() - taken, 1))
            print(json.dumps({name: values[-1] for name, values in parts.items()}), flush=True)
        copy, legacy = sizes(pg, settings.snapshot_schema), sizes(pg, settings.legacy_schema)
        for schema in (settings.snapshot_schema, settings.dry_run_schema, settings.meta_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    result = {
        "schema": args.schema,
        "seconds": parts,
        "median_seconds": {name: statistics.median(values) for name, values in parts.items()},
        "copy_bytes": copy,
        "legacy_bytes": legacy,
        "copy_total_mb": round(sum(copy.values()) / 2**20),
        "legacy_total_mb": round(sum(legacy.values()) / 2**20),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
