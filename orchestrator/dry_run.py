"""The dry run: ``dbt build --target dry_run`` with every test, recorded with the legacy fingerprints.

Three kinds, one recipe (lock → fingerprint → record `started` → build → fingerprint → record the
outcome): the full dry run, the same in hash batches of users (orchestrator/batches.py: the same rows),
and the rebuild of given users that a partial promote makes (into the partial schema).
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import psycopg
from psycopg import sql

from orchestrator import batches as user_batches
from orchestrator import db, fingerprint, gates, locks, metadata
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, DbtResult, DbtRun, preload
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.feedback import SILENT, Feedback

BUILD_NODES = {"model", "seed", "test"}  # what `dbt build` runs, with the unit tests


@dataclasses.dataclass
class DryRunOutcome:
    dbt: DbtResult
    record: dict
    summary: gates.Summary
    batches: int = 1

    @property
    def threshold(self) -> Decimal:
        return Decimal(self.record["max_conflict_rate"])

    def counts(self) -> dict[str, int]:
        nodes = self.dbt.nodes
        return {
            "built": sum(1 for node in nodes if node.status == "success"),
            "tests_passed": sum(1 for node in nodes if node.status == "pass"),
            "warnings": sum(1 for node in nodes if node.status == "warn"),
        }

    def as_dict(self) -> dict:
        record = self.record
        return {
            "dry_run_id": record["dry_run_id"],
            "status": record["status"],
            "legacy_schema": record["legacy_schema"],
            "dry_run_schema": record["dry_run_schema"],
            "dbt_invocation_id": self.dbt.invocation_id,
            "batches": self.batches,
            "max_conflict_rate": self.threshold,
            "legacy_unchanged_during_build": record["fingerprint_before"] == record["fingerprint_after"],
            "nodes": self.counts(),
            "summary": self.summary.rows,
        }


def dry_run(
    settings: Settings,
    conn: ConnInfo,
    feedback: Feedback = SILENT,
    *,
    batches: int | None = 1,
    max_conflict_rate: Decimal | None = None,
) -> DryRunOutcome:
    """The full dry run. With ``batches`` > 1, the per-user models are first built in that many hash batches
    of users; ``None`` picks the count from the number of users (``--batches auto``). The summary's
    conflict-rate check uses ``max_conflict_rate`` (default: the project's). Raises CheckFailed when a
    dbt test fails: the dry run is then recorded, reviewable, and not promotable."""
    if batches is not None and not 1 <= batches <= user_batches.MAX_BATCHES:
        raise OrchestratorError(f"--batches must be between 1 and {user_batches.MAX_BATCHES}, not {batches}")
    threshold = gates.default_max_conflict_rate(settings) if max_conflict_rate is None else max_conflict_rate
    preload()  # import dbt while the lock and the fingerprint are taken
    with db.connect(conn, autocommit=True) as pg, locks.dry_run_lock(pg):
        db.require_legacy_tables(pg, settings.legacy_schema)
        if batches is None:
            batches = user_batches.auto_count_of(pg, settings.legacy_schema)
        project = DbtProject(settings, conn)
        run = project.full(batches=batches, max_conflict_rate=threshold)

        def build() -> DbtResult:
            # batch tables of an earlier batched dry run: rebuilt below if this one is batched
            user_batches.drop_batch_relations(pg, settings.dry_run_schema)
            if batches > 1:
                # the batches read the seeds (the field map): load them first, once
                seeded = run.invoke(["seed"])
                failed = _build_user_batches(settings, conn, feedback, batches) if seeded.success else seeded
                if failed is not None:
                    return failed
            return _build(run, feedback, ["build"])

        outcome = _recorded(pg, settings, run, threshold, scope_table=None, build=build)
    outcome.batches = batches
    if outcome.record["status"] != "built":
        raise CheckFailed(outcome.dbt.describe_failure() + ": the dry run is not promotable")
    if outcome.record["fingerprint_before"] != outcome.record["fingerprint_after"]:
        feedback.note(
            "Warning: the legacy tables changed during the dry run ("
            + fingerprint.describe_difference(outcome.record["fingerprint_before"], outcome.record["fingerprint_after"])
            + "): it is not promotable; run it again."
        )
    return outcome


def rebuild_users(
    settings: Settings,
    conn: ConnInfo,
    pg: psycopg.Connection,
    *,
    max_conflict_rate: Decimal | None = None,
    feedback: Feedback = SILENT,
) -> DryRunOutcome:
    """Rebuild the users of the metadata's scope table from current legacy data, into the partial schema,
    with every data test, on ``pg`` (promote's connection, under its lock). Never batched.

    The outcome is recorded whether or not the tests pass: promote's gates read it and refuse a failed
    one, saying which test failed. The unit tests are left out when a full dry run built by the same
    models version passed them (they read fixed inputs, never the users rebuilt), else run after the build.
    """
    preload()
    if max_conflict_rate is None:
        max_conflict_rate = gates.default_max_conflict_rate(settings)
    run = DbtProject(settings, conn).partial(max_conflict_rate=max_conflict_rate)
    with locks.dry_run_lock(pg):
        db.require_legacy_tables(pg, settings.legacy_schema)

        def build() -> DbtResult:
            result = _build(run, feedback, ["build", "--exclude-resource-type", "unit_test"])
            if result.success and not metadata.unit_tests_passed(pg, settings.meta_schema, run.models_version()):
                unit_tests = run.invoke(["test", "--resource-type", "unit_test"])
                # the rebuild's invocation, unless the unit tests failed: then theirs, to describe the failure
                result = dataclasses.replace(
                    result if unit_tests.success else unit_tests, nodes=result.nodes + unit_tests.nodes
                )
            return result

        return _recorded(
            pg, settings, run, max_conflict_rate, scope_table=metadata.scope_table(settings.meta_schema), build=build
        )


def _recorded(
    pg: psycopg.Connection,
    settings: Settings,
    run: DbtRun,
    threshold: Decimal,
    *,
    scope_table: sql.Composable | None,
    build,
) -> DryRunOutcome:
    """Fingerprint, record `started`, ``build()``, fingerprint again and record the outcome."""
    metadata.ensure(pg, settings.meta_schema)
    before = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
    record_id = metadata.start_dry_run(
        pg,
        settings.meta_schema,
        legacy_schema=settings.legacy_schema,
        dry_run_schema=run.dry_run_schema,
        scope="all" if scope_table is None else "users",
        fingerprint=before,
        max_conflict_rate=threshold,
    )
    result = build()
    after = fingerprint.legacy_fingerprint(pg, settings.legacy_schema, scope_table)
    error_failures = sum(1 for node in result.nodes if node.status in ("error", "fail", "runtime error"))
    warn_failures = sum(1 for node in result.nodes if node.status == "warn")
    status = "built" if result.success and error_failures == 0 else "failed"
    if db.schema_exists(pg, run.dry_run_schema):
        pg.execute(sql.SQL("revoke all on schema {} from public").format(sql.Identifier(run.dry_run_schema)))
    metadata.finish_dry_run(
        pg,
        settings.meta_schema,
        record_id,
        status=status,
        dbt_invocation_id=result.invocation_id,
        models_version=run.models_version(),
        dry_run_tables=metadata.dry_run_relations(pg, run.dry_run_schema),
        fingerprint_after=after,
        # verify compares the live tables' chat messages with the full dry run's; a partial rebuild needs none
        chat_fingerprint=None if scope_table is not None else fingerprint.chat_fingerprint(pg, settings.legacy_schema),
        error_failures=error_failures,
        warn_failures=warn_failures,
        message=None if result.success else result.describe_failure(),
    )
    record = metadata.latest_dry_run(
        pg, settings.meta_schema, dry_run_schema=run.dry_run_schema, legacy_schema=settings.legacy_schema
    )
    return DryRunOutcome(dbt=result, record=record, summary=gates.read_summary(pg, run.dry_run_schema))


def _build(run: DbtRun, feedback: Feedback, args: list[str]) -> DbtResult:
    total = run.node_count(BUILD_NODES, with_unit_tests="unit_test" not in args)
    with feedback.progress("dbt build", total) as advance:
        return run.invoke(args, on_node_finished=advance)


def _build_user_batches(settings: Settings, conn: ConnInfo, feedback: Feedback, batches: int) -> DbtResult | None:
    """Build the per-user models in ``batches`` batches; the first failed batch's result, else None."""
    feedback.note(
        f"Building the per-user models in {batches} batches of users, {min(batches, user_batches.WORKERS)} at a time"
    )
    started = time.monotonic()

    def finished(outcome: user_batches.BatchOutcome) -> None:
        state = "built" if outcome.result.success else "FAILED"
        feedback.note(
            f"  batch {outcome.index + 1}/{batches} {state} in {outcome.seconds:.1f} s"
            f" ({time.monotonic() - started:.0f} s elapsed)"
        )

    outcomes = user_batches.build_batches(settings, conn, batches, finished)
    return next((outcome.result for outcome in outcomes if not outcome.result.success), None)
