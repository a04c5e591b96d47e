"""The dry run: ``dbt build --target dry_run`` with every test, recorded with the legacy fingerprints.

Three kinds, one recipe (lock → snapshot → record `started` → build → record the outcome): the full dry
run, the same in hash batches of users (orchestrator/batches.py: the same rows), and the rebuild of given
users that a partial promote or a catch-up makes (into the partial schema). Every build reads the legacy
tables as of its snapshot's one moment (orchestrator/snapshot.py), whatever the application writes
meanwhile: its tests hold exactly, always.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from decimal import Decimal

import psycopg
from psycopg import sql

from orchestrator import batches as user_batches
from orchestrator import changes, counts, db, fingerprint, gates, locks, metadata, snapshot, stream
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject, DbtResult, DbtRun, preload
from orchestrator.errors import CheckFailed, OrchestratorError
from orchestrator.faults import fault_point
from orchestrator.feedback import SILENT, Feedback

BUILD_NODES = {"model", "seed", "test"}  # what `dbt build` runs, with the unit tests
# the tag of the tests that read only the seeds (dbt_project.yml): a partial rebuild runs them as it does
# the unit tests, only when no full dry run of the same models version passed them
SEED_CHECKS = "seed_checks"
FAILED = ("error", "fail", "runtime error")


@dataclasses.dataclass
class DryRunOutcome:
    dbt: DbtResult
    record: dict
    summary: gates.Summary
    batches: int = 1
    change_source: dict = dataclasses.field(default_factory=dict)  # snapshot.Snapshot.source_dict()

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
            "change_source": self.change_source,
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

        outcome = _recorded(
            pg,
            settings,
            run,
            threshold,
            take=lambda: snapshot.take_all(pg, settings),
            build=build,
            batches=batches,
        )
        if outcome.record["status"] == "built":
            # the indexes a catch-up's splice deletes through, built once here rather than by the first round
            index_for_splices(pg, settings.dry_run_schema)
    outcome.batches = batches
    if outcome.record["status"] != "built":
        raise CheckFailed(outcome.dbt.describe_failure() + ": the dry run is not promotable")
    if outcome.record["fingerprint_before"] != outcome.record["fingerprint_after"]:
        feedback.note(
            "Note: the legacy tables changed during the dry run ("
            + fingerprint.describe_difference(outcome.record["fingerprint_before"], outcome.record["fingerprint_after"])
            + "): promote it with --catch-up, which rebuilds the users changed since it read them."
        )
    return outcome


def rebuild_users(
    settings: Settings,
    conn: ConnInfo,
    pg: psycopg.Connection,
    *,
    max_conflict_rate: Decimal | None = None,
    taken: snapshot.Snapshot | None = None,
    feedback: Feedback = SILENT,
) -> DryRunOutcome:
    """Rebuild the users of the metadata's scope table from current legacy data, into the partial schema,
    with every data test, on ``pg`` (promote's connection, under its lock). Never batched. The legacy data
    is the one of ``taken`` (a catch-up's snapshot, its scope already written), else of a snapshot of
    those users taken now.

    The outcome is recorded whether or not the tests pass: promote's gates read it and refuse a failed
    one, saying which test failed. The unit tests and the seed checks (tag `seed_checks`: tests of the
    field map and the required fields) are left out when a full dry run built by the same models version
    passed them (they read fixed inputs, never the users rebuilt), else run after the build.
    """
    preload()
    if max_conflict_rate is None:
        max_conflict_rate = gates.default_max_conflict_rate(settings)
    run = DbtProject(settings, conn).partial(max_conflict_rate=max_conflict_rate)
    with locks.dry_run_lock(pg):
        db.require_legacy_tables(pg, settings.legacy_schema)

        def build() -> DbtResult:
            result = _build(
                run, feedback, ["build", "--exclude-resource-type", "unit_test", "--exclude", f"tag:{SEED_CHECKS}"]
            )
            if result.success and not metadata.unit_tests_passed(pg, settings.meta_schema, run.models_version()):
                fixed = run.invoke(["test", "--select", "resource_type:unit_test", f"tag:{SEED_CHECKS}"])
                # the rebuild's invocation, unless those tests failed: then theirs, to describe the failure
                result = dataclasses.replace(result if fixed.success else fixed, nodes=result.nodes + fixed.nodes)
            return result

        return _recorded(
            pg,
            settings,
            run,
            max_conflict_rate,
            take=lambda: taken if taken is not None else snapshot.take_users(pg, settings, conn),
            build=build,
            partial=True,
        )


def _recorded(
    pg: psycopg.Connection,
    settings: Settings,
    run: DbtRun,
    threshold: Decimal,
    *,
    take: Callable[[], snapshot.Snapshot],
    build: Callable[[], DbtResult],
    batches: int = 1,
    partial: bool = False,
) -> DryRunOutcome:
    """Take the snapshot (the copy of the legacy rows the build reads, the digests of that moment), record
    `started`, ``build()``, and record the outcome. A full dry run's digests become the dry-run state's, and
    its fingerprint after the build (of the legacy tables then) tells whether they changed meanwhile; a
    partial rebuild's digests stay in the session's temporary table for promote to record, and its
    fingerprint is its snapshot's (promote compares it again inside its transaction)."""
    metadata.ensure(pg, settings.meta_schema)
    taken = take()
    if not partial:
        changes.replace(pg, settings.meta_schema, "dry_run", taken.reads)
    record_id = metadata.start_dry_run(
        pg,
        settings.meta_schema,
        legacy_schema=settings.legacy_schema,
        dry_run_schema=run.dry_run_schema,
        scope="users" if partial else "all",
        fingerprint=taken.fingerprint,
        max_conflict_rate=threshold,
        batches=batches,
    )
    result = build()
    after = taken.fingerprint if partial else fingerprint.legacy_fingerprint(pg, settings.legacy_schema)
    summary = gates.read_summary(pg, run.dry_run_schema)
    status, error_failures, message = _verdict(result)
    warn_failures = sum(1 for node in result.nodes if node.status == "warn")
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
        chat_fingerprint=None if partial else fingerprint.chat_fingerprint(pg, settings.legacy_schema),
        error_failures=error_failures,
        warn_failures=warn_failures,
        message=message,
        users=summary.value("users"),
    )
    record = metadata.latest_dry_run(
        pg, settings.meta_schema, dry_run_schema=run.dry_run_schema, legacy_schema=settings.legacy_schema
    )
    return DryRunOutcome(dbt=result, record=record, summary=summary, change_source=taken.source_dict())


def _verdict(result: DbtResult) -> tuple[str, int, str | None]:
    """(status, failing error-severity tests, message) of a build: every test holds exactly, whatever the
    application wrote during the build (the build read one snapshot)."""
    failed = [node for node in result.nodes if node.status in FAILED]
    if result.exception is None and not failed:
        return "built", 0, None
    return "failed", len(failed), result.describe_failure()


def _build(run: DbtRun, feedback: Feedback, args: list[str]) -> DbtResult:
    total = run.node_count(
        BUILD_NODES,
        with_unit_tests="unit_test" not in args,
        without_tag=SEED_CHECKS if f"tag:{SEED_CHECKS}" in args else None,
    )
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


# -- catching the dry-run state up ----------------------------------------------------------------------

# what a catch-up rebuilds in the dry-run schema once the changed owners' rows are in place: the chat-message
# counts of the context profiles noted since (orchestrator/counts.py), the summary (the sum of those and of
# the per-owner counts the splice replaced) and the tests on it. Not the key accounting test: it holds per
# legacy profile, the rebuild tested it on every profile it replaced, and the splice touched no other
SUMMARY_SELECTION = ["migration_chat_message_counts", "migration_counts", "migration_summary"]


def catch_up(
    settings: Settings,
    conn: ConnInfo,
    pg: psycopg.Connection,
    *,
    state: dict,
    taken: snapshot.Snapshot,
    max_conflict_rate: Decimal,
    feedback: Feedback = SILENT,
) -> DryRunOutcome:
    """Catch the dry-run state ``state`` up with the legacy data of the snapshot ``taken``
    (snapshot.take_changed, under the dry-run lock; spec §10): rebuild the owners changed since ``state``
    read them (with every data test, into the partial schema), put their rows in place of the old ones in
    every per-user table of the dry-run schema, and rebuild the summary. The result is recorded as a new
    dry-run state (scope 'catch-up') whose reads are ``state``'s with the changed owners' from ``taken``:
    what a dry run started at that moment would have built. Its fingerprint is ``taken``'s (None from a
    sync round, which takes none: a later plain promote of the state then asks for --catch-up).

    On ``pg`` (promote's connection, under its lock). A failed rebuild is returned as it is (the dry-run
    schema untouched): promote's gates refuse it, naming the test that failed.
    """
    changed = taken.changed
    # held throughout (a dry run's lock is taken again by the rebuild: it nests): no dry run may rebuild
    # the schema between this rebuild and the splice
    with locks.dry_run_lock(pg):
        require_intact(pg, settings.dry_run_schema)
        feedback.note(f"Rebuilding the {changed.describe()} changed since dry run {state['dry_run_id']} read them")
        rebuilt = rebuild_users(settings, conn, pg, max_conflict_rate=max_conflict_rate, taken=taken, feedback=feedback)
        if rebuilt.record["status"] != "built":
            return rebuilt
        if rebuilt.record["models_version"] != state["models_version"]:
            raise CheckFailed(
                "the models changed since the dry run was built (models version "
                f"{(state['models_version'] or 'unknown')[:12]}, now {(rebuilt.record['models_version'] or '')[:12]}): "
                "a catch-up cannot mix them; run `orchestrator dry-run` again, then promote; nothing was changed"
            )
        summary = DbtProject(settings, conn).summary(
            batches=state.get("batches") or 1, max_conflict_rate=max_conflict_rate
        )
        with pg.transaction():
            record_id = metadata.start_dry_run(
                pg,
                settings.meta_schema,
                legacy_schema=settings.legacy_schema,
                dry_run_schema=settings.dry_run_schema,
                scope="catch-up",
                fingerprint=taken.fingerprint,
                max_conflict_rate=max_conflict_rate,
                batches=state.get("batches") or 1,
                parent=state,
            )
            spliced = splice(pg, settings.partial_schema, settings.dry_run_schema, settings.meta_schema)
            # the rebuilt users' context profiles: their user or intents may have changed, and with them
            # the chat-message counts of those profiles (orchestrator/counts.py)
            counts.note(
                pg,
                settings.meta_schema,
                sql.SQL('select id from {} where "userId" in (select user_id from {})').format(
                    sql.Identifier(settings.snapshot_schema, "ContextProfile"),
                    metadata.scope_table(settings.meta_schema),
                ),
            )
            changes.update(pg, settings.meta_schema, "dry_run", taken.reads, changed)
            stream.rebuilt(pg, settings, changed.users, changed.profiles)
            metadata.record_state_rebuilt(pg, settings.meta_schema, record_id, changed.users, changed.profiles)
        # killed from here on, the state is recorded `started` with its rows in place: the next catch-up
        # or sync round takes it from there
        fault_point("catch-up:after-splice")
        feedback.note(f"Replaced the rows of {changed.describe()} in {len(spliced)} tables; rebuilding the summary")
        # with the chat-message counts of the context profiles noted since the last summary
        result = _build(summary, feedback, ["build", "--select", *SUMMARY_SELECTION])
        # killed from here until the scope is emptied, the next summary counts those context profiles again
        fault_point("catch-up:counted")
        if result.success:
            counts.counted(pg, settings.meta_schema)
        status, error_failures, message = _verdict(result)
        metadata.finish_dry_run(
            pg,
            settings.meta_schema,
            record_id,
            status=status,
            dbt_invocation_id=result.invocation_id,
            models_version=state["models_version"],
            dry_run_tables=metadata.dry_run_relations(pg, settings.dry_run_schema),
            fingerprint_after=taken.fingerprint,
            # verify's "chat messages unchanged since the dry run" is about the reviewed dry run's
            chat_fingerprint=state.get("chat_fingerprint"),
            error_failures=error_failures,
            warn_failures=sum(1 for node in result.nodes if node.status == "warn"),
            message=message,
        )
        record = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
        )
        return DryRunOutcome(
            dbt=dataclasses.replace(result, nodes=rebuilt.dbt.nodes + result.nodes),
            record=record,
            summary=gates.read_summary(pg, settings.dry_run_schema),
            batches=state.get("batches") or 1,
        )


