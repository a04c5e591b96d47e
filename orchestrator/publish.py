"""Publishing a gated dry-run state into the live tables: the one audited transaction that promote and
each sync round end with (spec §8, §9).

Order: show the plan and ask → record `started` → one transaction: lock the dry-run tables and check
they are the ones the gates passed, re-check the legacy fingerprint (unless the state was just caught
up), leave out users deleted since the snapshot, check live drift, create the tables if absent (their
foreign keys to "User" come after the commit, each in a moment of its own: docs/security.md), back up
and write only the rows that differ, refresh the snapshot, record the live reads, record `committed`.
A failure records `failed`; a killed process leaves `started`, which the next run reports and marks
`died`. ``fault_point`` calls mark where the hardening tests crash it (orchestrator/faults.py,
docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import psycopg
from psycopg import sql

from orchestrator import changes, db, fingerprint, gates, live, live_ddl, metadata
from orchestrator.config import Settings
from orchestrator.errors import CheckFailed, OrchestratorError, Traffic
from orchestrator.faults import fault_point
from orchestrator.formats import plural

# Where the hardening tests crash a publish (orchestrator/faults.py), per command that publishes; the
# fault-matrix tests list them from here.
FAULT_POINTS = {
    command: {step: f"{command}:{step}" for step in ("started", "before-audit", "audit-row", "after-commit")}
    for command in ("promote", "sync")
}


def refuse_failed_gates(pg, settings: Settings, checked: list[gates.Gate], audit: dict, command: str) -> None:
    failed = [gate for gate in checked if not gate.passed]
    if failed:
        metadata.record_run(
            pg, settings.meta_schema, status="refused", message="; ".join(g.name for g in failed), **audit
        )
        raise CheckFailed(
            f"{command} refused, nothing was changed: "
            + "; ".join(f"gate '{g.name}' failed ({g.figure}): {g.remedy}" for g in failed)
        )


# what concurrent application transactions can make a run's transaction fail with: the run is then
# refused (errors.Traffic), and the next round (or a retry) does it again
TRAFFIC_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure, psycopg.errors.UniqueViolation)
# a foreign-key race (a user deleted between the check for deleted users and the write) retried this often
FOREIGN_KEY_ATTEMPTS = 3


@dataclasses.dataclass
class Published:
    run_id: str
    plan: dict[str, dict[str, int]]
    created_tables: bool
    left_out: list[str]  # users deleted after the snapshot: not written (their live rows went by the cascade)
    held_back: list[str]  # users with a stale reviewer decision: not written, the next round's again
    handed_over: list[str]  # users whose live rows the application wrote: not written, handed over to it
    # ... of those, the users whose live rows we had written before the application changed them (a choice
    # for a person: listed); the others' live rows only the application ever wrote (its own new users)
    changed_by_app: list[str]
    rows_written: int = 0  # live rows removed, replaced or added (a promote that wrote many anchors the stream)


def publish(
    pg: psycopg.Connection,
    settings: Settings,
    dry_run: dict,
    dry_run_schema: str,
    scope_table: sql.Composable | None,
    audit: dict,
    *,
    confirm: Callable[[dict], None],
    force: bool,
    lock_timeout: str,
    legacy_check: bool,
    reads: changes.Reads,
    rebuilt: changes.Changes | None = None,
    hold_back: list[str] = (),
    hand_over: bool = False,
) -> Published:
    """Write the gated dry run's rows (of the users in ``scope_table``; all without one) into the live
    tables in one audited transaction: the plan is shown and confirmed, the run recorded `started`, then
    the live rows that differ are replaced (backed up for rollback), the snapshot refreshed and the live
    reads recorded (``reads``), and the run `committed`. Users deleted from "User" since the dry run's
    snapshot are left out (spec §10: the next round handles them), and a deletion racing the write is
    checked again; after FOREIGN_KEY_ATTEMPTS the run is refused (errors.Traffic, exit 1), for the next
    round. ``hold_back``: users not written this time (a stale reviewer decision), the next round's
    again. ``hand_over`` (a sync round, without ``force``): the scope's users whose live rows the
    application wrote since our last write (seen with their rows locked until the commit) are not
    written but handed over to it, recorded once (spec §10, cutover); without it, such rows refuse the
    run unless ``force``."""
    present = live.live_tables_present(pg, settings.live_schema)
    if any(present.values()) and not all(present.values()):
        raise OrchestratorError(
            f"only one of the live tables exists in schema {settings.live_schema} ({present}): "
            f"run `orchestrator rollback --drop` to start clean"
        )
    exists = all(present.values())
    if exists:  # a run killed between its commit and its keys left them out: add them now
        live_ddl.add_foreign_keys(pg, settings.live_schema, settings.legacy_schema)
    pairs = live.table_pairs(pg, dry_run_schema, settings.live_schema) if exists else None
    change_plan = (
        {p.live_table: live.plan(pg, p, scope_table, True) for p in pairs}
        if exists
        else _plan_for_new_tables(pg, dry_run_schema, scope_table)
    )
    confirm(change_plan)

    command = audit["command"]
    run_id = metadata.record_run(pg, settings.meta_schema, status="started", **audit)
    if audit["scope"] == "users":
        metadata.record_scope_users(pg, settings.meta_schema, run_id)
    if rebuilt is not None:
        metadata.record_rebuilt_owners(pg, settings.meta_schema, run_id, rebuilt.users, rebuilt.profiles)
    fault_point(FAULT_POINTS[command]["started"])
    for attempt in range(1, FOREIGN_KEY_ATTEMPTS + 1):
        try:
            with pg.transaction():
                pg.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(lock_timeout)))
                _hold_dry_run(pg, dry_run, dry_run_schema)
                if legacy_check:
                    current = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
                    if current != dry_run["fingerprint_after"]:
                        raise CheckFailed(
                            f"{command} refused, nothing was changed: the legacy tables changed after the gates "
                            "were checked ("
                            + fingerprint.describe_difference(dry_run["fingerprint_after"], current)
                            + "): promote with --catch-up to rebuild the users changed since"
                        )
                handed_over: list[tuple[str, int]] = []
                if exists and scope_table is not None:
                    # the rows the drift check reads stay as it saw them until the write commits
                    live.lock_live_rows(pg, settings.live_schema, scope_table)
                    if hand_over and not force:
                        handed_over = live.drifted(
                            pg, settings.meta_schema, settings.live_schema, settings.legacy_schema, scope_table,
                            per="user",
                        )  # fmt: skip
                ours = live.written_by_us(pg, settings.meta_schema, [user for user, _ in handed_over])
                excluded = [*hold_back, *(user for user, _ in handed_over)]
                left_out, write_scope = live.write_scope(
                    pg, dry_run_schema, settings.live_schema, settings.legacy_schema, scope_table, excluded
                )
                if exists:
                    drifted = refuse_drift(pg, settings, force or hand_over, command, write_scope)
                    live.start_write(pg)
                    written = sum(live.write(pg, pair, write_scope, settings.meta_schema, run_id) for pair in pairs)
                    if drifted:  # forced: the rows it left as the application wrote them are recorded too
                        live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema, write_scope)
                    else:
                        live.refresh_written(
                            pg, settings.meta_schema, settings.live_schema, written, whole=write_scope is None
                        )
                else:
                    written = sum(counts["inserted"] for counts in change_plan.values())
                    live_ddl.create_live_tables(pg, settings.live_schema, settings.legacy_schema)
                    for pair in live.table_pairs(pg, dry_run_schema, settings.live_schema):
                        live.load_new(pg, pair, write_scope)
                    live.refresh_snapshot(pg, settings.meta_schema, settings.live_schema)
                # the users left out or held back are the next round's again; the handed-over ones are not
                reads.record(pg, settings.meta_schema, run_id, created=not exists, retry=[*left_out, *hold_back])
                if handed_over:
                    metadata.record_handed_over(pg, settings.meta_schema, run_id, handed_over)
                fault_point(FAULT_POINTS[command]["before-audit"])
                metadata.finish_run(
                    pg,
                    settings.meta_schema,
                    run_id,
                    "committed",
                    counts=change_plan,
                    created_tables=not exists,
                    changed=not exists or _changes_rows(change_plan),
                    left_out_users=left_out or None,
                    held_back_users=list(hold_back) or None,
                    handed_over_users=[user for user, _ in handed_over] or None,
                    message=_left_out_message(left_out),
                )
                fault_point(FAULT_POINTS[command]["audit-row"])
            break
        except psycopg.errors.ForeignKeyViolation as exc:
            # a user deleted between the check above and the write: check again, then leave it to the next round
            if attempt < FOREIGN_KEY_ATTEMPTS:
                continue
            record_outcome_and_reraise(pg, settings, run_id, exc, lock_timeout, "the live tables")
        except BaseException as exc:
            record_outcome_and_reraise(
                pg,
                settings,
                run_id,
                exc,
                lock_timeout,
                "the live tables (or the dry-run tables, while a dbt build replaces them)",
            )
    if not exists:
        # the keys to "User" once the tables are loaded and committed, each in a moment of its own
        live_ddl.add_foreign_keys(pg, settings.live_schema, settings.legacy_schema)
    fault_point(FAULT_POINTS[command]["after-commit"])
    handed = [user for user, _ in handed_over]
    return Published(
        run_id, change_plan, not exists, left_out, list(hold_back), handed, [u for u in handed if u in ours], written
    )


def _left_out_message(left_out: list[str]) -> str | None:
    if not left_out:
        return None
    return (
        f"{plural(len(left_out), 'user')} left out: deleted from the legacy tables after the snapshot this run "
        f"was built from (their live rows went by the cascade; the next round rebuilds them)"
    )


def _changes_rows(plan: dict[str, dict[str, int]]) -> bool:
    return any(counts[change] for counts in plan.values() for change in ("inserted", "updated", "deleted"))


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


def refuse_drift(pg, settings: Settings, force: bool, command: str, scope_table: sql.Composable | None = None) -> int:
    """Refuse (unless ``force``) when live rows in scope differ from what we last left there; the number
    that differ (overwritten, with ``force``)."""
    differing = live.drift(pg, settings.meta_schema, settings.live_schema, settings.legacy_schema, scope_table)
    total = sum(differing.values())
    if total and not force:
        detail = ", ".join(f'"{table}" {count}' for table, count in differing.items() if count)
        raise CheckFailed(
            f"{command} refused, nothing was changed: the live tables changed since our last promote or rollback "
            f"({total} rows differ: {detail}), probably written by the application: check them, then use --force "
            f"to overwrite"
        )
    return total


def record_outcome_and_reraise(
    pg, settings: Settings, run_id: str, exc: BaseException, lock_timeout: str, what: str
) -> None:
    """A run's transaction failed: record `refused` (a check) or `failed`, then re-raise; a lock wait
    that ran out becomes a clear could-not-run error."""
    with contextlib.suppress(psycopg.Error):
        status = "refused" if isinstance(exc, CheckFailed) else "failed"
        metadata.finish_run(pg, settings.meta_schema, run_id, status, message=_one_line(exc))
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        raise Traffic(
            f"users were deleted while {what} were written, {FOREIGN_KEY_ATTEMPTS} times over; nothing was changed: "
            f"the next round (or a retry) leaves them out"
        ) from None
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        raise Traffic(
            f"could not lock {what} within {lock_timeout} (application traffic holds them); nothing was changed: "
            f"retry later or raise --lock-timeout"
        ) from None
    if isinstance(exc, TRAFFIC_ERRORS):
        raise Traffic(
            f"the application's traffic interfered with writing {what} ({_one_line(exc)}); nothing was changed: "
            f"retry (sync --follow does, next round)"
        ) from None
    raise exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__
