"""The application during a cutover (issue 24): short transactions on "User", the legacy tables and, after
the deploy, the live tables, every statement timed. Started by benchmarks/cutover_app.py as a process of
its own; it can be run by hand too.

    python benchmarks/app_simulator.py --schema S --control DIR --log FILE.jsonl [--seed N]

Connects with the PG* environment variables. Loops, each on a connection of its own (autocommit; a
multi-statement write is one short transaction), at a fixed rate:

    read user       a point read of "User"                                        every 20 ms
    update user     a point update of "User" (name, "updatedAt")                  every 50 ms
    sign up         insert "User" + "ContextProfile" + "Profile"; after the deploy every 200 ms
                    also its "UserProfile" and "ContextIntent", in the same
                    transaction
    delete account  delete a user's "Profile" and "ContextProfile" rows and the    every 200 ms
                    "User" (its live rows go by the live tables' ON DELETE CASCADE)
    update blob     a "Profile".data update (what a chat does)                     every 50 ms
    read live       after the deploy: a user's "UserProfile" and "ContextIntent"   every 50 ms
    update live     after the deploy: a "UserProfile".location update              every 50 ms

The users come from a sample of "User" taken at the start, split so that each user is written by one
kind of write only: a held set (below), users whose "User" row and blobs are updated, users whose
live rows are updated, and users to delete (then its own sign-ups); reads pick any of them.

Control files in DIR (written by the driver; a file's presence is the signal):
    step          the runbook step in progress (its text goes in every log line)
    deploy        the application now reads and writes "UserProfile" / "ContextIntent" too
    legacy-off    the application no longer writes the legacy blobs (docs/cutover.md step 6): no
                  "Profile" updates, sign-ups insert "User" + "UserProfile" only, deletions delete
                  the "User" row only
    hold          open a transaction holding `SELECT ... FOR KEY SHARE` on the held users' "User" rows
                  (ROW SHARE on the table) until `hold-release` appears; `holding` is written (the
                  holding backend's pid) once it holds, `released` once it committed
The simulator writes `ready` once connected with its samples taken.

Log (JSON lines, one per statement, commits included): {"t": epoch seconds at its start, "step", "kind",
"seconds", "error" (only when it failed)}; the held transaction's open time is logged once as kind
"hold open" with "statement": false. A failed statement (a deadlock, a table dropped by `rollback
--drop`, ...) is logged, its transaction rolled back, and the loop goes on, as an application would.
Stops on SIGTERM or SIGINT: every loop finishes its statement, and a summary ({"statements", "errors",
"by_kind"}) is printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from pathlib import Path

import psycopg
from psycopg import sql

CONTEXTS = ["romantic", "friendship", "professional", "creative", "service"]
CITIES = ["Lisbon", "Oslo", "Porto", "Lyon", "Turin", "Ghent", "Bergen", "Cork"]
SAMPLE = 20_000  # users sampled at the start
HELD_USERS = 50  # rows held FOR KEY SHARE during the first promote
STATEMENT_TIMEOUT = "120s"  # a statement stuck longer is logged as an error, not waited for forever
STOP_WAIT = 130  # seconds to wait for a loop to finish its statement when stopping
APPLICATION_NAME = "cutover_app simulator"


class Simulator:
    def __init__(self, args: argparse.Namespace):
        self.schema = args.schema
        self.control: Path = args.control
        self.rng = random.Random(args.seed)
        self.run_tag = f"sim{args.seed}x{random.randrange(16**6):06x}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1, encoding="utf-8")  # closed by main()
        self.step = "start"
        self.flags: dict[str, bool] = {}
        self.serial = 0
        self.counts: dict[str, list[int]] = {}  # kind -> [statements, errors]
        self.signed_up: list[str] = []  # own sign-ups, oldest first (deleted once the delete pool is used up)

    # -- helpers -----------------------------------------------------------------------------------------

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def flag(self, name: str) -> bool:
        return self.flags.get(name, False)

    def next_id(self, prefix: str) -> str:
        with self.lock:
            self.serial += 1
            return f"{prefix}-{self.run_tag}-{self.serial}"

    def record(self, kind: str, started: float, seconds: float, error: str | None = None, **extra) -> None:
        line = {"t": round(started, 4), "step": self.step, "kind": kind, "seconds": round(seconds, 5), **extra}
        if error is not None:
            line["error"] = error[:300]
        with self.lock:
            self.log.write(json.dumps(line) + "\n")
            counts = self.counts.setdefault(kind, [0, 0])
            counts[0] += 1
            counts[1] += error is not None

    def timed(self, pg: psycopg.Connection, kind: str, query, params=()) -> psycopg.Cursor:
        """Run one statement, logging how long it took (it is re-raised when it fails)."""
        started, clock = time.time(), time.perf_counter()
        try:
            cursor = pg.execute(query, params)
            if cursor.description is not None:
                cursor.fetchall()
        except psycopg.Error as exc:
            self.record(
                kind, started, time.perf_counter() - clock, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            )
            raise
        self.record(kind, started, time.perf_counter() - clock)
        return cursor

    def transaction(self, pg: psycopg.Connection, kind: str, statements) -> None:
        """``statements``: [(kind, query, params)], run in one transaction; the commit is timed too."""
        try:
            self.timed(pg, f"{kind}: begin", "begin")
            for part, query, params in statements:
                self.timed(pg, f"{kind}: {part}", query, params)
            self.timed(pg, f"{kind}: commit", "commit")
        except psycopg.Error:
            if not pg.closed and pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    pg.execute("rollback")
                except psycopg.Error:
                    pg.close()  # the loop connects again
            raise

    def connect(self, role: str) -> psycopg.Connection:
        pg = psycopg.connect(autocommit=True, application_name=f"{APPLICATION_NAME} {role}"[:63])
        pg.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT)))
        return pg

    # -- the control files -------------------------------------------------------------------------------

    def watch_control(self) -> None:
        step_file = self.control / "step"
        while not self.stop.wait(0.02):
            try:
                self.step = step_file.read_text().strip() or self.step
            except OSError:
                pass
            for name in ("deploy", "legacy-off", "hold", "hold-release"):
                self.flags[name] = (self.control / name).exists()

    # -- the samples -------------------------------------------------------------------------------------

    def take_samples(self) -> None:
        with self.connect("setup") as pg:
            ids = [
                row[0]
                for row in pg.execute(
                    sql.SQL("select id from {} order by random() limit %s").format(self.table("User")), [SAMPLE]
                )
            ]
            self.rng.shuffle(ids)
            self.held = ids[:HELD_USERS]
            rest = ids[HELD_USERS:]
            quarter = len(rest) // 4
            self.updated = rest[:quarter]  # "User" rows and blobs updated
            self.live_users = rest[quarter : 2 * quarter]  # live rows updated after the deploy
            self.to_delete = rest[2 * quarter :]
            self.readable = ids
            self.blobs = [
                row[0]
                for row in pg.execute(
                    sql.SQL(
                        'select p.id from {} as p join {} as c on c.id = p."contextProfileId"'
                        ' where c."userId" = any(%s)'
                    ).format(self.table("Profile"), self.table("ContextProfile")),
                    [self.updated],
                )
            ] or [None]
        self.sampled = {"sampled_users": len(ids), "blob_profiles": len(self.blobs)}

    # -- the loops ---------------------------------------------------------------------------------------

    def loop(self, name: str, period: float, body, when=lambda: True) -> None:
        pg = self.connect(name)
        next_at = time.monotonic()
        while not self.stop.is_set():
            if when():
                try:
                    if pg.closed:
                        pg = self.connect(name)
                    body(pg)
                except psycopg.Error:
                    pass  # logged by timed(); an application retries with its next request
            next_at += period * self.rng.uniform(0.8, 1.2)
            pause = next_at - time.monotonic()
            if pause > 0:
                self.stop.wait(pause)
            else:
                next_at = time.monotonic()  # fell behind (a statement waited): no burst to catch up
        pg.close()

    def read_user(self, pg) -> None:
        self.timed(
            pg,
            "read user",
            sql.SQL('select id, email, name, "updatedAt" from {} where id = %s').format(self.table("User")),
            [self.rng.choice(self.readable)],
        )

    def update_user(self, pg) -> None:
        self.timed(
            pg,
            "update user",
            sql.SQL('update {} set name = %s, "updatedAt" = now() where id = %s').format(self.table("User")),
            [f"name {self.rng.randrange(10**6)}", self.rng.choice(self.updated)],
        )

    def sign_up(self, pg) -> None:
        user = self.next_id("u")
        statements = [
            (
                "insert User",
                sql.SQL('insert into {} (id, email, name, "updatedAt") values (%s, %s, %s, now())').format(
                    self.table("User")
                ),
                [user, f"{user}@example.test", "New User"],
            )
        ]
        legacy = not self.flag("legacy-off")
        context_type = self.rng.choice(CONTEXTS)
        if legacy:
            context = self.next_id("cp")
            blob = {"location": self.rng.choice(CITIES), "coreValues": ["kindness"], "name": "New User"}
            statements += [
                (
                    "insert ContextProfile",
                    sql.SQL(
                        'insert into {} (id, "userId", "contextType", "updatedAt") values (%s, %s, %s::{}, now())'
                    ).format(self.table("ContextProfile"), self.table("RelationshipContextType")),
                    [context, user, context_type],
                ),
                (
                    "insert Profile",
                    sql.SQL(
                        'insert into {} (id, "contextProfileId", data, "updatedAt") values (%s, %s, %s::jsonb, now())'
                    ).format(self.table("Profile")),
                    [self.next_id("p"), context, json.dumps(blob)],
                ),
            ]
        if self.flag("deploy"):
            statements.append(
                (
                    "insert UserProfile",
                    sql.SQL('insert into {} (id, "userId", location, "updatedAt") values (%s, %s, %s, now())').format(
                        self.table("UserProfile")
                    ),
                    [self.next_id("up"), user, self.rng.choice(CITIES)],
                )
            )
            if legacy:  # writing both: the new code writes the context's intent too
                statements.append(
                    (
                        "insert ContextIntent",
                        sql.SQL(
                            'insert into {} (id, "userId", "contextType", "updatedAt") values (%s, %s, %s::{}, now())'
                        ).format(self.table("ContextIntent"), self.table("RelationshipContextType")),
                        [self.next_id("ci"), user, context_type],
                    )
                )
        self.transaction(pg, "sign up", statements)
        with self.lock:
            self.signed_up.append(user)

    def delete_account(self, pg) -> None:
        with self.lock:
            if self.to_delete:
                user = self.to_delete.pop()
            elif len(self.signed_up) > 100:
                user = self.signed_up.pop(0)
            else:
                return
        statements = []
        if not self.flag("legacy-off"):
            statements += [
                (
                    "delete Profile",
                    sql.SQL(
                        'delete from {} where "contextProfileId" in (select id from {} where "userId" = %s)'
                    ).format(self.table("Profile"), self.table("ContextProfile")),
                    [user],
                ),
                (
                    "delete ContextProfile",
                    sql.SQL('delete from {} where "userId" = %s').format(self.table("ContextProfile")),
                    [user],
                ),
            ]
        statements.append(("delete User", sql.SQL("delete from {} where id = %s").format(self.table("User")), [user]))
        self.transaction(pg, "delete account", statements)

    def update_blob(self, pg) -> None:
        profile = self.rng.choice(self.blobs)
        if profile is None:
            return
        self.timed(
            pg,
            "update blob",
            sql.SQL(
                "update {} set data = coalesce(data, '{{}}'::jsonb) || jsonb_build_object('location', %s::text),"
                ' "updatedAt" = now() where id = %s'
            ).format(self.table("Profile")),
            [self.rng.choice(CITIES), profile],
        )

    def read_live(self, pg) -> None:
        user = self.rng.choice(self.readable)
        self.timed(
            pg,
            "read UserProfile",
            sql.SQL('select * from {} where "userId" = %s').format(self.table("UserProfile")),
            [user],
        )
        self.timed(
            pg,
            "read ContextIntent",
            sql.SQL('select * from {} where "userId" = %s').format(self.table("ContextIntent")),
            [user],
        )

    def update_live(self, pg) -> None:
        self.timed(
            pg,
            "update UserProfile location",
            sql.SQL('update {} set location = %s, "updatedAt" = now() where "userId" = %s').format(
                self.table("UserProfile")
            ),
            [self.rng.choice(CITIES), self.rng.choice(self.live_users)],
        )

    def hold(self) -> None:
        """During the first promote: ROW SHARE on "User" (FOR KEY SHARE on the held users' rows), the
        transaction open until `hold-release` appears."""
        pg = self.connect("hold")
        while not self.stop.is_set() and not self.flag("hold"):
            self.stop.wait(0.02)
        if self.stop.is_set():
            pg.close()
            return
        try:
            self.timed(pg, "hold: begin", "begin")
            self.timed(
                pg,
                "hold: select for key share",
                sql.SQL("select id from {} where id = any(%s) for key share").format(self.table("User")),
                [self.held],
            )
            opened = time.time()
            (self.control / "holding").write_text(str(pg.info.backend_pid))
            while not self.stop.is_set() and not self.flag("hold-release"):
                self.stop.wait(0.02)
            self.timed(pg, "hold: commit", "commit")
            self.record("hold open", opened, time.time() - opened, statement=False)
        except psycopg.Error:
            pass
        (self.control / "released").write_text("")
        pg.close()

    def always(self) -> bool:
        return True

    def deployed(self) -> bool:
        return self.flag("deploy")

    def legacy_on(self) -> bool:
        return not self.flag("legacy-off")

    def run(self) -> None:
        self.take_samples()
        loops = [
            ("read user", 0.020, self.read_user, self.always),
            ("update user", 0.050, self.update_user, self.always),
            ("sign up", 0.200, self.sign_up, self.always),
            ("delete account", 0.200, self.delete_account, self.always),
            ("update blob", 0.050, self.update_blob, self.legacy_on),
            ("read live", 0.050, self.read_live, self.deployed),
            ("update live", 0.050, self.update_live, self.deployed),
        ]
        watcher = threading.Thread(target=self.watch_control, daemon=True)
        watcher.start()
        threads = [threading.Thread(target=self.loop, args=loop, name=loop[0]) for loop in loops]
        threads.append(threading.Thread(target=self.hold, name="hold"))
        for thread in threads:
            thread.start()
        (self.control / "ready").write_text(json.dumps(self.sampled))
        while not self.stop.wait(0.2):
            pass
        for thread in threads:
            thread.join(timeout=STOP_WAIT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True, help="the legacy schema (the live tables are there too)")
    parser.add_argument("--control", type=Path, required=True, help="the directory of control files")
    parser.add_argument("--log", type=Path, required=True, help="the statement log (JSON lines, appended)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    simulator = Simulator(args)

    def stop(signum, frame) -> None:
        simulator.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        simulator.run()
    finally:
        simulator.stop.set()
        simulator.log.close()
    statements = sum(n for n, _ in simulator.counts.values())
    errors = sum(e for _, e in simulator.counts.values())
    print(json.dumps({"statements": statements, "errors": errors, "by_kind": simulator.counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
