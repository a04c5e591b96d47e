"""The gate policy (spec §8): what promote checks before it writes, and the conflict-rate threshold.

One place decides each of these:
- the default threshold is the project's var ``max_conflict_rate`` (dbt_project.yml), which the
  summary's ``conflict_rate`` check uses too;
- the threshold *in force* for a dry run: the one its last promote used, else the one it was built
  with, else the default; promote, the CLI and every report show and evaluate that one;
- ``migration_summary`` is read in one place (``read_summary``).

Every gate is read-only; ``check`` returns them all, each with its figure and what to do when it fails.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import psycopg
from psycopg import sql

from orchestrator import db, dbt, decision_store, fingerprint, metadata
from orchestrator.config import Settings
from orchestrator.formats import percent, plural


def default_max_conflict_rate(settings: Settings) -> Decimal:
    """The project's default threshold (dbt_project.yml, var max_conflict_rate)."""
    return dbt.default_conflict_rate(settings.project_dir)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The conflict-rate threshold in force, and where it comes from."""

    value: Decimal
    # "promote" (the dry run's last promote used it), "dry run" (it was built with it), "default" (the
    # project's), or "given" (an option asked for it)
    source: str
    run: dict | None = None  # the promote, when source is "promote"

    def describe(self) -> str:
        if self.source == "promote" and self.run is not None:
            return (
                f"{percent(self.value)}, used by promote {self.run['run_id']} at "
                f"{self.run['started_at']:%Y-%m-%d %H:%M:%S}"
            )
        return f"{percent(self.value)}, " + {
            "dry run": "the dry run's",
            "default": "the project's default",
            "given": "as given",
        }.get(self.source, self.source)


def threshold_in_force(pg: psycopg.Connection, settings: Settings, dry_run: dict | None) -> Threshold:
    """The threshold a report of ``dry_run`` shows: its last promote's, else its own, else the default."""
    if dry_run is not None:
        last = metadata.last_promote_of(pg, settings.meta_schema, dry_run["dry_run_id"])
        if last is not None and last.get("max_conflict_rate") is not None:
            return Threshold(Decimal(last["max_conflict_rate"]), "promote", last)
    return threshold_of(settings, dry_run)


def threshold_of(settings: Settings, dry_run: dict | None) -> Threshold:
    """The threshold ``dry_run`` was built with (its summary's check), else the project's default: what a
    promote of it uses unless told otherwise."""
    if dry_run is not None and dry_run.get("max_conflict_rate") is not None:
        return Threshold(Decimal(dry_run["max_conflict_rate"]), "dry run")
    return Threshold(default_max_conflict_rate(settings), "default")


# -- the summary -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Summary:
    """``migration_summary``: its rows in table order, and each by metric."""

    rows: list[dict]

    def __bool__(self) -> bool:
        return bool(self.rows)

    def row(self, metric: str) -> dict:
        return next((row for row in self.rows if row["metric"] == metric), {})

    def value(self, metric: str):
        return self.row(metric).get("value")

    def at_threshold(self, threshold: Decimal) -> Summary:
        """The rows with the conflict-rate check evaluated at ``threshold`` (the one in force)."""

        def evaluated(row: dict) -> dict:
            if row["metric"] != "conflict_rate" or row["value"] is None:
                return row
            return {**row, "expected": threshold, "passed": Decimal(row["value"]) <= threshold}

        return Summary([evaluated(row) for row in self.rows])

    def failed_checks(self) -> list[str]:
        return [row["metric"] for row in self.rows if row["passed"] is False]


def read_summary(pg: psycopg.Connection, dry_run_schema: str) -> Summary:
    """The dry run's migration_summary (empty when there is none)."""
    if not db.table_exists(pg, dry_run_schema, "migration_summary"):
        return Summary([])
    cur = pg.execute(
        sql.SQL("select metric, value, expected, passed from {}").format(
            sql.Identifier(dry_run_schema, "migration_summary")
        )
    )
    return Summary([dict(zip(("metric", "value", "expected", "passed"), row, strict=True)) for row in cur.fetchall()])


# -- the gates ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Gate:
    name: str
    passed: bool
    figure: str
    remedy: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