def require_intact(pg: psycopg.Connection, schema: str) -> None:
    """Refuse a catch-up of a dry-run state whose unlogged tables a server crash emptied (PostgreSQL empties
    every unlogged table when it recovers from one): the intermediate tables and the per-owner counts. A
    splice into them and a summary summed over them would describe only the users rebuilt since."""
    counts_table = sql.Identifier(schema, "migration_counts_by_owner")
    if not db.table_exists(pg, schema, "migration_counts_by_owner"):
        return  # a dry run of an older version: the models gate names it
    emptied = pg.execute(
        sql.SQL(
            "select not exists (select from {}) and (select users + context_profiles + legacy_profiles > 0 from {})"
        ).format(counts_table, sql.Identifier(schema, "migration_counts"))
    ).fetchone()[0]
    if emptied:
        raise CheckFailed(
            f"the dry-run state in schema {schema} lost its unlogged tables (the database server restarted after a "
            "crash, which empties them): run `orchestrator dry-run` again, then promote --catch-up; nothing was changed"
        )


def splice(pg: psycopg.Connection, source_schema: str, target_schema: str, meta_schema: str) -> list[str]:
    """In every per-user table of ``target_schema`` (a model's table with a user_id column, or a batched
    model's batch tables), replace the rows of the scope's owners (metadata user_scope, profile_scope)
    with those ``source_schema`` (the rebuild of that scope) holds. Derived views and the summary are
    left to dbt. Returns the models whose rows were replaced."""
    models = _per_user_tables(pg, source_schema)
    users = metadata.scope_table(meta_schema)
    profiles = sql.Identifier(meta_schema, metadata.PROFILE_SCOPE_TABLE)
    spliced = []
    for model, has_profile_id in models:
        targets = _physical_tables(pg, target_schema, model)
        if not targets:
            continue
        for target in targets:
            table = sql.Identifier(target_schema, target)
            _index_owners(pg, target_schema, target, has_profile_id)
            # two statements, each on its index: an OR of the two would scan the table
            pg.execute(sql.SQL("delete from {} as t where t.user_id in (select user_id from {})").format(table, users))
            if has_profile_id:
                pg.execute(
                    sql.SQL(
                        "delete from {} as t where t.user_id is null"
                        " and t.legacy_profile_id in (select legacy_profile_id from {})"
                    ).format(table, profiles)
                )
        columns = sql.SQL(", ").join(
            sql.Identifier(name)
            for (name,) in pg.execute(
                "select a.attname from pg_attribute as a join pg_class as c on c.oid = a.attrelid"
                " join pg_namespace as n on n.oid = c.relnamespace"
                " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped order by a.attnum",
                [source_schema, model],
            ).fetchall()
        )
        # a batched model appends its batch tables in a view: the rebuilt rows go into the first one
        pg.execute(
            sql.SQL("insert into {} ({}) select {} from {}").format(
                sql.Identifier(target_schema, targets[0]), columns, columns, sql.Identifier(source_schema, model)
            )
        )
        spliced.append(model)
    return spliced


