"""Is the application ever blocked during the cutover runbook (docs/cutover.md; issue 24)? Run by hand, not in CI.

While an application simulator (benchmarks/app_simulator.py, a process of its own) reads and writes "User",
the legacy tables and, after the deploy, the live tables in short transactions, timing every statement,
the runbook runs with the real CLI in subprocesses, each step timed:

    baseline                the application alone (5 s)
    dry-run                 orchestrator dry-run --max-conflict-rate R
    promote --catch-up      orchestrator promote --catch-up --yes, while an application transaction holds
                            SELECT ... FOR KEY SHARE on "User" rows (ROW SHARE on "User") the whole time
    sync 1, sync 2          orchestrator sync --yes
    sync --follow           orchestrator sync --follow --interval 5 --yes for --follow-seconds, then SIGTERM
    deploy                  the application also reads and writes "UserProfile" / "ContextIntent" (5 s)
    sync after deploy 1, 2  orchestrator sync --yes (users the application wrote are handed over: exit 1)
    stop legacy writes      the application no longer writes the legacy blobs (runbook step 6; 3 s); it
                            still signs users up ("User" + "UserProfile"), updates and deletes "User" rows
    last sync 1..3          orchestrator sync --yes, until one exits 0 (at most 3)
    verify                  orchestrator verify
    rollback                orchestrator rollback --yes (undoes the last round)
    sync after rollback     orchestrator sync --yes
    rollback --drop         orchestrator rollback --drop --yes (again with --force when refused for live
                            rows the application changed), the application still running
    after drop              the application alone again (5 s)

Meanwhile a thread samples pg_locks every ~10 ms: every lock the orchestrator's backends hold or wait for
on "User", "ContextProfile", "Profile", "ChatMessage", "UserProfile" and "ContextIntent" (its backends:
every client backend and parallel worker of the database but the simulator's and this script's, i.e. the
CLI's and dbt's; not autovacuum), each continuous hold from first to last seen (so a hold shorter than the
sampling period may show as 0 s, or not at all), and every lock a simulator statement waited for, with the
backends it waited behind.

The report, per step: exit code (marked `!` when not the one the runbook expects: 0, or 0/1 where said
above), seconds, the application's statements (count, errors, max and p99 wait, those over 1 s marked
`!!`), the locks the orchestrator held per table with the longest hold per mode, and what the
application's statements running over 50 ms were waiting on (pg_stat_activity's wait event: a lock, or
I/O such as a WAL flush). It is printed and written as JSON (--out); the CLI's output goes to FILE.log
beside it and the simulator's statements to FILE.statements.jsonl.

The server: the one the PG* variables name (database PGDATABASE, or --database, created if absent), else
the project's embedded server (`orchestrator db start`, its PG* variables from `orchestrator db env`,
ORCHESTRATOR_HOME as set), in a database of its own (--database, default cutover_app, created if absent)
so that no other run's advisory locks interfere. The legacy schema is --schema (the live tables go there
too): reused when `orchestrator generate` made it for --users users and it still holds that many (within
1%: an earlier run signs up and deletes a few), else generated (`orchestrator generate --users N
--schema S`). The CLI runs with an ORCHESTRATOR_HOME of its own (a temporary directory) holding a copy of
the dbt project and of the orchestrator package taken at the start (others may edit the checkout
meanwhile), and its own dry-run and metadata schemas (--dry-run-schema, --meta-schema: dropped at the
start, as are the live tables in --schema).

Examples (a few minutes at 10k users; at 1M generating the schema alone takes minutes, the runbook longer):
    .venv/bin/python benchmarks/cutover_app.py --users 10000 --out /tmp/cutover_10k.json
    ORCHESTRATOR_HOME=/tmp/bench .venv/bin/python benchmarks/cutover_app.py --users 1000000 --out /tmp/cutover_1m.json
    PGHOST=db.example PGUSER=admin PGDATABASE=scratch .venv/bin/python benchmarks/cutover_app.py --users 100000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

PROJECT = Path(__file__).resolve().parents[1]
SIMULATOR = Path(__file__).resolve().parent / "app_simulator.py"
LEGACY_TABLES = ("User", "ContextProfile", "Profile", "ChatMessage")
LIVE_TABLES = ("UserProfile", "ContextIntent")
TABLES = LEGACY_TABLES + LIVE_TABLES
SAMPLE_PERIOD = 0.010  # seconds between pg_locks samples
OWN_APPLICATION = "cutover_app"  # this script's and the simulator's application_name prefix
HOLDER = "cutover_app simulator hold"
CLIENT_BACKENDS = ("client backend", "parallel worker")  # the orchestrator's and dbt's (autovacuum is not)
WAIT_LIMIT = 1.0  # a statement waiting longer blocks the application (issue 24)
GENERATED = re.compile(r"^orchestrator generate: .*\(users (\d+), seed (\d+)\)$")


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def human(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def orchestrator_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


# -- the server ---------------------------------------------------------------------------------------------


def server_env(database: str | None) -> tuple[dict[str, str], str]:
    """The PG* variables of the server to use (PGDATABASE the run's database) and its kind."""
    if os.environ.get("PGHOST"):
        env = {k: v for k, v in os.environ.items() if k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE")}
        kind = "external"
    else:
        run = dict(cwd=PROJECT, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        started = subprocess.run(orchestrator_command(["db", "start"]), **run)
        if started.returncode != 0:
            raise SystemExit(f"`orchestrator db start` failed:\n{started.stdout}{started.stderr}")
        exported = subprocess.run(orchestrator_command(["db", "env"]), **run)
        if exported.returncode != 0:
            raise SystemExit(f"`orchestrator db env` failed:\n{exported.stdout}{exported.stderr}")
        env = {}
        for line in exported.stdout.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and words[1].startswith("PG"):
                key, _, value = words[1].partition("=")
                env[key] = value
        kind = "embedded"
        database = database or "cutover_app"
    if database:
        with psycopg.connect(**connect_kwargs(env), autocommit=True) as pg:
            if pg.execute("select 1 from pg_database where datname = %s", [database]).fetchone() is None:
                pg.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
                log(f"created database {database}")
        env["PGDATABASE"] = database
    return env, kind


def connect_kwargs(env: dict[str, str]) -> dict:
    kwargs = {"host": env.get("PGHOST"), "port": env.get("PGPORT"), "user": env.get("PGUSER")}
    kwargs["dbname"] = env.get("PGDATABASE") or env.get("PGUSER")
    if env.get("PGPASSWORD"):
        kwargs["password"] = env["PGPASSWORD"]
    return {k: v for k, v in kwargs.items() if v}


def connect(env: dict[str, str], role: str) -> psycopg.Connection:
    return psycopg.connect(**connect_kwargs(env), autocommit=True, application_name=f"{OWN_APPLICATION} {role}")


# -- the data -----------------------------------------------------------------------------------------------


def prepare_schema(env: dict[str, str], args: argparse.Namespace, cli_env: dict[str, str], log_file: Path) -> dict:
    """Reuse the generated schema when it holds --users users, else generate it; drop the run's schemas and
    the live tables left by an earlier run."""
    with connect(env, "main") as pg:
        comment = pg.execute(
            "select obj_description(oid, 'pg_namespace') from pg_namespace where nspname = %s", [args.schema]
        ).fetchone()
        made = GENERATED.match((comment[0] or "") if comment else "")
        users = None
        if made and int(made.group(1)) == args.users:
            users = pg.execute(
                sql.SQL("select count(*) from {}").format(sql.Identifier(args.schema, "User"))
            ).fetchone()[0]
    outcome: dict = {"schema": args.schema}
    if users is not None and abs(users - args.users) <= max(1, args.users // 100) and not args.regenerate:
        log(f"reusing schema {args.schema}: generated for {args.users:,} users, holds {users:,}")
        outcome.update(reused=True, users=users)
    else:
        log(f"generating {args.users:,} users into schema {args.schema}")
        started = time.monotonic()
        code, tail = run_logged(
            ["generate", "--users", str(args.users), "--seed", str(args.seed), "--schema", args.schema],
            cli_env,
            log_file,
        )
        if code != 0:
            raise SystemExit(f"`orchestrator generate` exited {code}:\n" + "\n".join(tail))
        outcome.update(reused=False, users=args.users, seconds=round(time.monotonic() - started, 1))
    with connect(env, "main") as pg:
        for schema in (
            args.dry_run_schema,
            f"{args.dry_run_schema}_users",
            f"{args.dry_run_schema}_legacy",
            args.meta_schema,
        ):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        for table in ("ContextIntent", "UserProfile"):
            pg.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(args.schema, table)))
        pg.execute(sql.SQL("analyze {}").format(sql.Identifier(args.schema, "User")))
        outcome["server"] = pg.execute("show server_version").fetchone()[0]
        outcome["counts"] = {
            table: pg.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(args.schema, table))).fetchone()[
                0
            ]
            for table in LEGACY_TABLES
        }
    return outcome