DRY_RUN_COMPLETE = "dry run complete, every error-severity dbt test passed"
MODELS_CURRENT = "dry run built by the current models"
KEYS_RECONCILE = "key accounting reconciles"
CONFLICT_RATE = "conflict rate within threshold"
LEGACY_UNCHANGED = "legacy data unchanged since the dry run"
DECISIONS_CURRENT = "no stale reviewer decision"
DECISIONS_APPLIED = "reviewer decisions unchanged since the dry run"


def check(
    pg: psycopg.Connection,
    settings: Settings,
    dry_run: dict | None,
    *,
    dry_run_schema: str,
    max_conflict_rate: Decimal,
    scope_table: sql.Composable | None,
    current_models_version: str | None = None,
    rebuilt_now: bool = False,
    caught_up: str | None = None,
    held_back: list[str] | None = None,
) -> list[Gate]:
    """The gates of spec §8, each with its figure and what to do when it fails; with
    ``current_models_version`` (promote passes it), one more: the dry run was built by these models.
    ``rebuilt_now``: the dry run is a partial rebuild this same command just made, so its fingerprint
    after the build is the current one (promote compares it again inside its transaction). ``caught_up``:
    the dry-run state was just caught up with the legacy data (promote --catch-up; what it rebuilt): the
    legacy gate holds, and writes since are the next sync round's. ``held_back``: a catch-up or sync round
    holds back the users with a stale reviewer decision (spec §11) instead of refusing for all."""
    if dry_run is None:
        return [Gate("dry run complete", False, "no dry run recorded", "run `orchestrator dry-run` first")]
    gates = [_complete(dry_run)]
    if current_models_version is not None:
        gates.append(_models_current(dry_run, current_models_version))
    summary = read_summary(pg, dry_run_schema)
    accounted = summary.row("keys_accounted")
    gates.append(
        Gate(
            KEYS_RECONCILE,
            accounted.get("passed") is True,
            f"keys seen {accounted.get('expected')}, mapped + unmapped {accounted.get('value')}",
            "every legacy key must be mapped or logged: inspect migration_unmapped_fields and the models",
        )
    )
    rate = summary.value("conflict_rate")
    gates.append(
        Gate(
            CONFLICT_RATE,
            rate is not None and Decimal(rate) <= max_conflict_rate,
            f"conflict rate {percent(rate)} (threshold {percent(max_conflict_rate)})",
            "review migration_conflicts (`orchestrator report`); to accept this rate, pass "
            "--max-conflict-rate with a higher value",
        )
    )
    gates.append(_decisions_current(summary, held_back))
    gates.append(_decisions_applied(pg, settings, dry_run_schema, scope_table))
    if caught_up is not None:
        gates.append(Gate(LEGACY_UNCHANGED, True, caught_up, ""))
    else:
        gates.append(_legacy_unchanged(pg, settings, dry_run, scope_table, rebuilt_now))
    return gates


def _decisions_current(summary: Summary, held_back: list[str] | None = None) -> Gate:
    """Spec §11: no decision is stale (its conflict is gone, or its value is no longer among the
    conflict's values): the summary's decisions_stale, of the rebuilt users in a partial rebuild. A
    catch-up or sync round (``held_back``) holds back only the users whose decisions are stale."""
    stale = summary.value("decisions_stale")
    if stale is None:  # a dry run built before reviewer decisions existed: it applied none
        return Gate(DECISIONS_CURRENT, True, "the dry run's summary counts no reviewer decision", "")
    if held_back is not None:
        return Gate(
            DECISIONS_CURRENT,
            True,
            f"{plural(int(stale), 'stale reviewer decision')} in the dry run; "
            f"{plural(len(held_back), 'user')} with one held back (their live rows stay as they were)",
            "",
        )
    return Gate(
        DECISIONS_CURRENT,
        Decimal(stale) == 0,
        f"{plural(int(stale), 'stale reviewer decision')} in the dry run (the legacy data changed since it was "
        f"decided), {int(summary.value('conflicts_decided') or 0)} applied",
        "list them with `orchestrator decisions list`, then decide those conflicts again (`orchestrator decisions "
        "template`, `decisions import`) or remove them (`orchestrator decisions clear`), and run `orchestrator "
        "dry-run` again",
    )


