"""`orchestrator sync`: follow the application's writes to the legacy tables after a promote (spec §10).

A round: take the legacy reads (orchestrator/changes.py) → the owners changed since the live tables'
reads (or the dry-run state's) → catch the dry-run state up for them (dry_run.catch_up: rebuilt with
every data test, the summary rebuilt) → every gate over the combined result → write those users' live
rows in one audited transaction (kind `sync`; rollback undoes one round at a time). The round's reads
become the next round's reference, so a write that races a round is caught by the next one.

Cutover (the application writes the live tables itself): a round never overwrites a live row changed
since our last write (seen with the round's live rows locked until its commit); those users are handed
over to the application: recorded, and not rebuilt or listed again unless their legacy rows change
again (``force`` overwrites them instead). Those whose live rows we had written are listed once (exit
1): a person checks them; the application's own new users (live rows only it wrote) are handed over
quietly. A user with a stale reviewer decision is held back and listed (exit 1) while every other
changed user is published; a user deleted after the round's snapshot is left out (said, not an error):
the next round handles both.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from decimal import Decimal

from orchestrator import changes, gates, live, locks, metadata, snapshot, stream
from orchestrator import dry_run as dry_running
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import ParsedProjects, parsed_once, preload
from orchestrator.errors import Busy, CheckFailed, OrchestratorError
from orchestrator.feedback import SILENT, Feedback
from orchestrator.publish import publish, refuse_failed_gates


@dataclasses.dataclass
class RoundResult:
    run_id: str | None  # None: nothing had changed, nothing was written
    changed: changes.Changes
    written_users: int
    skipped: list[str]  # users handed over whose live rows we wrote and the application changed: listed, exit 1
    plan: dict[str, dict[str, int]]
    seconds: float
    dead_runs: list[dict] = dataclasses.field(default_factory=list)  # runs found killed, now marked 'died'
    left_out: list[str] = dataclasses.field(default_factory=list)  # deleted after the snapshot: not written
    held_back: list[str] = dataclasses.field(default_factory=list)  # a stale reviewer decision: not written
    # every user handed over this round (the skipped ones, and the application's own new users: not listed)
    handed_over: list[str] = dataclasses.field(default_factory=list)
    change_source: dict = dataclasses.field(default_factory=dict)  # snapshot.Snapshot.source_dict()

    @property
    def rows_written(self) -> int:
        return sum(c["inserted"] + c["updated"] + c["deleted"] for c in self.plan.values())

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "changed_users": len(self.changed.users),
            "changed_orphan_profiles": len(self.changed.profiles),
            "written_users": self.written_users,
            "rows_written": self.rows_written,
            "skipped_users": self.skipped,
            "plan": self.plan,
            "seconds": round(self.seconds, 2),
            "dead_runs": self.dead_runs,
            "left_out_users": self.left_out,
            "held_back_users": self.held_back,
            "handed_over_users": self.handed_over,
            "change_source": self.change_source,
        }


def sync_round(
    settings: Settings,
    conn: ConnInfo,
    *,
    confirm: Callable[[dict], None],
    max_conflict_rate: Decimal | None = None,
    force: bool = False,
    lock_timeout: str = "5s",
    feedback: Feedback = SILENT,
) -> RoundResult:
    """One round. A round with nothing to do writes nothing (no audit row)."""
    started = time.monotonic()
    preload()
    with locks.promote_lock(conn, "sync", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        state, in_effect = _state_in_effect(pg, settings)
        ended = metadata.cutover_ended(pg, settings.meta_schema, in_effect["started_at"])
        if ended is not None:
            raise OrchestratorError(
                f"there is nothing to sync: the cutover ended at {ended:%Y-%m-%d %H:%M:%S} (`sync --end`): the "
                f"application owns the live tables; to migrate again, run a dry run and promote it"
            )
        if max_conflict_rate is None:  # the one the live tables' promote (or the last round) used
            recorded = in_effect.get("max_conflict_rate")
            max_conflict_rate = recorded if recorded is not None else gates.threshold_of(settings, state).value
        threshold = max_conflict_rate
        # no fingerprint per round: the reads alone tell what changed (a plain promote of the state a round
        # leaves asks for --catch-up); the live tables hold users only: an orphan Profile changes the
        # dry-run state's logs, not them. Under the dry-run lock from the snapshot to the splice: the copy of
        # the legacy rows is the dry-run state's.
        with locks.dry_run_lock(pg):
            taken = snapshot.take_changed(pg, settings, ("live", "dry_run"), conn=conn, users_only=("live",))
            changed = taken.changed
            if not changed:
                return RoundResult(
                    None, changed, 0, [], {}, time.monotonic() - started, dead, change_source=taken.source_dict()
                )
            outcome = dry_running.catch_up(
                settings, conn, pg, state=state, taken=taken, max_conflict_rate=threshold, feedback=feedback
            )
        dry_run = outcome.record
        caught_up = f"caught up: {changed.describe()} changed since the last round were rebuilt"
        # one user's stale reviewer decision holds back that user, not the round (spec §11)
        held_back = gates.stale_decision_users(pg, dry_run["dry_run_schema"], changed.users)
        checked = gates.check(
            pg,
            settings,
            dry_run,
            dry_run_schema=dry_run["dry_run_schema"],
            max_conflict_rate=threshold,
            scope_table=None,
            caught_up=caught_up,
            held_back=held_back,
        )
        audit = {
            "command": "sync",
            "live_schema": settings.live_schema,
            "scope": "users",
            "scope_users": len(changed.users),
            "dry_run": dry_run,
            "gates": {g.name: g.as_dict() for g in checked},
            "max_conflict_rate": threshold,
            "rebuilt_users": len(changed.users),
        }
        refuse_failed_gates(pg, settings, checked, audit, "sync")
        plan: dict = {}
        run_id, left_out, handed_over, changed_by_app, written = None, [], [], [], []
        if changed.users:
            scope_table = metadata.write_user_scope(pg, settings.meta_schema, changed.users)
            published = publish(
                pg,
                settings,
                dry_run,
                settings.dry_run_schema,
                scope_table,
                audit,
                confirm=confirm,
                force=force,
                lock_timeout=lock_timeout,
                legacy_check=False,
                reads=changes.Reads.owners(changed, changes.NOW),
                rebuilt=changed,
                hold_back=held_back,
                hand_over=True,
            )
            run_id, plan = published.run_id, published.plan
            left_out, handed_over = published.left_out, published.handed_over
            changed_by_app = published.changed_by_app
            not_written = {*left_out, *held_back, *handed_over}
            written = [user for user in changed.users if user not in not_written]
    return RoundResult(
        run_id,
        changed,
        len(written),
        changed_by_app,
        plan,
        time.monotonic() - started,
        dead,
        left_out=left_out,
        held_back=held_back,
        handed_over=handed_over,
        change_source=taken.source_dict(),
    )


@dataclasses.dataclass
class CutoverEnd:
    run_id: str  # the promote or round the live tables come from
    dropped_snapshot: str  # the schema of the copy of the legacy rows, dropped
    dropped_slot: str | None  # the change stream's replication slot, dropped (None: there was none)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def end_cutover(settings: Settings, conn: ConnInfo, *, confirm: Callable[[str], None]) -> CutoverEnd:
    """End the cutover (spec §10): the application owns the live tables; no round follows the legacy
    tables any more (later rounds refuse until a new dry run is promoted), and what the cutover kept for
    its rounds goes: the copy of the legacy rows (personal data). The live tables, the audit and the
    rollback backups stay (`cleanup` removes backups)."""
    with locks.promote_lock(conn, "sync --end") as pg:
        metadata.ensure(pg, settings.meta_schema)
        _, in_effect = _state_in_effect(pg, settings)
        confirm(f"end the cutover of the live tables in schema {settings.live_schema}")
        with locks.dry_run_lock(pg):
            with pg.transaction():
                metadata.end_cutover(pg, settings.meta_schema, in_effect["run_id"])
                snapshot.drop(pg, settings)
            slot = stream.drop(pg, settings)  # it holds WAL back on the server: gone with the copy it followed
    return CutoverEnd(in_effect["run_id"], settings.snapshot_schema, slot)


def _state_in_effect(pg, settings: Settings) -> tuple[dict, dict]:
    """The dry-run state the live tables come from; a round refuses when there is none, or when a newer
    dry run (another review) is waiting for its promote."""
    run = metadata.last_state_run(pg, settings.meta_schema, settings.dry_run_schema)
    present = live.live_tables_present(pg, settings.live_schema)
    if run is None or not all(present.values()) or not changes.recorded(pg, settings.meta_schema, "live"):
        raise OrchestratorError(
            f"there is nothing to sync: no promote of the dry run is in effect in schema {settings.live_schema} "
            f"(none ran, or rollback undid it): run `orchestrator promote` first"
        )
    state = metadata.latest_dry_run(
        pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
    )
    promoted = metadata.dry_run(pg, settings.meta_schema, run["dry_run_id"])
    if state is None or metadata.root_of(state) != metadata.root_of(promoted):
        raise CheckFailed(
            f"dry run {state['dry_run_id'] if state else '?'} is newer than the one the live tables come from "
            f"({metadata.root_of(promoted)}) and has not been promoted: promote it (`orchestrator promote "
            f"--catch-up`) or run sync after that; nothing was changed"
        )
    if state["scope"] != "catch-up" and state["status"] != "built":
        raise CheckFailed(
            f"dry run {state['dry_run_id']} is {state['status']}: run `orchestrator dry-run` again; nothing was changed"
        )
    return state, run


class Stop:
    """Ctrl-C or SIGTERM while following: the first ends the loop after the round in progress, a second
    interrupts at once."""

    def __init__(self, feedback: Feedback, event: threading.Event | None = None):
        self.event = event or threading.Event()
        self.feedback = feedback

    def __enter__(self) -> Stop:
        # signal handlers belong to the main thread (a follow in another thread stops through ``event``)
        main = threading.current_thread() is threading.main_thread()
        self.previous = (
            {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        )
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        self.feedback.note("Stopping after this round (Ctrl-C again to stop now).")


def follow(
    settings: Settings,
    conn: ConnInfo,
    *,
    interval: float,
    on_round: Callable[[RoundResult], None],
    max_conflict_rate: Decimal | None = None,
    force: bool = False,
    lock_timeout: str = "5s",
    feedback: Feedback = SILENT,
    rounds: int | None = None,
    stop: threading.Event | None = None,
    parsed: ParsedProjects | None = None,
) -> list[str]:
    """Rounds every ``interval`` seconds until Ctrl-C or SIGTERM (or ``rounds`` rounds, or ``stop`` is
    set). Every round's result goes to ``on_round``; a refused round (a gate failed, or another run or the
    application's traffic held a lock) is reported and the next one tries again. Returns the users skipped
    in any round (the application wrote their live rows). dbt parses the project once per kind of run
    (``parsed``: dbt.ParsedProjects, new when not given), at the first round that needs it."""
    skipped: dict[str, None] = {}
    done = 0
    with Stop(feedback, stop) as stop, parsed_once(parsed):
        while not stop.event.is_set() and (rounds is None or done < rounds):
            try:
                result = sync_round(
                    settings,
                    conn,
                    confirm=lambda plan: None,
                    max_conflict_rate=max_conflict_rate,
                    force=force,
                    lock_timeout=lock_timeout,
                    feedback=SILENT,
                )
            except (CheckFailed, Busy) as refusal:  # the next round tries again
                feedback.note(f"round refused: {refusal}")
            else:
                skipped.update(dict.fromkeys(result.skipped))
                on_round(result)
            done += 1
            if rounds is None or done < rounds:
                stop.event.wait(interval)
    return list(skipped)
