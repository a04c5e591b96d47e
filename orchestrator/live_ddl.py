"""The live tables' DDL (spec §7, §9): creating them from Prisma's migration.sql, their foreign keys to
"User", and dropping them — each without holding the application's "User" for more than a moment.

Creating or dropping a foreign key to "User" locks "User" itself; so the keys are added after the first
promote's load has committed, and dropped before the transaction that drops the tables, each in a moment
of its own (docs/security.md lists every lock). ``statements`` writes all of it out for the linters.
"""

from __future__ import annotations

import re
import time

import psycopg
from psycopg import sql

from orchestrator import db
from orchestrator.errors import Traffic
from orchestrator.faults import fault_point
from orchestrator.live import LIVE_TABLES, MIGRATION_FILE

# Creating or dropping a foreign key to "User" locks "User" itself (SHARE ROW EXCLUSIVE to add one, which
# holds the application's writes; ACCESS EXCLUSIVE to drop one: its triggers live on "User"). Each is done
# alone in a transaction of its own, waiting at most KEY_LOCK_TIMEOUT for the lock (so the application's
# statements queued behind that request wait no longer), tried again up to KEY_LOCK_ATTEMPTS times.
KEY_LOCK_TIMEOUT = "200ms"
KEY_LOCK_ATTEMPTS = 50
KEY_LOCK_PAUSE = 0.2  # seconds between attempts


def _migration_statements() -> tuple[list[str], list[str]]:
    """Prisma's migration.sql as (the statements that create the tables and their indexes, the statements
    that add their foreign keys to "User")."""
    text = "\n".join(
        line for line in db.packaged_sql(MIGRATION_FILE).splitlines() if not line.lstrip().startswith("--")
    )
    statements = [part.strip() for part in text.split(";") if part.strip()]
    keys = [part for part in statements if "FOREIGN KEY" in part.upper()]
    return [part for part in statements if part not in keys], keys


def _search_path(pg: psycopg.Connection, live_schema: str, legacy_schema: str) -> None:
    """Unqualified names of migration.sql resolve in the live schema, then the legacy one (where "User" and
    the enum live when the live schema differs)."""
    path = sql.SQL(", ").join(sql.Identifier(s) for s in dict.fromkeys([live_schema, legacy_schema]))
    pg.execute(sql.SQL("set local search_path to {}").format(path))


def statements(live_schema: str, legacy_schema: str) -> list[str]:
    """Every DDL statement the orchestrator runs on the live and legacy schemas, as it runs them and in
    that order, each with the lock_timeout it runs under: creating the tables (in the first promote's
    transaction), adding and validating each foreign key (each in a transaction of its own), and, for
    rollback, dropping each key (each alone) and the tables. For linting (tests/python/test_live_ddl_lint.py)."""
    tables, keys = _migration_statements()
    names = [
        (re.search(r'ALTER TABLE "([^"]+)"', k).group(1), re.search(r'ADD CONSTRAINT "([^"]+)"', k).group(1))
        for k in keys
    ]
    path = ", ".join(f'"{schema}"' for schema in dict.fromkeys([live_schema, legacy_schema]))
    timeout = f"set lock_timeout = '{KEY_LOCK_TIMEOUT}'"
    statements = [f"set search_path to {path}", "set lock_timeout = '5s'", *tables]
    for key, (table, name) in zip(keys, names, strict=True):
        statements += [timeout, f"{key} NOT VALID", timeout, f'ALTER TABLE "{table}" VALIDATE CONSTRAINT "{name}"']
    for table, name in names:
        statements += [timeout, f'ALTER TABLE "{table}" DROP CONSTRAINT IF EXISTS "{name}"']
    statements += ["set lock_timeout = '5s'"] + [f'DROP TABLE IF EXISTS "{t}"' for t in reversed(LIVE_TABLES.values())]
    return statements


def create_live_tables(pg: psycopg.Connection, live_schema: str, legacy_schema: str) -> None:
    """Run Prisma's migration.sql as-is, but for its foreign keys (``add_foreign_keys`` adds them once the
    tables are loaded and committed: adding one inside the long load would hold the application's writes
    to "User" until its commit)."""
    tables, _ = _migration_statements()
    _search_path(pg, live_schema, legacy_schema)
    for statement in tables:
        pg.execute(sql.SQL(statement))
    pg.execute("set local search_path to default")