def _decisions_applied(pg: psycopg.Connection, settings: Settings, dry_run_schema: str, scope_table) -> Gate:
    """The decisions now are the ones the dry run's build read (none imported, changed or cleared since):
    else the live rows would not migrate what the reviewers decided."""
    changed = decision_store.changed_since_build(pg, settings.meta_schema, dry_run_schema, scope_table)
    return Gate(
        DECISIONS_APPLIED,
        changed == 0,
        "the dry run applied the reviewer decisions as they are now"
        if changed == 0
        else f"{plural(changed, 'conflict')} decided, decided again or cleared since the dry run",
        "promote with --catch-up (it rebuilds the users whose decisions changed, with them applied), or run "
        "`orchestrator dry-run` again (`orchestrator decisions list` shows them as pending)",
    )


def _complete(dry_run: dict) -> Gate:
    remedy = "fix what the failing tests report and run `orchestrator dry-run` again"
    if dry_run["status"] == "started":
        return Gate(
            DRY_RUN_COMPLETE,
            False,
            f"dry run {dry_run['dry_run_id']} started at {dry_run['started_at']:%Y-%m-%d %H:%M:%S} has not"
            f" finished: it is still building, or it died",
            "wait for it to finish, or run `orchestrator dry-run` again",
        )
    return Gate(
        DRY_RUN_COMPLETE,
        dry_run["status"] == "built" and (dry_run["error_failures"] or 0) == 0,
        f"status {dry_run['status']}, {dry_run['error_failures'] or 0} failing error-severity tests"
        f" (dry run {dry_run['dry_run_id']}, dbt invocation {dry_run['dbt_invocation_id']})",
        remedy,
    )


def _models_current(dry_run: dict, current: str) -> Gate:
    built_by = dry_run.get("models_version")
    return Gate(
        MODELS_CURRENT,
        built_by == current,
        f"models version of the dry run {(built_by or 'unknown')[:12]}, of the project now {current[:12]}"
        + ("" if built_by == current else " (a model, seed, test, macro or contract changed)"),
        "run `orchestrator dry-run` again with the current models, then promote",
    )


def _legacy_unchanged(
    pg: psycopg.Connection, settings: Settings, dry_run: dict, scope_table, rebuilt_now: bool
) -> Gate:
    after = dry_run["fingerprint_after"]
    if rebuilt_now and after is not None:
        current = after
    else:
        current = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
    stable_during_build = dry_run["fingerprint_before"] == after
    unchanged_since = after == current
    if after is None and dry_run["scope"] == "catch-up" and dry_run["status"] == "built":
        figure = "a sync round caught this dry-run state up: it records what it read per user, not a fingerprint"
    elif after is None:  # the dry run never finished: nothing to compare with
        figure = "the dry run did not finish, so there is no fingerprint of the legacy tables after its build"
    elif not stable_during_build:
        figure = "the legacy tables changed while the dry run was building: " + fingerprint.describe_difference(
            dry_run["fingerprint_before"], after or {}
        )
    elif not unchanged_since:
        figure = "the legacy tables changed since the dry run: " + fingerprint.describe_difference(after, current)
    else:
        figure = "legacy fingerprint unchanged since the dry run"
    return Gate(
        LEGACY_UNCHANGED,
        stable_during_build and unchanged_since,
        figure,
        "promote with --catch-up, which rebuilds the users changed since the dry run read them from the legacy "
        "data as it is now (or run `orchestrator dry-run` again)",
    )


def stale_decision_users(pg: psycopg.Connection, dry_run_schema: str, users: list[str] | None = None) -> list[str]:
    """The users (among ``users``; all without) with a stale reviewer decision in the dry run, in id order:
    what a catch-up or sync round holds back (spec §11)."""
    if not db.table_exists(pg, dry_run_schema, "migration_decisions"):
        return []
    only = sql.SQL("") if users is None else sql.SQL(" and user_id = any(%(users)s)")
    return [
        row[0]
        for row in pg.execute(
            sql.SQL("select distinct user_id from {} where status = 'stale'{} order by 1").format(
                sql.Identifier(dry_run_schema, "migration_decisions"), only
            ),
            {"users": users},
        ).fetchall()
    ]
