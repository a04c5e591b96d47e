"""docs/benchmarks.md's section on a live application (benchmarks/live_app.py measures it): the figures
kept in docs/benchmarks-live.json, and their table. Its own module, so that the page's renderer
(benchmarks/run_benchmark.py) and the benchmark both use it without importing each other."""

from __future__ import annotations

import json
from pathlib import Path

LIVE_JSON = Path(__file__).resolve().parents[1] / "docs" / "benchmarks-live.json"


def load() -> list[dict]:
    return json.loads(LIVE_JSON.read_text()) if LIVE_JSON.exists() else []


def save(result: dict) -> None:
    """Keep the latest result per server version and size."""
    kept = [r for r in load() if (r["server"], r["users"]) != (result["server"], result["users"])]
    kept.append(result)
    kept.sort(key=lambda r: (r["server"], r["users"]))
    LIVE_JSON.write_text(json.dumps(kept, indent=2) + "\n")


def render_section(results: list[dict]) -> list[str]:
    """The section, from docs/benchmarks-live.json (results of the benchmark before the change stream
    are left out: they measured other steps)."""
    results = [r for r in results if "sync_rounds_stream" in r]
    if not results:
        return []
    lines = [
        "",
        "## A live application (`promote --catch-up`, `sync`)",
        "",
        "Measured by `benchmarks/live_app.py` on a generated schema (see its docstring), the real CLI in",
        "subprocesses, one after the other on the same server, on 2 cores; compare figures of one row rather",
        "than across rows (each row is one run). Each figure is given with the change stream (the",
        "write-ahead log, orchestrator/stream.py) and, after the slash, with the digests of every owner it",
        "falls back to (`MIGRATION_CHANGE_SOURCE=digests`), measured in the same run. A sync round follows",
        "updates of one Profile of each of N users; the catch-up is `promote --catch-up` after M users",
        "changed, against a full promote of the same dry run (every row compared, none written). *Digests*",
        "is what the fallback reads of the legacy tables each round, against a legacy fingerprint for scale.",
        "",
        "| users | server | dry run | digests / fingerprint | 10-user `--user`"
        " | sync after N changed (stream / digests) | nothing changed | full promote"
        " | catch-up, M changed (stream / digests) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        stream = ", ".join(f"{x['seconds']} s" for x in r["sync_rounds_stream"])
        digests = ", ".join(f"{x['seconds']} s" for x in r["sync_rounds_digests"])
        full = r["promote_full"]
        catch_up_stream, catch_up_digests = r["promote_catch_up_stream"], r["promote_catch_up_digests"]
        lines.append(
            f"| {r['users']:,} | {r['server']} | {r['dry_run']} s | {r['digests_take']} s / {r['fingerprint']} s"
            f" | {r['partial_promote_10']} s | N = {r['changed']}: {stream} / {digests}"
            f" | {r['sync_nothing_stream']} s / {r['sync_nothing_digests']} s | {full} s"
            f" | M = {r['catch_up_changed']}: {catch_up_stream} s (+{catch_up_stream - full:.1f})"
            f" / {catch_up_digests} s (+{catch_up_digests - full:.1f}) |"
        )
    return lines + [""]