def _per_user_tables(pg: psycopg.Connection, schema: str) -> list[tuple[str, bool]]:
    """(table, whether it has legacy_profile_id) of every table of ``schema`` with a user_id column."""
    return pg.execute(
        "select c.relname, bool_or(a.attname = 'legacy_profile_id')"
        " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
        " join pg_attribute as a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        " where n.nspname = %s and c.relkind = 'r' and c.relname not like 'stg\\_%%'"
        " group by c.relname having bool_or(a.attname = 'user_id') order by c.relname",
        [schema],
    ).fetchall()


def index_for_splices(pg: psycopg.Connection, schema: str) -> None:
    """Every per-user table of a dry-run schema (a batched model's batch tables included) indexed for a
    splice (_index_owners)."""
    for table, has_profile_id in _per_user_tables(pg, schema):
        _index_owners(pg, schema, table, has_profile_id)


def _index_owners(pg: psycopg.Connection, schema: str, table: str, has_profile_id: bool) -> None:
    """The indexes a splice deletes through, made once per dry-run table (a dry run makes its tables anew):
    by user, and the orphan rows by legacy profile; a splice then costs what it replaces, not the table."""
    wanted = [("user_id", sql.SQL("(user_id)"))]
    if has_profile_id:
        wanted.append(("legacy_profile_id", sql.SQL("(legacy_profile_id) where user_id is null")))
    for column, definition in wanted:
        present = pg.execute(
            "select from pg_index as i join pg_class as c on c.oid = i.indrelid join pg_namespace as n"
            " on n.oid = c.relnamespace join pg_attribute as a on a.attrelid = c.oid and a.attnum = i.indkey[0]"
            " where n.nspname = %s and c.relname = %s and a.attname = %s",
            [schema, table, column],
        ).fetchone()
        if present is None:
            name = "splice_" + hashlib.sha256(f"{table}\0{column}".encode()).hexdigest()[:24]
            pg.execute(
                sql.SQL("create index {} on {} {}").format(
                    sql.Identifier(name), sql.Identifier(schema, table), definition
                )
            )


def _physical_tables(pg: psycopg.Connection, schema: str, model: str) -> list[str]:
    """The tables holding ``model``'s rows in ``schema``: the model's table, or its batch tables (a batched
    dry run's view appends them), in batch order; none for a view of its own."""
    rows = pg.execute(
        "select c.relname, c.relkind from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and (c.relname = %s or c.relname ~ ('^' || %s || %s)) and c.relkind in ('r', 'v')"
        " order by length(c.relname), c.relname",
        [schema, model, model, user_batches.BATCH_SUFFIX],
    ).fetchall()
    kinds = dict(rows)
    if kinds.get(model) == "r":
        return [model]
    if kinds.get(model) == "v":
        return [name for name, kind in rows if name != model and kind == "r"]
    return []
