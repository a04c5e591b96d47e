"""Hash batches of users for a full dry run (``orchestrator dry-run --batches K``).

Every intermediate model is local to a user, so the per-user chain (the dbt models tagged
``user_batched``) can be built once per batch of users, into ``<model>__batch_<k>`` tables, two
batches at a time on two connections. The main ``dbt build`` then appends each model's batch tables
in a view and builds the marts and runs every test over them (macros/user_batches.sql). Each batch
sorts and aggregates about 1/K of the data, which bounds its memory and temp files, and the two
batch builds in flight use both cores on what is otherwise one serial chain of models.

dbt runs in-process and keeps global state, so each batch build runs in its own process, with its
own dbt state directory (``DbtProject.batch``).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import gc
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable

from psycopg import sql

from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, DbtResult

MAX_BATCHES = 64
# batch builds in flight at once: one per core, at most two (measured on 2 cores; more would multiply
# the memory in use, unmeasured); each runs without parallel workers (dbt.BATCH_SESSION_OPTIONS)
WORKERS = max(1, min(2, os.cpu_count() or 1))
# `--batches auto`: no batches below AUTO_MIN_USERS (each batch costs about 5 s of its own: a process,
# dbt's parse, a scan of the legacy tables); above, about AUTO_USERS_PER_BATCH users per batch. At 1M
# users, 8 batches measured 221 s against 230 s for 4, 255 s for 16 and 265 s for none.
AUTO_MIN_USERS = 500_000
AUTO_USERS_PER_BATCH = 125_000
SELECTOR = "tag:user_batched"
BATCH_SUFFIX = r"__batch_[0-9]+$"


@dataclasses.dataclass
class BatchOutcome:
    index: int
    seconds: float
    result: DbtResult


def auto_count(users: int) -> int:
    """The batch count ``--batches auto`` picks for ``users`` users."""
    if users < AUTO_MIN_USERS:
        return 1
    return min(MAX_BATCHES, round(users / AUTO_USERS_PER_BATCH))


def auto_count_of(pg, legacy_schema: str) -> int:
    """The batch count ``--batches auto`` picks for the users of ``legacy_schema``."""
    users = pg.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(legacy_schema, "User"))).fetchone()[0]
    return auto_count(users)


def drop_batch_relations(pg, schema: str) -> None:
    """Drop every batch table and view a batched dry run left in ``schema``.

    Run before every full dry run: batch tables of an earlier K would otherwise linger (and hold
    copies of personal data) after a dry run that no longer reads them.
    """
    rows = pg.execute(
        "select c.relname, c.relkind from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname ~ %s and c.relkind in ('r', 'v', 'p')"
        " order by c.relkind = 'v' desc, c.relname",
        [schema, BATCH_SUFFIX],
    ).fetchall()
    for name, kind in rows:
        statement = "drop view if exists {} cascade" if kind == "v" else "drop table if exists {} cascade"
        pg.execute(sql.SQL(statement).format(sql.Identifier(schema, name)))


def build_batch(settings: Settings, conn: ConnInfo, count: int, index: int) -> BatchOutcome:
    """Batch ``index`` of ``count``: its users' chain of models, in the dry-run schema of ``settings``.

    Runs in a child process of ``build_batches`` (its result is made picklable), or alone.
    """
    started = time.monotonic()
    result = DbtProject(settings, conn).batch(index, count).invoke(["run", "--select", SELECTOR])
    if result.exception is not None:
        result.exception = RuntimeError(str(result.exception))
    return BatchOutcome(index, time.monotonic() - started, result)


def _die_with_parent(parent: int) -> None:
    """In each batch process: end with the dry run that started it (Linux: PR_SET_PDEATHSIG).

    The dry run holds the lock that keeps a second dry run out; a batch build that outlived a killed
    dry run would go on writing into the dry-run schema without it. A dry run that died while this
    process was starting sent no signal: then it is already gone, and so is this process.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)
    atexit.register(gc.freeze)  # no final collection of dbt's objects when the process ends (cli.main)


def build_batches(
    settings: Settings,
    conn: ConnInfo,
    count: int,
    on_batch_finished: Callable[[BatchOutcome], None] | None = None,
) -> list[BatchOutcome]:
    """Build the per-user chain for batches 0..count-1, ``WORKERS`` at a time.

    Stops starting new batches at the first failure; returns the batches that ran, in index order.
    """
    outcomes: list[BatchOutcome] = []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no dbt state shared
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(WORKERS, count), mp_context=context, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        pending = {pool.submit(build_batch, settings, conn, count, index) for index in range(count)}
        failed = False
        for future in concurrent.futures.as_completed(pending):
            if future.cancelled():
                continue
            outcome = future.result()
            outcomes.append(outcome)
            if on_batch_finished is not None:
                on_batch_finished(outcome)
            if not outcome.result.success and not failed:
                failed = True
                for other in pending:
                    other.cancel()
    return sorted(outcomes, key=lambda outcome: outcome.index)
