"""Advisory locks: one promote, rollback or cleanup at a time, and one dry run at a time, per database.

Session-level locks on autocommit connections: released when the connection closes, also when the
process dies, so a killed run never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from psycopg import sql

from orchestrator import db
from orchestrator.config import ConnInfo
from orchestrator.errors import Busy, Traffic

# pg_advisory_lock key: "orchestrator promote" (one promote or rollback at a time, per database)
LOCK_KEY = 0x6F7263_70726F6D
# pg_advisory_lock(class, 0): "orcd", one dry run (dbt build into a dry-run schema) at a time per database
DRY_RUN_LOCK = (0x6F726364, 0)


@contextlib.contextmanager
def promote_lock(conn: ConnInfo, what: str, lock_timeout: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection holding the session-level promote lock. With ``lock_timeout``, every
    statement of the session, planning included, gives up waiting for a table lock after that long
    rather than queueing behind application traffic."""
    with db.connect(conn, autocommit=True, application_name=f"orchestrator {what}") as pg:
        got = pg.execute("select pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
        if not got:
            holder = pg.execute(
                "select a.pid, a.application_name, a.backend_start from pg_locks as l join pg_stat_activity as a"
                " on a.pid = l.pid where l.locktype = 'advisory' and l.granted"
                " and (l.classid::bigint << 32 | l.objid::bigint) = %s limit 1",
                [LOCK_KEY],
            ).fetchone()
            who = f" ({holder[1] or 'a session'}, pid {holder[0]}, since {holder[2]:%H:%M:%S})" if holder else ""
            raise Busy(
                f"another promote, sync round or rollback is running on this database{who}: wait for it to "
                f"finish, then retry"
            )
        try:
            if lock_timeout is not None:
                pg.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(lock_timeout)))
            yield pg
        except psycopg.errors.LockNotAvailable:
            raise Traffic(
                f"could not lock a table within {lock_timeout} (application traffic holds it); nothing was "
                f"changed: retry later or raise --lock-timeout"
            ) from None
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            raise Traffic(
                f"the application's traffic interfered ({' '.join(str(exc).split())[:200]}); nothing was changed: "
                f"retry (sync --follow does, next round)"
            ) from None
        finally:
            with contextlib.suppress(psycopg.Error):
                pg.execute("select pg_advisory_unlock(%s)", [LOCK_KEY])


@contextlib.contextmanager
def dry_run_lock(pg: psycopg.Connection) -> Iterator[None]:
    """Held by a dry run on its (autocommit) connection while it builds: two dbt builds at once would
    replace each other's tables, and a dry run's record must describe the tables it leaves."""
    if not pg.execute("select pg_try_advisory_lock(%s, %s)", DRY_RUN_LOCK).fetchone()[0]:
        holder = pg.execute(
            "select a.pid, a.application_name from pg_locks as l join pg_stat_activity as a on a.pid = l.pid"
            " where l.locktype = 'advisory' and l.granted and l.classid = %s::bigint::oid"
            " and l.objid = %s::bigint::oid and l.objsubid = 2 limit 1",
            DRY_RUN_LOCK,
        ).fetchone()
        who = f" ({holder[1] or 'a session'}, pid {holder[0]})" if holder else ""
        raise Busy(f"another dry run is building on this database{who}: wait for it to finish, then retry")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            pg.execute("select pg_advisory_unlock(%s, %s)", DRY_RUN_LOCK)