def _foreign_keys(pg: psycopg.Connection, live_schema: str) -> dict[str, dict]:
    """The live tables' foreign keys now: {constraint name: {"table", "validated"}}."""
    return {
        name: {"table": table, "validated": validated}
        for name, table, validated in pg.execute(
            "select k.conname, c.relname, k.convalidated from pg_constraint as k"
            " join pg_class as c on c.oid = k.conrelid join pg_namespace as n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = any(%s)"
            " and k.contype = 'f'",
            [live_schema, list(LIVE_TABLES.values())],
        ).fetchall()
    }


def _with_key_lock(pg: psycopg.Connection, what: str, work) -> None:
    """``work()`` in a short transaction of its own, under KEY_LOCK_TIMEOUT, tried again while the
    application's traffic holds the lock it needs; errors.Traffic (exit 1) after KEY_LOCK_ATTEMPTS."""
    for attempt in range(1, KEY_LOCK_ATTEMPTS + 1):
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(KEY_LOCK_TIMEOUT)))
                work()
            return
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            if attempt == KEY_LOCK_ATTEMPTS:
                raise Traffic(
                    f"could not {what}: application traffic held the lock it needs {KEY_LOCK_ATTEMPTS} times for "
                    f"{KEY_LOCK_TIMEOUT}; retry later"
                ) from None
            time.sleep(KEY_LOCK_PAUSE)


def add_foreign_keys(pg: psycopg.Connection, live_schema: str, legacy_schema: str) -> list[str]:
    """Give the live tables their foreign keys to "User", as migration.sql defines them, without holding the
    application: each key is added NOT VALID in a moment of its own (from then on a deleted user's rows go by
    the cascade), the rows of users deleted before that are removed (the cascade's work), and the key is
    validated apart (that reads, and blocks no write). Keys already there are left as they are. On ``pg``,
    an autocommit connection, outside any transaction. Returns the keys added or validated."""
    _, statements = _migration_statements()
    done = []
    for statement in statements:
        name = re.search(r'ADD CONSTRAINT "([^"]+)"', statement).group(1)
        table = re.search(r'ALTER TABLE "([^"]+)"', statement).group(1)
        present = _foreign_keys(pg, live_schema)
        if name not in present:

            def add(statement=statement) -> None:
                _search_path(pg, live_schema, legacy_schema)
                pg.execute(sql.SQL(statement + " NOT VALID"))

            _with_key_lock(pg, f'add the foreign key "{name}"', add)
            present = _foreign_keys(pg, live_schema)
        if not present[name]["validated"]:
            # users deleted before the key existed left their rows behind: the cascade would have removed them
            pg.execute(
                sql.SQL("delete from {} as l where not exists (select from {} as u where u.{} = l.{})").format(
                    sql.Identifier(live_schema, table),
                    sql.Identifier(legacy_schema, "User"),
                    sql.Identifier("id"),
                    sql.Identifier("userId"),
                )
            )
            _with_key_lock(
                pg,
                f'validate the foreign key "{name}"',
                lambda name=name, table=table: pg.execute(
                    sql.SQL("alter table {} validate constraint {}").format(
                        sql.Identifier(live_schema, table), sql.Identifier(name)
                    )
                ),
            )
            done.append(name)
    return done


def drop_foreign_keys(pg: psycopg.Connection, live_schema: str) -> None:
    """Drop the live tables' foreign keys, each in a moment of its own (ACCESS EXCLUSIVE on "User": its
    triggers live there), before the tables themselves are dropped in a transaction that then needs no lock
    on "User". On an autocommit connection, outside any transaction."""
    for name, key in _foreign_keys(pg, live_schema).items():
        _with_key_lock(
            pg,
            f'drop the foreign key "{name}"',
            lambda name=name, key=key: pg.execute(
                sql.SQL("alter table {} drop constraint if exists {}").format(
                    sql.Identifier(live_schema, key["table"]), sql.Identifier(name)
                )
            ),
        )


def drop_live_tables(pg: psycopg.Connection, live_schema: str) -> None:
    """Drop the live tables (their foreign keys first dropped by ``drop_foreign_keys``, else this takes
    ACCESS EXCLUSIVE on "User" until the caller's commit)."""
    for live_table in reversed(list(LIVE_TABLES.values())):
        pg.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(live_schema, live_table)))
        fault_point("rollback:mid-drop")
