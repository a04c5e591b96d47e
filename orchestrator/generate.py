"""`orchestrator generate`: a realistic legacy dataset of N users in the exact §1 DDL, set-based and reproducible.

Every row is a pure function of (seed, row number) computed by PostgreSQL (``sql/generate.sql``):
the same seed gives byte-identical rows, whatever the number of workers or the server. The load
follows the fast path for bulk data: the §1 tables are created, their primary keys dropped and
the tables made unlogged; the rows are inserted in ranges of users by concurrent connections; then
the tables are made logged again, the primary keys are put back (same names, same definition) and
the tables are vacuumed (frozen) and analysed, so they end as plain §1 tables that look long-lived.

Safety (spec §9): the schema is marked with a comment; ``generate`` only drops and rebuilds a
schema that it made, or an empty one, and refuses a schema whose tables hold rows it did not make.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
from psycopg import sql

from orchestrator import db, fixtures
from orchestrator.config import ConnInfo, Settings, validate_identifier
from orchestrator.errors import OrchestratorError
from orchestrator.feedback import Feedback

MARKER = "orchestrator generate: synthetic legacy data, safe to drop"
PRIMARY_KEYS = {table: f"{table}_pkey" for table in db.LEGACY_TABLES}  # the names CREATE TABLE gives them
PHANTOM_SHARE = 0.009  # users whose context profiles are orphans (~1% of context profiles), per real user
MAX_USERS = 16_000_000  # every row number (at most u * 128) stays below 2^31, where hashint8extended does not fold

# section of generate.sql -> table it loads
LOADS = {
    "users": "User",
    "context_profiles": "ContextProfile",
    "profiles": "Profile",
    "chat_messages": "ChatMessage",
}


@dataclasses.dataclass
class GenerateResult:
    schema: str
    users: int
    seed: int
    counts: dict[str, int]
    timings: dict[str, float]  # phase -> seconds

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


def phantom_users(users: int) -> int:
    return max(1, round(users * PHANTOM_SHARE))


def marker_for(users: int, seed: int, *, complete: bool = True) -> str:
    return f"{MARKER} (users {users}, seed {seed}{'' if complete else ', incomplete: generation did not finish'})"


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 2, 8))


def generate(
    conn: ConnInfo,
    schema: str,
    users: int,
    seed: int = 1,
    *,
    workers: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
    unlogged_load: bool = True,
) -> GenerateResult:
    """(Re)create ``schema`` with the §1 tables holding a generated dataset of ``users`` users."""
    schema = validate_identifier(schema, "generated legacy schema")
    if not 1 <= users <= MAX_USERS:
        raise OrchestratorError(f"--users must be between 1 and {MAX_USERS:,}, not {users:,}")
    if not 0 <= seed < 2**31:
        raise OrchestratorError(f"--seed must be between 0 and {2**31 - 1}, not {seed}")
    workers = workers or default_workers()
    parts = db.packaged_sql_sections("generate.sql")
    prelude = sql.SQL(parts["prelude"]).format(seed=sql.Literal(seed), users=sql.Literal(users))
    timings: dict[str, float] = {}

    def phase(name: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        detail = action()
        timings[name] = time.monotonic() - started
        progress(f"{name}: {detail} ({timings[name]:.1f} s)")

    tables = [sql.Identifier(schema, table) for table in db.LEGACY_TABLES]

    def prepare() -> str:
        with db.connect(conn) as pg:
            fixtures.refuse_foreign_schema(pg, schema, marker=MARKER, command="orchestrator generate")
            with _failing_on_locks(schema), pg.transaction():
                pg.execute("set local lock_timeout = '10s'")
                pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
                pg.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
                pg.execute(
                    sql.SQL("comment on schema {} is {}").format(
                        sql.Identifier(schema), sql.Literal(marker_for(users, seed, complete=False))
                    )
                )
                db.set_search_path(pg, schema)
                pg.execute(db.packaged_sql("legacy_schema.sql"))
                for table, relation in zip(db.LEGACY_TABLES, tables, strict=True):
                    pg.execute(
                        sql.SQL("alter table {} drop constraint {}").format(
                            relation, sql.Identifier(PRIMARY_KEYS[table])
                        )
                    )
                    if unlogged_load:
                        pg.execute(sql.SQL("alter table {} set unlogged").format(relation))
        return f"schema {schema} created with the legacy tables, keys dropped for the load"

    phase("prepare", prepare)

    total = users + phantom_users(users)
    chunk = max(1000, math.ceil(total / (workers * 4)))
    ranges = [(lo, min(lo + chunk - 1, total)) for lo in range(1, total + 1, chunk)]
    pool = _Workers(conn, schema, prelude, workers)
    try:
        for section, table in LOADS.items():
            statement = sql.SQL(parts[section])
            phase(
                f"load {table}",
                lambda statement=statement: (
                    f"{sum(pool.map(statement, ranges)):,} rows ({len(ranges)} ranges of users, {workers} connections)"
                ),
            )
    finally:
        pool.close()

    def per_table(statement: sql.Composable, detail: str, settings: dict[str, str] | None = None) -> str:
        """``statement`` on each table, the biggest first, on concurrent connections."""

        def one(table: str) -> None:
            with db.connect(conn, autocommit=True, application_name="orchestrator generate") as pg:
                for name, value in (settings or {}).items():
                    pg.execute("select set_config(%s, %s, false)", [name, value])
                relation, key = sql.Identifier(schema, table), sql.Identifier(PRIMARY_KEYS[table])
                pg.execute(statement.format(table=relation, key=key))

        order = ["Profile", "ChatMessage", "ContextProfile", "User"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(order))) as executor:
            for future in [executor.submit(one, table) for table in order]:
                future.result()
        return detail

    if unlogged_load:
        phase("set logged", lambda: per_table(sql.SQL("alter table {table} set logged"), "4 tables"))
    primary_key = sql.SQL('alter table {table} add constraint {key} primary key ("id")')
    phase("primary keys", lambda: per_table(primary_key, "4 primary keys", {"maintenance_work_mem": "256MB"}))
    vacuum = sql.SQL("vacuum (freeze, analyze) {table}")
    phase("vacuum", lambda: per_table(vacuum, "4 tables frozen and analysed"))

    with db.connect(conn) as pg:
        counts = {
            table: pg.execute(sql.SQL("select count(*) from {}").format(relation)).fetchone()[0]
            for table, relation in zip(db.LEGACY_TABLES, tables, strict=True)
        }
        pg.execute(
            sql.SQL("comment on schema {} is {}").format(sql.Identifier(schema), sql.Literal(marker_for(users, seed)))
        )
        pg.commit()
    return GenerateResult(schema=schema, users=users, seed=seed, counts=counts, timings=timings)


@contextlib.contextmanager
def _failing_on_locks(schema: str) -> Iterator[None]:
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise OrchestratorError(
            f"schema {schema} is in use (another session holds a lock on its tables, e.g. a running dry run "
            f"or query): nothing was changed; retry when it is done"
        ) from None


class _Workers:
    """``workers`` connections, each with the generator's functions, running statements over ranges of users."""

    def __init__(self, conn: ConnInfo, schema: str, prelude: sql.Composable, workers: int):
        self.conn, self.schema, self.prelude = conn, schema, prelude
        self.local = threading.local()
        self.connections: list[psycopg.Connection] = []
        self.lock = threading.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers)

    def _connection(self) -> psycopg.Connection:
        pg = getattr(self.local, "pg", None)
        if pg is None:
            pg = psycopg.connect(
                **self.conn.kwargs(), autocommit=True, application_name="orchestrator generate", prepare_threshold=None
            )
            pg.execute(sql.SQL("set search_path to {}").format(sql.Identifier(self.schema)))
            pg.execute(self.prelude)
            self.local.pg = pg
            with self.lock:
                self.connections.append(pg)
        return pg

    def _run(self, statement: sql.Composable, lo: int, hi: int) -> int:
        return self._connection().execute(statement, {"lo": lo, "hi": hi}).rowcount

    def map(self, statement: sql.Composable, ranges: list[tuple[int, int]]) -> list[int]:
        futures = [self.executor.submit(self._run, statement, lo, hi) for lo, hi in ranges]
        return [future.result() for future in futures]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        for pg in self.connections:
            pg.close()


def generate_as_legacy(
    settings: Settings, conn: ConnInfo, schema: str, users: int, seed: int, *, workers: int | None, feedback: Feedback
) -> GenerateResult:
    """`orchestrator generate`: the dataset, then (on the embedded server) ``schema`` remembered as the
    legacy schema of later commands, like `fixtures load` does."""
    result = generate(conn, schema, users, seed, workers=workers, progress=feedback.note)
    db.remember_legacy_schema(settings, schema)
    return result
