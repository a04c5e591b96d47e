"""`orchestrator promote`: gate the dry run (or a rebuild of given users, or the dry-run state caught up
with the legacy data changed since) and publish it into the live tables (spec §8, §10).

Order: take the promote lock (one promote, sync or rollback at a time) → mark runs that died → rebuild
or catch up if asked → check the gates (read-only; one of them parses the project: the dry run must
have been built by the current models) → publish (orchestrator/publish.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal

import psycopg

from orchestrator import changes, gates, locks, metadata, snapshot
from orchestrator import dry_run as dry_running
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, preload
from orchestrator.dry_run import DryRunOutcome, rebuild_users
from orchestrator.errors import Busy, CheckFailed, OrchestratorError
from orchestrator.faults import fault_point
from orchestrator.feedback import SILENT, Feedback
from orchestrator.publish import Published, publish, refuse_failed_gates


@dataclasses.dataclass
class PromoteResult:
    run_id: str
    plan: dict[str, dict[str, int]]
    created_tables: bool
    gates: list[gates.Gate]
    dead_runs: list[dict]
    users: list[str] | None
    max_conflict_rate: Decimal
    caught_up: CaughtUp | None = None
    left_out: list[str] = dataclasses.field(default_factory=list)  # deleted after the snapshot: not written
    held_back: list[str] = dataclasses.field(default_factory=list)  # a stale reviewer decision: not written

    def as_dict(self, live_schema: str) -> dict:
        return {
            "run_id": self.run_id,
            "catch_up": self.caught_up.as_dict() if self.caught_up is not None else None,
            "live_schema": live_schema,
            "scope": "users" if self.users is not None else "all",
            "users": self.users,
            "created_tables": self.created_tables,
            "max_conflict_rate": self.max_conflict_rate,
            "plan": self.plan,
            "gates": [gate.as_dict() for gate in self.gates],
            "dead_runs": self.dead_runs,
            "left_out_users": self.left_out,
            "held_back_users": self.held_back,
        }


# a promote of every user that wrote at least one live row in ANCHOR_SHARE (and ANCHOR_MIN_ROWS) makes the
# change stream's slot anew after its commit (snapshot.anchor: one comparison of every owner's digests,
# about 18 s at 1M users) rather than leave the next round to decode it: each live row written comes with
# its snapshot row, its backup and its user's reads, and test_decoding prints every row (about 85,000 rows a
# second). Counted in rows, not WAL: on a server with data checksums the first read of freshly written
# pages logs them whole (hint bits), hundreds of MB of WAL that decoding skips.
ANCHOR_SHARE = 8
ANCHOR_MIN_ROWS = 100_000


def promote(
    settings: Settings,
    conn: ConnInfo,
    *,
    confirm: Callable[[dict], None],
    max_conflict_rate: Decimal | None = None,
    users: list[str] | None = None,
    catch_up: bool = False,
    force: bool = False,
    lock_timeout: str = "5s",
    feedback: Feedback = SILENT,
) -> PromoteResult:
    """Publish the dry run (or, with ``users``, those users rebuilt from current legacy data).

    ``catch_up``: when the legacy data changed since the dry run, first catch the dry-run state up
    (dry_run.catch_up: the owners changed since are rebuilt from the data as it is now), then publish it
    all (spec §10). ``max_conflict_rate``: the gate's threshold; None: the one the dry run was built with
    (gates.threshold_of). ``confirm(plan)`` is called with the changes before anything is written; it
    raises to stop.
    """
    if catch_up and users is not None:
        raise OrchestratorError("--catch-up promotes every user: it does not take --user or --users-file")
    preload()  # import dbt meanwhile: the gates parse the project (and a partial promote rebuilds)
    with locks.promote_lock(conn, "promote", lock_timeout) as pg:
        metadata.ensure(pg, settings.meta_schema)
        dead = metadata.mark_dead_runs(pg, settings.meta_schema)
        state = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
        )
        threshold = gates.threshold_of(settings, state).value if max_conflict_rate is None else max_conflict_rate
        scope_table, caught_up = None, None
        dry_run, dry_run_schema = state, settings.dry_run_schema
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
        elif catch_up and state is not None:
            caught_up = _catch_up(pg, settings, conn, state, threshold, feedback)
            if caught_up is not None and caught_up.outcome is not None:
                dry_run = caught_up.outcome.record
                dry_run_schema = dry_run["dry_run_schema"]  # the partial schema, when the rebuild failed
        # a catch-up holds back the users with a stale reviewer decision, not everyone (spec §11)
        held_back = gates.stale_decision_users(pg, dry_run_schema) if caught_up is not None else None
        checked = gates.check(
            pg,
            settings,
            dry_run,
            dry_run_schema=dry_run_schema,
            max_conflict_rate=threshold,
            scope_table=scope_table,
            current_models_version=_models_now(parse) if dry_run is not None else None,
            rebuilt_now=users is not None,
            caught_up=caught_up.describe() if caught_up is not None else None,
            held_back=held_back,
        )
        audit = {
            "command": "promote",
            "live_schema": settings.live_schema,
            "scope": "users" if users is not None else "all",
            "scope_users": len(users) if users is not None else None,
            "dry_run": dry_run,
            "gates": {g.name: g.as_dict() for g in checked},
            "max_conflict_rate": threshold,
            **(caught_up.audit() if caught_up is not None else {}),
        }
        refuse_failed_gates(pg, settings, checked, audit, "promote")
        fault_point("promote:after-gates")
        reads = changes.Reads.users(users, changes.REBUILT) if users is not None else changes.Reads.whole("dry_run")
        published = publish(
            pg,
            settings,
            dry_run,
            dry_run_schema,
            scope_table,
            audit,
            confirm=confirm,
            force=force,
            lock_timeout=lock_timeout,
            legacy_check=caught_up is None,
            reads=reads,
            rebuilt=caught_up.rebuilt if caught_up is not None else None,
            hold_back=held_back or [],
        )
        if users is None and published.run_id is not None:
            _anchor_after(pg, settings, conn, published, feedback)
        return PromoteResult(
            published.run_id,
            published.plan,
            published.created_tables,
            checked,
            dead,
            users,
            threshold,
            caught_up,
            published.left_out,
            published.held_back,
        )


@dataclasses.dataclass
class CaughtUp:
    """A catch-up before a promote: the dry run the reviewer read, how many users it held, what this
    catch-up rebuilt, and every owner rebuilt since that review (across refused or killed attempts)."""

    reviewed: dict  # the full dry run the reviewer read (the root of the state caught up)
    reviewed_users: int
    changed: changes.Changes  # what this catch-up rebuilt
    outcome: DryRunOutcome | None  # None: nothing had changed, nothing was rebuilt
    rebuilt: changes.Changes  # every owner rebuilt since the review, this catch-up's included
    source: dict = dataclasses.field(default_factory=dict)  # how the changes were found (Snapshot.source_dict)

    def describe(self) -> str:
        found = f"; changes from {_source_text(self.source)}" if self.source else ""
        if not self.changed:
            return (
                f"caught up: nothing changed since dry run {self.reviewed['dry_run_id']} (as last caught up) read "
                f"the legacy data (writes after that are for `orchestrator sync`){found}"
            )
        return (
            f"caught up: dry run {self.reviewed['dry_run_id']} reviewed {self.reviewed_users} users; "
            f"{self.rebuilt.describe()} changed since were rebuilt from the legacy data "
            f"({self.changed.describe()} by this catch-up; writes after it are for `orchestrator sync`){found}"
        )

    def audit(self) -> dict:
        return {"reviewed_users": self.reviewed_users, "rebuilt_users": len(self.rebuilt.users)}

    def as_dict(self) -> dict:
        return {
            "reviewed_dry_run_id": self.reviewed["dry_run_id"],
            "reviewed_users": self.reviewed_users,
            "rebuilt_users": len(self.rebuilt.users),
            "rebuilt_orphan_profiles": len(self.rebuilt.profiles),
            "rebuilt_now_users": len(self.changed.users),
            "change_source": self.source,
        }


def _source_text(source: dict) -> str:
    if source.get("source") == "wal":
        return "the write-ahead log (the change stream)"
    return "every owner's digests" + (f" ({source['note']})" if source.get("note") else "")


def _anchor_after(
    pg: psycopg.Connection, settings: Settings, conn: ConnInfo, published: Published, feedback: Feedback
) -> None:
    """After a committed promote of every user: when it wrote a large share of the live rows (ANCHOR_SHARE),
    the change stream starts after it (snapshot.anchor), so that the next round does not decode it. Only a
    saving: the promote is done whatever happens here (its session cut, a lock), and the next round then
    decodes the WAL, or makes the slot, itself."""
    rows = sum(counts["inserted"] + counts["updated"] + counts["unchanged"] for counts in published.plan.values())
    if published.rows_written < max(ANCHOR_MIN_ROWS, rows // ANCHOR_SHARE):
        return
    try:
        with locks.dry_run_lock(pg):
            snapshot.anchor(pg, settings, conn)
    except (psycopg.Error, Busy) as exc:
        feedback.note(f"Note: the change stream was not made anew after this promote ({exc}); the next round does.")


def _catch_up(
    pg: psycopg.Connection, settings: Settings, conn: ConnInfo, state: dict, threshold: Decimal, feedback: Feedback
) -> CaughtUp | None:
    """Catch the dry-run state up with the legacy data now. None: the gates judge the dry run as it is (it
    did not build); nothing changed since it read: a CaughtUp without an outcome, so that the per-user reads,
    not the fingerprint, say the state is current (a sync round's state has no fingerprint)."""
    if state["scope"] == "all" and state["status"] != "built":
        return None  # a dry run that did not build is refused by the gates, naming what failed
    if not changes.recorded(pg, settings.meta_schema, "dry_run"):
        raise CheckFailed(
            f"dry run {state['dry_run_id']} recorded no reads of the legacy tables (it was built by an older "
            f"version of the orchestrator), so the users changed since cannot be told: run `orchestrator dry-run` "
            f"again; nothing was changed"
        )
    reviewed = metadata.dry_run(pg, settings.meta_schema, metadata.root_of(state)) or state
    reviewed_users = reviewed.get("users")
    if reviewed_users is None:  # recorded before the metadata kept it: the state's own count
        reviewed_users = gates.read_summary(pg, settings.dry_run_schema).value("users")
    outcome = None
    # under the dry-run lock from the snapshot to the splice: the copy of the legacy rows is the state's
    with locks.dry_run_lock(pg):
        taken = snapshot.take_changed(pg, settings, ("dry_run",), conn=conn, with_fingerprint=True)
        if taken.changed:
            outcome = dry_running.catch_up(
                settings, conn, pg, state=state, taken=taken, max_conflict_rate=threshold, feedback=feedback
            )
    users, profiles = metadata.rebuilt_since(pg, settings.meta_schema, reviewed["dry_run_id"])
    return CaughtUp(
        reviewed,
        int(reviewed_users or 0),
        taken.changed,
        outcome,
        changes.Changes(users, profiles),
        taken.source_dict(),
    )


def _models_now(parse) -> str:
    try:
        return parse.current_models_version()
    except OrchestratorError as exc:
        raise OrchestratorError(
            f"{exc}, so promote cannot check that the dry run was built by them; nothing was changed"
        ) from None


def _shown_id(user_id: str) -> str:
    """A user id as a message shows it: repr (quotes, escapes), cut short when long."""
    if len(user_id) <= 80:
        return repr(user_id)
    return f"{user_id[:60]!r}... ({len(user_id)} characters)"
