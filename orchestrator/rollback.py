"""`orchestrator rollback` and `cleanup`: undo the last promote or sync round that changed the live
tables, from the backups it kept (spec §8, §9); remove backups beyond the kept levels.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import psycopg
from psycopg import sql

from orchestrator import changes, db, live, live_ddl, locks, metadata, stream
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import Busy, CheckFailed, OrchestratorError
from orchestrator.faults import fault_point
from orchestrator.publish import record_outcome_and_reraise, refuse_drift


@dataclasses.dataclass
class RollbackResult:
    run_id: str
    undone_run_id: str | None
    dropped: bool
    counts: dict
    legacy_unchanged: bool
    dead_runs: list[dict]
    skipped_unchanged: list[str]  # promotes after the undone one that changed nothing (marked rolled back too)
    undone_command: str | None = None  # the undone run's command: promote or sync

    def as_dict(self, live_schema: str) -> dict:
        return {"live_schema": live_schema, **dataclasses.asdict(self)}


def rollback(
    settings: Settings,
    conn: ConnInfo,
    *,
    drop: bool,
    confirm: Callable[[str], None],
    force: bool = False,
    lock_timeout: str = "5s",
) -> RollbackResult:
    with locks.promote_lock(conn, "rollback", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        last = metadata.last_committed_promote(pg, settings.meta_schema)
        # promotes that changed nothing since: undoing them is nothing to do, and must not use up a rollback
        skipped = metadata.unchanged_promotes_since(pg, settings.meta_schema, last)
        present = live.live_tables_present(pg, settings.live_schema)
        if not drop and last is None:
            raise CheckFailed(
                "there is no promote to roll back: nothing was changed"
                + (" (use --drop to remove the live tables)" if any(present.values()) else "")
            )
        if drop and not any(present.values()):
            raise CheckFailed(f"there are no live tables in schema {settings.live_schema} to drop: nothing was changed")
        action = (
            "drop the live tables"
            if drop or last["created_tables"]
            else f"restore the live tables to their state before {_run_name(last)} {last['run_id']}"
        )
        confirm(action)
        run_id = metadata.record_run(
            pg,
            settings.meta_schema,
            command="rollback",
            status="started",
            live_schema=settings.live_schema,
            scope="all",
            message=action,
        )
        fault_point("rollback:started")
        dropping = drop or last["created_tables"]
        try:
            if dropping and any(present.values()):
                # refused before anything changes; then the keys to "User" go, each in a moment of its own,
                # so that dropping the tables below takes no lock on "User"
                refuse_drift(pg, settings, force, "rollback")
                live_ddl.drop_foreign_keys(pg, settings.live_schema)
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                # a partial promote or a sync round is undone for the users it wrote: only their live rows
                # are checked for drift (and --force overrides it for them alone), and only theirs become ours
                scope_table = (
                    metadata.written_users(pg, settings.meta_schema, last)
                    if not dropping and last["scope"] == "users"
                    else None
                )
                if any(present.values()):
                    refuse_drift(pg, settings, force, "rollback", scope_table)
                counts: dict = {}
                if dropping:
                    live_ddl.drop_live_tables(pg, settings.live_schema)
                    undone = metadata.live_promotes(pg, settings.meta_schema) if drop else [last["run_id"]]
                else:
                    pairs = (
                        live.table_pairs(pg, settings.dry_run_schema, settings.live_schema)
                        if db.table_exists(pg, settings.dry_run_schema, "profile")
                        else live.live_only_pairs(pg, settings.dry_run_schema, settings.live_schema)
                    )
                    for pair in pairs:
                        counts[pair.live_table] = live.restore(
                            pg, pair, settings.meta_schema, last["run_id"], settings.legacy_schema
                        )
                    undone = [last["run_id"]]
                metadata.mark_rolled_back(pg, settings.meta_schema, run_id, undone + skipped)
                if dropping:
                    changes.clear(pg, settings.meta_schema, "live")
                else:
                    # newest first: the skipped runs recorded reads too, on top of the undone one's
                    for run in [*reversed(skipped), last["run_id"]]:
                        changes.restore(pg, settings.meta_schema, run)
                live.forget_run(pg, settings.meta_schema, undone + skipped)
                changes.forget(pg, settings.meta_schema, undone + skipped)
                live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema, scope_table)
                # before the commit: once committed, nothing may fail and make a done rollback look undone.
                # The legacy tables are verified untouched by this transaction's own writes to them (none),
                # not by a fingerprint, which the application's writes meanwhile would change.
                legacy_written = _legacy_rows_written(pg, settings.legacy_schema)
                metadata.finish_run(
                    pg,
                    settings.meta_schema,
                    run_id,
                    "committed",
                    counts=counts,
                    undoes_run_id=last["run_id"] if last else None,
                )
                fault_point("rollback:before-commit")
        except BaseException as exc:
            # the tables stay: so do their keys (best effort: the next promote or round adds any still missing)
            with contextlib.suppress(psycopg.Error, Busy):
                if dropping and all(live.live_tables_present(pg, settings.live_schema).values()):
                    live_ddl.add_foreign_keys(pg, settings.live_schema, settings.legacy_schema)
            record_outcome_and_reraise(pg, settings, run_id, exc, lock_timeout, "the live tables")
        fault_point("rollback:after-commit")
        return RollbackResult(
            run_id,
            last["run_id"] if last else None,
            drop or bool(last and last["created_tables"]),
            counts,
            legacy_written == 0,
            dead,
            skipped,
            last["command"] if last else None,
        )


def _legacy_rows_written(pg, legacy_schema: str) -> int:
    """Rows of the legacy tables this transaction inserted, updated or deleted (pg_stat_xact_user_tables
    counts the current transaction's own)."""
    return pg.execute(
        "select coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) from pg_stat_xact_user_tables"
        " where schemaname = %s and relname = any(%s)",
        [legacy_schema, ["User", "ContextProfile", "Profile", "ChatMessage"]],
    ).fetchone()[0]


def cleanup(settings: Settings, conn: ConnInfo, keep: int) -> tuple[list[str], str | None]:
    """Remove rollback backups of all but the ``keep`` most recent committed promotes (keep >= 1), and the
    change stream's replication slot, which holds WAL back on the server (the next catch-up or round makes
    a new one): the promotes whose backups went, and the slot dropped (None: there was none)."""
    if keep < 1:
        raise OrchestratorError("--keep must be at least 1: rollback always keeps the state before the last promote")
    with locks.promote_lock(conn, "cleanup") as pg:
        metadata.ensure(pg, settings.meta_schema)
        old = metadata.promotes_older_than(pg, settings.meta_schema, keep)
        with pg.transaction():
            live.forget_run(pg, settings.meta_schema, old)
            changes.forget(pg, settings.meta_schema, old)
            metadata.mark_backups_removed(pg, settings.meta_schema, old)
        with locks.dry_run_lock(pg):  # no round reads the slot meanwhile
            slot = stream.drop(pg, settings)
        return old, slot


def _run_name(run: dict) -> str:
    return "sync round" if run["command"] == "sync" else "promote"