def snapshot_project(home: Path) -> Path:
    """A copy of the checkout's dbt project and orchestrator package: the run measures one version of them
    even while others edit the checkout (the CLI runs from the copy: `python -m orchestrator` imports the
    package of its working directory)."""
    copy = home / "project"
    shutil.copytree(
        PROJECT,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".orchestrator", "target", "logs", "node_modules", "reports", "__pycache__", ".*cache"
        ),
    )
    return copy


# -- running the CLI ----------------------------------------------------------------------------------------


def run_logged(args: list[str], env: dict[str, str], log_file: Path, cwd: Path = PROJECT) -> tuple[int, list[str]]:
    """`orchestrator ARGS`: its exit code and the last lines of its output (all of it appended to log_file)."""
    done = subprocess.run(
        orchestrator_command(args), env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return done.returncode, keep_output(args, done.stdout + done.stderr, log_file)


def keep_output(args: list[str], output: str, log_file: Path) -> list[str]:
    with open(log_file, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ orchestrator {' '.join(args)}\n{output}")
    return [line for line in output.splitlines() if line.strip()][-12:]


# -- the lock watcher ---------------------------------------------------------------------------------------

LOCKS = """
select l.pid, coalesce(a.application_name, ''), a.backend_type, l.locktype, l.relation::bigint, c.relname,
       l.mode, l.granted,
       case when not l.granted then array(
           select coalesce(nullif(b.application_name, ''), b.backend_type) || ' (pid ' || b.pid || ')'
           from pg_stat_activity as b where b.pid = any(pg_blocking_pids(l.pid))) end
from pg_locks as l
join pg_stat_activity as a on a.pid = l.pid
left join pg_class as c on c.oid = l.relation
where a.datname = current_database() and l.pid <> pg_backend_pid()
  and ((l.locktype = 'relation' and (c.oid is null or (c.relnamespace = %(ns)s and c.relname = any(%(tables)s))))
       or not l.granted)
"""

# what the application's statements running longer than SLOW_STATEMENT wait on (an I/O or LWLock wait, such
# as a WAL flush, shows here and not in pg_locks)
SLOW_STATEMENT = 0.05
WAIT_EVENTS = """
select pid, coalesce(wait_event_type || ':' || wait_event, 'CPU'),
       extract(epoch from clock_timestamp() - query_start)::float8
from pg_stat_activity
where datname = current_database() and application_name like 'cutover_app simulator%%' and state = 'active'
  and query_start < clock_timestamp() - make_interval(secs => %(slow)s)
"""


def our_tables(pg: psycopg.Connection, schema: str) -> dict[int, str]:
    """{oid: name} of the legacy and live tables in ``schema`` now."""
    return dict(
        pg.execute(
            "select c.oid::bigint, c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = any(%s)",
            [schema, list(TABLES)],
        ).fetchall()
    )


class LockWatcher:
    """Samples pg_locks every SAMPLE_PERIOD; every continuous hold (or wait) of a lock becomes an interval
    {step, pid, application, locktype, table, mode, granted, first, last, blockers}."""

    def __init__(self, env: dict[str, str], schema: str):
        self.env, self.schema = env, schema
        self.step = "start"
        self.open: dict[tuple, dict] = {}
        self.done: list[dict] = []
        self.names: dict[int, str] = {}  # oid -> name of our tables (one made by an open transaction: once committed)
        self.samples = 0
        self.started = self.stopped = time.time()
        # step -> wait event of an application statement running over SLOW_STATEMENT -> [samples, longest so far]
        self.slow_waits: dict[str, dict[str, list]] = {}
        self.stop = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.done.extend(self.open.values())
        self.open = {}
        with connect(self.env, "watcher") as pg:
            self.names.update(our_tables(pg, self.schema))
        for hold in self.done:
            if hold["table"] is None and hold["oid"] is not None:
                hold["table"] = self.names.get(hold["oid"])

    def _run(self) -> None:
        try:
            with connect(self.env, "watcher") as pg:
                namespace = pg.execute("select oid from pg_namespace where nspname = %s", [self.schema]).fetchone()[0]
                self.started = time.time()
                next_at, names_at = time.monotonic(), 0.0
                while not self.stop.is_set():
                    if time.monotonic() >= names_at:
                        self.names.update(our_tables(pg, self.schema))
                        names_at = time.monotonic() + 0.5
                    rows = pg.execute(LOCKS, {"ns": namespace, "tables": list(TABLES)}).fetchall()
                    self._sample(time.time(), rows)
                    for _, event, seconds in pg.execute(WAIT_EVENTS, {"slow": SLOW_STATEMENT}):
                        seen = self.slow_waits.setdefault(self.step, {}).setdefault(event, [0, 0.0])
                        seen[0] += 1
                        seen[1] = max(seen[1], seconds)
                    next_at += SAMPLE_PERIOD
                    pause = next_at - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        next_at = time.monotonic()
                self.stopped = time.time()
        except Exception as exc:  # the report says so; the run goes on
            self.error = f"{type(exc).__name__}: {exc}"

    def _sample(self, now: float, rows: list[tuple]) -> None:
        self.samples += 1
        seen = set()
        for pid, application, backend_type, locktype, oid, relname, mode, granted, blockers in rows:
            if backend_type not in CLIENT_BACKENDS:
                continue  # autovacuum and the like: not the orchestrator (named when the application waits behind them)
            if application.startswith(OWN_APPLICATION):
                if application.startswith("cutover_app simulator"):
                    holder = application == HOLDER and locktype == "relation"
                    if granted and not holder:
                        continue  # the application's own locks: only its waits (and the held ROW SHARE) matter
                else:
                    continue  # this script's connections
            table = relname if relname is not None else self.names.get(oid)
            key = (pid, locktype, oid, mode, granted)
            seen.add(key)
            hold = self.open.get(key)
            if hold is None:
                self.open[key] = hold = {
                    "step": self.step,
                    "pid": pid,
                    "application": application,
                    "locktype": locktype,
                    "oid": oid,
                    "table": table,
                    "mode": mode,
                    "granted": granted,
                    "first": now,
                    "last": now,
                    "blockers": set(),
                    # not in pg_class for others: a table its own open transaction created
                    "new_table": locktype == "relation" and relname is None,
                }
            hold["last"] = now
            if hold["table"] is None and table is not None:
                hold["table"] = table
            if blockers:
                hold["blockers"].update(blockers)
        for key in [key for key in self.open if key not in seen]:
            self.done.append(self.open.pop(key))


# -- the runbook --------------------------------------------------------------------------------------------


class Runbook:
    def __init__(self, env: dict[str, str], cwd: Path, control: Path, watcher: LockWatcher, log_file: Path):
        self.env, self.cwd, self.control, self.watcher, self.log_file = env, cwd, control, watcher, log_file
        self.steps: list[dict] = []

    def begin(self, name: str, command: str | None) -> dict:
        step = {"step": name, "command": command, "start": time.time()}
        temporary = self.control / "step.tmp"
        temporary.write_text(name)
        os.replace(temporary, self.control / "step")
        self.watcher.step = name
        self.steps.append(step)
        return step

    def end(self, step: dict, code: int | None, tail: list[str]) -> dict:
        step["end"] = time.time()
        step["seconds"] = round(step["end"] - step["start"], 2)
        step["exit_code"] = code
        step["output_tail"] = tail
        step["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine skews the figures
        log(f"  {step['step']}: " + (f"exit {code}, " if code is not None else "") + f"{step['seconds']} s")
        if code is not None and code not in step["expected_exit"]:
            for line in tail[-4:]:
                log(f"    | {line}")
        return step

    def cli(self, name: str, args: list[str], expected: tuple[int, ...] = (0,)) -> dict:
        step = self.begin(name, "orchestrator " + " ".join(args))
        step["expected_exit"] = list(expected)
        log(f"{name}: orchestrator {' '.join(args)}")
        code, tail = run_logged(args, self.env, self.log_file, self.cwd)
        return self.end(step, code, tail)

    def follow(self, name: str, args: list[str], seconds: float) -> dict:
        """`orchestrator ARGS` (sync --follow) for ``seconds``, then SIGTERM: it stops after its round."""
        step = self.begin(name, "orchestrator " + " ".join(args) + f"  (SIGTERM after {seconds:g} s)")
        step["expected_exit"] = [0]
        log(f"{name}: orchestrator {' '.join(args)} for {seconds:g} s")
        process = subprocess.Popen(
            orchestrator_command(args),
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            output, _ = process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            step["sigterm_at"] = round(time.time() - step["start"], 2)
            output, _ = process.communicate()
        return self.end(step, process.returncode, keep_output(args, output, self.log_file))

    def pause(self, name: str, seconds: float, touch: str | None = None) -> dict:
        step = self.begin(name, f"(the application alone for {seconds:g} s" + (f"; signal: {touch})" if touch else ")"))
        step["expected_exit"] = None
        log(f"{name}: {step['command']}")
        if touch:
            (self.control / touch).write_text("")
        time.sleep(seconds)
        return self.end(step, None, [])


def wait_for(path: Path, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what} ({path})")
        time.sleep(0.05)


def run_runbook(book: Runbook, control: Path, args: argparse.Namespace) -> dict:
    """The runbook's steps (docs/cutover.md). Returns what was seen of the ROW SHARE hold."""
    rate = ["--max-conflict-rate", str(args.max_conflict_rate)]
    book.pause("baseline", 5)
    book.cli("dry-run", ["dry-run", *rate])

    (control / "hold").write_text("")
    wait_for(control / "holding", 60, "the simulator's FOR KEY SHARE transaction")
    hold = {"holder_pid": int((control / "holding").read_text()), "holding_at": time.time()}
    promote = book.cli("promote --catch-up", ["promote", "--catch-up", "--yes"])
    (control / "hold-release").write_text("")
    wait_for(control / "released", 60, "the simulator to end its FOR KEY SHARE transaction")
    hold["released_at"] = time.time()
    hold["promote"] = {"start": promote["start"], "end": promote["end"], "exit_code": promote["exit_code"]}

    book.cli("sync 1", ["sync", "--yes"])
    book.cli("sync 2", ["sync", "--yes"])
    book.follow("sync --follow", ["sync", "--follow", "--interval", "5", "--yes"], args.follow_seconds)
    book.pause("deploy", 5, touch="deploy")
    book.cli("sync after deploy 1", ["sync", "--yes"], expected=(0, 1))  # 1: users handed over
    book.cli("sync after deploy 2", ["sync", "--yes"], expected=(0, 1))
    book.pause("stop legacy writes", 3, touch="legacy-off")
    for attempt in range(1, 4):
        if book.cli(f"last sync {attempt}", ["sync", "--yes"])["exit_code"] == 0:
            break
    book.cli("verify", ["verify"])
    book.cli("rollback", ["rollback", "--yes"])
    book.cli("sync after rollback", ["sync", "--yes"])
    # 1: refused, the application changed the live tables since our last write (then --force)
    dropped = book.cli("rollback --drop", ["rollback", "--drop", "--yes"], expected=(0, 1))
    if dropped["exit_code"] == 1 and any("--force" in line for line in dropped["output_tail"]):
        book.cli("rollback --drop --force", ["rollback", "--drop", "--yes", "--force"])
    book.pause("after drop", 5)
    return hold


# -- the report ---------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else 0.0


def statement_stats(lines: list[dict]) -> dict:
    waits = [line["seconds"] for line in lines]
    by_kind: dict[str, list[dict]] = {}
    for line in lines:
        by_kind.setdefault(line["kind"], []).append(line)
    slow = sorted((line for line in lines if line["seconds"] > WAIT_LIMIT), key=lambda line: -line["seconds"])
    return {
        "statements": len(lines),
        "errors": sum("error" in line for line in lines),
        "max_wait": round(max(waits, default=0.0), 4),
        "p99_wait": round(percentile(waits, 0.99), 4),
        "over_1s": [
            {"kind": line["kind"], "seconds": round(line["seconds"], 3), "at": line["t"], "error": line.get("error")}
            for line in slow
        ],
        "by_kind": {
            kind: {
                "statements": len(group),
                "errors": sum("error" in line for line in group),
                "max_wait": round(max(line["seconds"] for line in group), 4),
                "p99_wait": round(percentile([line["seconds"] for line in group], 0.99), 4),
                **(
                    {"an_error": next(line["error"] for line in group if "error" in line)}
                    if any("error" in line for line in group)
                    else {}
                ),
            }
            for kind, group in sorted(by_kind.items())
        },
    }


def lock_summary(holds: list[dict], start: float) -> dict:
    """{"held": {table: {mode: entry}}, "waited": {...}} where entry = {"longest": the longest continuous hold
    (s), "holds": how many, "first_seen" / "last_seen": seconds since the step's start, "by": applications,
    "new_table": every hold was on a table its transaction was creating (invisible to the application)}."""
    held: dict = {}
    waited: dict = {}
    for hold in holds:
        into = held if hold["granted"] else waited
        entry = into.setdefault(hold["table"], {}).setdefault(
            hold["mode"],
            {"longest": 0.0, "holds": 0, "first_seen": math.inf, "last_seen": 0.0, "by": set(), "new_table": True},
        )
        entry["longest"] = max(entry["longest"], hold["last"] - hold["first"])
        entry["holds"] += 1
        entry["first_seen"] = min(entry["first_seen"], hold["first"] - start)
        entry["last_seen"] = max(entry["last_seen"], hold["last"] - start)
        entry["by"].add(hold["application"] or "?")
        entry["new_table"] = entry["new_table"] and hold["new_table"]
        if hold["blockers"]:
            entry.setdefault("behind", set()).update(hold["blockers"])
    for into in (held, waited):
        for modes in into.values():
            for entry in modes.values():
                for key in ("longest", "first_seen", "last_seen"):
                    entry[key] = round(entry[key], 3)
                entry["by"] = sorted(entry["by"])
                if "behind" in entry:
                    entry["behind"] = sorted(entry["behind"])
    return {"held": held, "waited": waited}


def app_waits(holds: list[dict]) -> list[dict]:
    """The simulator's lock waits seen by the watcher, longest first."""
    waits = [
        {
            "application": hold["application"],
            "lock": hold["locktype"] + (f" on {hold['table']}" if hold["table"] else ""),
            "mode": hold["mode"],
            "seconds": round(hold["last"] - hold["first"], 3),
            "behind": sorted(hold["blockers"]),
        }
        for hold in holds
    ]
    return sorted(waits, key=lambda wait: -wait["seconds"])


def build_report(book: Runbook, watcher: LockWatcher, statements: list[dict], hold: dict, meta: dict) -> dict:
    ours = [h for h in watcher.done if not h["application"].startswith(OWN_APPLICATION) and h["table"] is not None]
    theirs = [h for h in watcher.done if h["application"].startswith(OWN_APPLICATION) and not h["granted"]]
    steps = []
    for step in book.steps:
        keys = ("step", "command", "exit_code", "expected_exit", "seconds", "load_average", "output_tail")
        entry = {k: step[k] for k in keys}
        if "sigterm_at" in step:
            entry["sigterm_at"] = step["sigterm_at"]
        entry["app"] = statement_stats([s for s in statements if s["step"] == step["step"]])
        entry["locks"] = lock_summary([h for h in ours if h["step"] == step["step"]], step["start"])
        entry["slow_statement_waits"] = {
            event: {"samples": n, "longest": round(longest, 3)}
            for event, (n, longest) in sorted(watcher.slow_waits.get(step["step"], {}).items(), key=lambda i: -i[1][1])
        }
        entry["app_lock_waits"] = app_waits([h for h in theirs if h["step"] == step["step"]])[:10]
        steps.append(entry)
    held = [
        h
        for h in watcher.done
        if h["application"] == HOLDER and h["table"] == "User" and h["mode"] == "RowShareLock" and h["granted"]
    ]
    promote = hold.get("promote", {})
    if held and promote:
        covering = [
            h for h in held if h["first"] <= promote["start"] and h["last"] >= promote["end"] - 2 * SAMPLE_PERIOD
        ]
        hold["row_share_seen"] = [
            {"from": round(h["first"] - promote["start"], 3), "to": round(h["last"] - promote["start"], 3)}
            for h in held
        ]
        hold["held_throughout_promote"] = bool(covering)
        hold["promote_finished_under_row_share"] = bool(covering) and promote["exit_code"] == 0
    all_statements = statement_stats(statements)
    return {
        **meta,
        "sampling": {
            "period_target": SAMPLE_PERIOD,
            "samples": watcher.samples,
            "mean_period": round((watcher.stopped - watcher.started) / max(1, watcher.samples), 4),
            "error": watcher.error,
        },
        "row_share_hold": hold,
        "app_overall": {k: all_statements[k] for k in ("statements", "errors", "max_wait", "p99_wait", "over_1s")},
        "steps": steps,
    }


def modes_text(modes: dict) -> str:
    return ", ".join(
        f"{mode.removesuffix('Lock')} {entry['longest']:.2f} s"
        + (f" x{entry['holds']}" if entry["holds"] > 1 else "")
        + (" (its own new table)" if entry["new_table"] else "")
        for mode, entry in sorted(modes.items(), key=lambda item: -item[1]["longest"])
    )


def print_report(report: dict) -> None:
    print()
    print(
        f"Cutover with the application running: {report['users']:,} users, schema {report['schema']}, "
        f"PostgreSQL {report['server']} ({report['server_kind']}), lock samples every "
        f"{report['sampling']['mean_period'] * 1000:.1f} ms"
    )
    print()
    header = f"{'step':<26} {'exit':>4} {'seconds':>8} {'stmts':>6} {'errors':>6} {'max wait':>9} {'p99':>7}  >1 s"
    print(header)
    print("-" * len(header))
    for step in report["steps"]:
        app = step["app"]
        code = "-" if step["exit_code"] is None else str(step["exit_code"])
        if step["expected_exit"] is not None and step["exit_code"] not in step["expected_exit"]:
            code = "!" + code
        flag = f"{len(app['over_1s'])} !!" if app["over_1s"] else "0"
        print(
            f"{step['step']:<26} {code:>4} {step['seconds']:>8.1f} {app['statements']:>6} {app['errors']:>6} "
            f"{app['max_wait']:>8.3f}s {app['p99_wait']:>6.3f}s  {flag}"
        )
    print("(!N: not the exit code the runbook expects; >1 s: the application's statements that waited over 1 s)")
    for step in report["steps"]:
        if step["expected_exit"] is not None and step["exit_code"] not in step["expected_exit"]:
            last = step["output_tail"][-1] if step["output_tail"] else "(no output)"
            print(f"  {step['step']} exited {step['exit_code']}: {last[:300]}")
    print()
    print("Locks the orchestrator held (longest continuous hold per mode; xN: N holds) and waited for:")
    for step in report["steps"]:
        held, waited = step["locks"]["held"], step["locks"]["waited"]
        if not held and not waited and not step["app_lock_waits"] and not step["slow_statement_waits"]:
            continue
        print(f"  {step['step']}:")
        for table in TABLES:
            if table in held:
                print(f"    {table:<15} {modes_text(held[table])}")
            if table in waited:
                print(f"    {table:<15} waited: {modes_text(waited[table])}")
        slow = ", ".join(
            f"{event} {seen['longest']:.2f} s" for event, seen in list(step["slow_statement_waits"].items())[:4]
        )
        if slow:
            print(f"    the application's statements over {SLOW_STATEMENT * 1000:.0f} ms were waiting on: {slow}")
        for wait in step["app_lock_waits"][:3]:
            print(
                f"    the application waited {wait['seconds']:.3f} s for {wait['mode']} ({wait['lock']}) "
                f"behind {', '.join(wait['behind']) or '?'}"
            )
    hold = report["row_share_hold"]
    print()
    print(
        'Promote under an application transaction holding ROW SHARE on "User": '
        f"promote exit {hold.get('promote', {}).get('exit_code')}, "
        f"held throughout: {hold.get('held_throughout_promote')}, seen {hold.get('row_share_seen')}"
    )
    overall = report["app_overall"]
    print(
        f"Application overall: {overall['statements']:,} statements, {overall['errors']} errors, max wait "
        f"{overall['max_wait']:.3f} s, p99 {overall['p99_wait']:.3f} s, {len(overall['over_1s'])} over 1 s"
    )
    for step in report["steps"]:
        for slow in step["app"]["over_1s"]:
            print(
                f"  !! {step['step']}: {slow['kind']} waited {slow['seconds']:.3f} s"
                + (f" ({slow['error']})" if slow["error"] else "")
            )
        errors = {kind: entry for kind, entry in step["app"]["by_kind"].items() if entry["errors"]}
        for kind, entry in errors.items():
            print(f"  {step['step']}: {entry['errors']} x {kind} failed, e.g. {entry['an_error'][:160]}")


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users in the generated schema (default 10000)")
    parser.add_argument("--schema", default=None, help="the legacy (and live) schema (default legacy_cutover_<N>)")
    parser.add_argument("--seed", type=int, default=1, help="orchestrator generate's seed")
    parser.add_argument("--regenerate", action="store_true", help="generate the schema even if it could be reused")
    parser.add_argument("--out", type=Path, default=None, help="the JSON report (default cutover_app_<N>.json)")
    parser.add_argument("--database", default=None, help="the database (default: cutover_app on the embedded server)")
    parser.add_argument(
        "--dry-run-schema", default="cut_dry_run", help="MIGRATION_DRY_RUN_SCHEMA (default cut_dry_run)"
    )
    parser.add_argument("--meta-schema", default="cut_meta", help="MIGRATION_META_SCHEMA (default cut_meta)")
    parser.add_argument("--max-conflict-rate", type=float, default=1.0, help="dry-run's threshold (default 1)")
    parser.add_argument("--follow-seconds", type=float, default=30, help="how long sync --follow runs (default 30)")
    parser.add_argument("--keep-home", action="store_true", help="keep the CLI's temporary ORCHESTRATOR_HOME")
    args = parser.parse_args()
    args.schema = args.schema or f"legacy_cutover_{human(args.users).lower()}"
    out = args.out or Path(f"cutover_app_{human(args.users)}.json")
    log_file = out.with_suffix(".log")
    statements_file = out.with_suffix(".statements.jsonl")
    for stale in (log_file, statements_file):
        stale.unlink(missing_ok=True)

    pg_env, server_kind = server_env(args.database)
    home = Path(tempfile.mkdtemp(prefix="cutover-app-"))
    control = home / "control"
    control.mkdir()
    project = snapshot_project(home)
    cli_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PG", "MIGRATION_", "DBT_ENV_SECRET", "ORCHESTRATOR_", "DBT_TARGET"))
    }
    cli_env.update(pg_env)
    cli_env.update(
        MIGRATION_LEGACY_SCHEMA=args.schema,
        MIGRATION_LIVE_SCHEMA=args.schema,
        MIGRATION_DRY_RUN_SCHEMA=args.dry_run_schema,
        MIGRATION_META_SCHEMA=args.meta_schema,
        ORCHESTRATOR_HOME=str(home),
        ORCHESTRATOR_PROJECT_DIR=str(project),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        PYTHONUNBUFFERED="1",
    )
    log(f"server: {server_kind} {pg_env.get('PGHOST')}:{pg_env.get('PGPORT')}, database {pg_env.get('PGDATABASE')}")
    data = prepare_schema(pg_env, args, cli_env, log_file)

    watcher = LockWatcher(pg_env, args.schema)
    watcher.start()
    sim_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | pg_env
    simulator = subprocess.Popen(
        [
            sys.executable,
            str(SIMULATOR),
            "--schema",
            args.schema,
            "--control",
            str(control),
            "--log",
            str(statements_file),
        ],
        env=sim_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    book = Runbook(cli_env, project, control, watcher, log_file)
    started = dt.datetime.now(dt.UTC)
    hold: dict = {}
    try:
        wait_for(control / "ready", 120, "the application simulator")
        log(f"application simulator running (pid {simulator.pid}): {(control / 'ready').read_text()}")
        hold = run_runbook(book, control, args)
    finally:
        simulator.send_signal(signal.SIGTERM)
        try:
            summary, _ = simulator.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            simulator.kill()
            summary, _ = simulator.communicate()
        watcher.finish()
    statements = [json.loads(line) for line in statements_file.read_text().splitlines() if line.strip()]
    statements = [s for s in statements if s.get("statement", True)]
    meta = {
        "users": data["users"],
        "schema": args.schema,
        "generate": data,
        "server": data["server"],
        "server_kind": server_kind,
        "database": pg_env.get("PGDATABASE"),
        "date": started.isoformat(timespec="seconds"),
        "git": git_state(),
        "simulator_summary": json.loads(summary.strip().splitlines()[-1]) if summary.strip() else None,
        "files": {"cli_output": str(log_file), "statements": str(statements_file)},
    }
    report = build_report(book, watcher, statements, hold, meta)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    log(f"wrote {out} (CLI output: {log_file}; statements: {statements_file})")
    if args.keep_home:
        log(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


def git_state() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT, capture_output=True, text=True).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
