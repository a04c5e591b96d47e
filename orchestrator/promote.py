"""Promote the verified dry run into the live tables, and roll back (spec §8, §9).

Order of a promote: take the promote lock (one promote or rollback at a time) → mark runs that
died → check the gates (read-only; one of them parses the project: the dry run must have been built
by the current models) → show the plan and ask → record `started` → one transaction: lock the
dry-run tables and check they are the ones the gated dry run built, re-check the legacy fingerprint,
check live drift, create the tables if absent, back up and write only the rows that differ, refresh
the snapshot, record `committed`. A failure records `failed`; a killed process leaves `started`,
which the next run reports and marks `died`. ``fault_point`` calls mark where the hardening tests
crash it (orchestrator/faults.py, docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from decimal import Decimal

import psycopg
from psycopg import sql

from orchestrator import db, fingerprint, gates, live, locks, metadata
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, preload
from orchestrator.dry_run import rebuild_users
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.faults import fault_point
from orchestrator.feedback import SILENT, Feedback


@dataclasses.dataclass
class PromoteResult:
    run_id: str
    plan: dict[str, dict[str, int]]
    created_tables: bool
    gates: list[gates.Gate]
    dead_runs: list[dict]
    users: list[str] | None
    max_conflict_rate: Decimal

    def as_dict(self, live_schema: str) -> dict:
        return {
            "run_id": self.run_id,
            "live_schema": live_schema,
            "scope": "users" if self.users is not None else "all",
            "users": self.users,
            "created_tables": self.created_tables,
            "max_conflict_rate": self.max_conflict_rate,
            "plan": self.plan,
            "gates": [gate.as_dict() for gate in self.gates],
            "dead_runs": self.dead_runs,
        }


def promote(
    settings: Settings,
    conn: ConnInfo,
    *,
    confirm: Callable[[dict], None],
    max_conflict_rate: Decimal | None = None,
    users: list[str] | None = None,
    force: bool = False,
    lock_timeout: str = "5s",
    feedback: Feedback = SILENT,
) -> PromoteResult:
    """Publish the dry run (or, with ``users``, those users rebuilt from current legacy data).

    ``max_conflict_rate``: the gate's threshold; None: the one the dry run was built with
    (gates.threshold_of). ``confirm(plan)`` is called with the changes before anything is written; it
    raises to stop.
    """
    preload()  # import dbt meanwhile: the gates parse the project (and a partial promote rebuilds)
    with locks.promote_lock(conn, "promote", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        full_dry_run = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
        )
        threshold = gates.threshold_of(settings, full_dry_run).value if max_conflict_rate is None else max_conflict_rate
        scope_table = None
        dry_run, dry_run_schema = full_dry_run, settings.dry_run_schema
        project = DbtProject(settings, conn)
        parse = project.parse()
        if users is not None:
            scope_table = metadata.write_user_scope(pg, settings.meta_schema, users)
            unknown = metadata.unknown_scope_users(pg, settings.meta_schema, settings.legacy_schema)
            if unknown:
                raise CheckFailed(
                    f"not legacy users: {', '.join(_shown_id(u) for u in unknown)}: check the ids (they match "
                    f'"User"."id" byte for byte); nothing was changed'
                )
            dry_run = rebuild_users(settings, conn, pg, max_conflict_rate=threshold, feedback=feedback).record
            dry_run_schema = settings.partial_schema
            # right after the rebuild, its own dbt state parses only what changed since (promote's lock
            # keeps other partial rebuilds out)
            parse = project.partial(max_conflict_rate=threshold)
        checked = gates.check(
            pg,
            settings,
            dry_run,
            dry_run_schema=dry_run_schema,
            max_conflict_rate=threshold,
            scope_table=scope_table,
            current_models_version=_models_now(parse) if dry_run is not None else None,
            rebuilt_now=users is not None,
        )
        failed = [gate for gate in checked if not gate.passed]
        audit = {
            "command": "promote",
            "live_schema": settings.live_schema,
            "scope": "users" if users is not None else "all",
            "scope_users": len(users) if users is not None else None,
            "dry_run": dry_run,
            "gates": {g.name: g.as_dict() for g in checked},
            "max_conflict_rate": threshold,
        }
        if failed:
            metadata.record_run(
                pg, settings.meta_schema, status="refused", message="; ".join(g.name for g in failed), **audit
            )
            raise CheckFailed(
                "promote refused, nothing was changed: "
                + "; ".join(f"gate '{g.name}' failed ({g.figure}): {g.remedy}" for g in failed)
            )
        fault_point("promote:after-gates")

        present = live.live_tables_present(pg, settings.live_schema)
        if any(present.values()) and not all(present.values()):
            raise OrchestratorError(
                f"only one of the live tables exists in schema {settings.live_schema} ({present}): "
                f"run `orchestrator rollback --drop` to start clean"
            )
        exists = all(present.values())
        pairs = live.table_pairs(pg, dry_run_schema, settings.live_schema) if exists else None
        change_plan = (
            {p.live_table: live.plan(pg, p, scope_table, True) for p in pairs}
            if exists
            else _plan_for_new_tables(pg, dry_run_schema, scope_table)
        )
        confirm(change_plan)

        run_id = metadata.record_run(pg, settings.meta_schema, status="started", **audit)
        if users is not None:
            metadata.record_scope_users(pg, settings.meta_schema, run_id)
        fault_point("promote:started")
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                _hold_dry_run(pg, dry_run, dry_run_schema)
                current = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
                if current != dry_run["fingerprint_after"]:
                    raise CheckFailed(
                        "promote refused, nothing was changed: the legacy tables changed after the gates were "
                        "checked ("
                        + fingerprint.describe_difference(dry_run["fingerprint_after"], current)
                        + "): run `orchestrator dry-run` again"
                    )
                if exists:
                    _refuse_drift(pg, settings, force, "promote", scope_table)
                    for pair in pairs:
                        live.write(pg, pair, scope_table, settings.meta_schema, run_id)
                    live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema, scope_table)
                else:
                    live.create_live_tables(pg, settings.live_schema, settings.legacy_schema)
                    for pair in live.table_pairs(pg, dry_run_schema, settings.live_schema):
                        live.load_new(pg, pair, scope_table)
                    live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema)
                fault_point("promote:before-audit")
                metadata.finish_run(
                    pg,
                    settings.meta_schema,
                    run_id,
                    "committed",
                    counts=change_plan,
                    created_tables=not exists,
                    changed=not exists or _changes_rows(change_plan),
                )
                fault_point("promote:audit-row")
        except BaseException as exc:
            _record_outcome_and_reraise(
                pg,
                settings,
                run_id,
                exc,
                lock_timeout,
                "the live tables (or the dry-run tables, while a dbt build replaces them)",
            )
        fault_point("promote:after-commit")
        return PromoteResult(run_id, change_plan, not exists, checked, dead, users, threshold)


def _changes_rows(plan: dict[str, dict[str, int]]) -> bool:
    return any(counts[change] for counts in plan.values() for change in ("inserted", "updated", "deleted"))


def _models_now(parse) -> str:
    try:
        return parse.current_models_version()
    except OrchestratorError as exc:
        raise OrchestratorError(
            f"{exc}, so promote cannot check that the dry run was built by them; nothing was changed"
        ) from None


def _hold_dry_run(pg: psycopg.Connection, dry_run: dict, dry_run_schema: str) -> None:
    """Inside the promote transaction: lock the dry-run tables promote reads (a dbt build replacing them
    waits until the commit: dbt renames in a transaction), and make sure they are the very tables the
    gated dry run built, not a later rebuild (another dry run, or dbt run by hand)."""
    present = [t for t in metadata.DRY_RUN_TABLES if db.table_exists(pg, dry_run_schema, t)]
    if present:
        pg.execute(
            sql.SQL("lock table {} in share mode").format(
                sql.SQL(", ").join(sql.Identifier(dry_run_schema, t) for t in present)
            )
        )
    now = metadata.dry_run_relations(pg, dry_run_schema)
    if not dry_run.get("dry_run_tables") or now != dry_run["dry_run_tables"]:
        raise CheckFailed(
            f"promote refused, nothing was changed: the tables in schema {dry_run_schema} are not the ones dry run "
            f"{dry_run['dry_run_id']} built and the gates checked (a later dbt build replaced them, or that dry "
            f"run is still building): run `orchestrator dry-run` again, then promote"
        )


def _plan_for_new_tables(pg, dry_run_schema: str, scope_table: sql.Composable | None) -> dict[str, dict[str, int]]:
    plan = {}
    for dry_table, live_table in live.LIVE_TABLES.items():
        count = pg.execute(
            sql.SQL("select count(*) from {} as d where {}").format(
                sql.Identifier(dry_run_schema, dry_table), live.scope_filter(sql.SQL("d.user_id"), scope_table)
            )
        ).fetchone()[0]
        plan[live_table] = {"inserted": count, "updated": 0, "deleted": 0, "unchanged": 0}
    return plan


def _refuse_drift(pg, settings: Settings, force: bool, command: str, scope_table: sql.Composable | None = None) -> None:
    differing = live.drift(pg, settings.meta_schema, settings.live_schema, scope_table)
    total = sum(differing.values())
    if total and not force:
        detail = ", ".join(f'"{table}" {count}' for table, count in differing.items() if count)
        raise CheckFailed(
            f"{command} refused, nothing was changed: the live tables changed since our last promote or rollback "
            f"({total} rows differ: {detail}), probably written by the application: check them, then use --force "
            f"to overwrite"
        )


def _shown_id(user_id: str) -> str:
    """A user id as a message shows it: repr (quotes, escapes), cut short when long."""
    if len(user_id) <= 80:
        return repr(user_id)
    return f"{user_id[:60]!r}... ({len(user_id)} characters)"


def _record_outcome_and_reraise(
    pg, settings: Settings, run_id: str, exc: BaseException, lock_timeout: str, what: str
) -> None:
    """A run's transaction failed: record `refused` (a check) or `failed`, then re-raise; a lock wait
    that ran out becomes a clear could-not-run error."""
    with contextlib.suppress(psycopg.Error):
        status = "refused" if isinstance(exc, CheckFailed) else "failed"
        metadata.finish_run(pg, settings.meta_schema, run_id, status, message=_one_line(exc))
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        raise OrchestratorError(
            f"could not lock {what} within {lock_timeout} (application traffic holds them); nothing was changed: "
            f"retry later or raise --lock-timeout"
        ) from None
    raise exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


@dataclasses.dataclass
class RollbackResult:
    run_id: str
    undone_run_id: str | None
    dropped: bool
    counts: dict
    legacy_unchanged: bool
    dead_runs: list[dict]
    skipped_unchanged: list[str]  # promotes after the undone one that changed nothing (marked rolled back too)

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
            else f"restore the live tables to their state before promote {last['run_id']}"
        )
        confirm(action)
        legacy_before = fingerprint.legacy_fingerprint(pg, settings.legacy_schema)
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
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                if any(present.values()):
                    _refuse_drift(pg, settings, force, "rollback")
                counts: dict = {}
                if drop or last["created_tables"]:
                    live.drop_live_tables(pg, settings.live_schema)
                    undone = metadata.live_promotes(pg, settings.meta_schema) if drop else [last["run_id"]]
                else:
                    pairs = (
                        live.table_pairs(pg, settings.dry_run_schema, settings.live_schema)
                        if db.table_exists(pg, settings.dry_run_schema, "profile")
                        else live.live_only_pairs(pg, settings.dry_run_schema, settings.live_schema)
                    )
                    for pair in pairs:
                        counts[pair.live_table] = live.restore(pg, pair, settings.meta_schema, last["run_id"])
                    undone = [last["run_id"]]
                metadata.mark_rolled_back(pg, settings.meta_schema, run_id, undone + skipped)
                live.forget_run(pg, settings.meta_schema, undone)
                live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema)
                # before the commit: once committed, nothing may fail and make a done rollback look undone
                legacy_after = fingerprint.legacy_fingerprint(pg, settings.legacy_schema)
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
            _record_outcome_and_reraise(pg, settings, run_id, exc, lock_timeout, "the live tables")
        fault_point("rollback:after-commit")
        return RollbackResult(
            run_id,
            last["run_id"] if last else None,
            drop or bool(last and last["created_tables"]),
            counts,
            legacy_before == legacy_after,
            dead,
            skipped,
        )


def cleanup(settings: Settings, conn: ConnInfo, keep: int) -> list[str]:
    """Remove rollback backups of all but the ``keep`` most recent committed promotes (keep >= 1)."""
    if keep < 1:
        raise OrchestratorError("--keep must be at least 1: rollback always keeps the state before the last promote")
    with locks.promote_lock(conn, "cleanup") as pg:
        metadata.ensure(pg, settings.meta_schema)
        old = metadata.promotes_older_than(pg, settings.meta_schema, keep)
        with pg.transaction():
            live.forget_run(pg, settings.meta_schema, old)
            metadata.mark_backups_removed(pg, settings.meta_schema, old)
        return old
