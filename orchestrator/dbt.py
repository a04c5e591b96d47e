"""The dbt project, and one dbt invocation as an object: its arguments, target path, outcome, failing
nodes and log file.

``DbtProject`` alone decides, for every kind of run (the full dry run, batch k of K, a partial rebuild
of some users, parse, docs, fixtures), its environment, state directory (target path and logs), vars and
session settings; callers only say which kind of run and which dbt command. It also reads the manifest
(the models version, node counts) and the project's own vars (the default conflict-rate threshold).

dbt runs in-process through ``dbtRunner``. Success is read from the returned results (the same
content as ``run_results.json``), never scraped from printed text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import OrchestratorError

FAILED_STATUSES = {"error", "fail", "runtime error"}
TARGET = "dry_run"  # the profiles.yml target every run uses: its schema is the dry-run schema

# Session settings for dbt's connections (libpq reads PGOPTIONS): large sorts and hash aggregates
# stay in memory, index builds get room, no JIT compilation (it costs seconds per big query here and
# gains nothing), and commits do not wait for the WAL flush (a dry run is rebuilt after a crash
# anyway). constraint_exclusion=on lets the planner drop a union branch whose filter contradicts the
# reader's (int_profile_atoms is a view of three branches by kind; each reader wants some kinds), which
# the default only does for partitions. Appended to any PGOPTIONS the user set, so theirs come first
# and ours win.
DBT_SESSION_OPTIONS = (
    "-c work_mem=256MB -c maintenance_work_mem=1GB -c jit=off -c synchronous_commit=off -c constraint_exclusion=on"
)
# A batch is one process on one core: with parallel workers as well, the two batches in flight fought
# for the same two cores (1M users, --batches 8: dry run 256 s with them, 221 s without).
BATCH_SESSION_OPTIONS = "-c max_parallel_workers_per_gather=0"
# the var of the summary's conflict-rate check; its default, declared in dbt_project.yml, is the gate's too
CONFLICT_RATE_VAR = "max_conflict_rate"
# the schema of the copy of the legacy tables (and of the reviewers' decisions) a build reads: the sources'
# schemas follow these vars (models/staging/*/_*__sources.yml)
SNAPSHOT_VAR = "legacy_snapshot_schema"
REVIEW_SNAPSHOT_VAR = "review_snapshot_schema"
COUNTS_VAR = "counts_by_difference"  # a catch-up's summary: the chat-message counts by difference


def preload() -> None:
    """Import dbt in a background thread, while the caller does its database work first.

    Importing dbt takes 1-2 s of CPU; a command that will run dbt after waiting on the database (a lock,
    a fingerprint) overlaps the two. ``DbtRun.invoke``'s own import then finds dbt loaded, or waits for this
    one to finish; if this one fails, that import raises the error.
    """

    def load() -> None:
        with contextlib.suppress(Exception):
            import dbt.cli.main  # noqa: F401

    threading.Thread(target=load, name="dbt-import", daemon=True).start()


class ParsedProjects:
    """dbt's parsed project per kind of run, kept while a long-running command lives (``parsed_once``):
    `sync --follow` parses each kind once, at its first round, and hands the parsed manifest to every
    later invocation (dbtRunner's ``manifest``), instead of dbt checking every file of the project again
    each round. An edit of the models meanwhile is not seen until the command restarts."""

    def __init__(self) -> None:
        self.manifests: dict[tuple, object] = {}
        self.parses = 0


_parsed: ParsedProjects | None = None


@contextlib.contextmanager
def parsed_once(parsed: ParsedProjects | None = None) -> Iterator[ParsedProjects]:
    """Within the block, each kind of dbt run parses the project once (ParsedProjects)."""
    global _parsed
    previous, _parsed = _parsed, parsed or ParsedProjects()
    try:
        yield _parsed
    finally:
        _parsed = previous


@dataclasses.dataclass
class NodeResult:
    unique_id: str
    resource_type: str
    status: str
    message: str | None
    failures: int | None
    severity: str | None


@dataclasses.dataclass
class DbtResult:
    command: list[str]
    success: bool
    invocation_id: str | None
    nodes: list[NodeResult]
    target_path: Path
    log_path: Path
    exception: BaseException | None = None

    @property
    def failed_nodes(self) -> list[NodeResult]:
        return [node for node in self.nodes if node.status in FAILED_STATUSES]

    def describe_failure(self) -> str:
        if self.exception is not None:
            return f"`dbt {' '.join(self.command)}` could not run: {self.exception} (log: {self.log_path})"
        failed = self.failed_nodes
        names = ", ".join(f"{node.unique_id} ({node.status})" for node in failed[:8]) or "no node"
        more = f" and {len(failed) - 8} more" if len(failed) > 8 else ""
        first = ""
        if failed and failed[0].message:
            first = "; first: " + " ".join(failed[0].message.split())[:300]
        return f"`dbt {' '.join(self.command)}` failed: {names}{more}{first} (log: {self.log_path})"


@contextlib.contextmanager
def temporary_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in os.environ for the block (dbt reads its settings from there), then put back."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclasses.dataclass(frozen=True)
class DbtRun:
    """One kind of dbt run (see DbtProject): where its dbt state lives, its schema, vars and session settings.

    Each kind keeps its own state directory: dbt re-parses the whole project when the vars or the
    target path change, and one kind's run results must not overwrite another's.
    """

    project: DbtProject
    kind: str
    state_dir: Path
    dry_run_schema: str
    vars: dict = dataclasses.field(default_factory=dict)
    session_options: str = ""

    @property
    def target_path(self) -> Path:
        return self.state_dir / "target" / TARGET

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs"

    def environment(self) -> dict[str, str]:
        """What profiles.yml and the sources read: the server (PG*), the target and the schemas."""
        return {
            **self.project.conn.libpq_env(),
            **self.project.schema_env(self.dry_run_schema),
            "DBT_TARGET": TARGET,
        }

    def invoke(self, args: list[str], on_node_finished: Callable[[str, str], None] | None = None) -> DbtResult:
        """Run ``dbt <args>``; ``on_node_finished(unique_id, status)`` follows progress."""
        from dbt.cli.main import dbtRunner

        self.log_path.mkdir(parents=True, exist_ok=True)
        project_dir = str(self.project.settings.project_dir)
        options = [
            "--project-dir",
            project_dir,
            "--profiles-dir",
            project_dir,
            "--target",
            TARGET,
            "--target-path",
            str(self.target_path),
            "--log-path",
            str(self.log_path),
            "--log-level",  # nothing on stdout: the orchestrator reports from the results
            "none",
            "--log-level-file",  # the full log, for describe_failure to point at (dbt masks secrets)
            "debug",
            "--no-use-colors",
        ]
        if self.vars:
            options += ["--vars", json.dumps(self.vars, sort_keys=True)]
        command = [*args, *options]

        def callback(event) -> None:
            # An exception escaping a callback while a node runs deadlocks dbt: never let one out.
            try:
                if on_node_finished is not None and event.info.name == "NodeFinished":
                    node = event.data.node_info
                    on_node_finished(node.unique_id, node.node_status)
            except Exception:  # noqa: BLE001
                pass

        env = self.environment()
        env["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} {DBT_SESSION_OPTIONS} {self.session_options}".strip()
        env.pop("PGPASSWORD", None)  # dbt reads DBT_ENV_SECRET_PGPASSWORD, which it masks
        with temporary_environment(env), _without("PGPASSWORD"):
            manifest = self._parsed_manifest(options) if args[:1] != ["parse"] else None
            outcome = dbtRunner(manifest=manifest, callbacks=[callback]).invoke(command)
        nodes = []
        for item in getattr(outcome.result, "results", None) or []:
            node = item.node
            nodes.append(
                NodeResult(
                    unique_id=node.unique_id,
                    resource_type=str(node.resource_type),
                    status=str(item.status),
                    message=item.message,
                    failures=item.failures,
                    severity=(getattr(node.config, "severity", None) or None),
                )
            )
        invocation_id = None
        run_results = self.target_path / "run_results.json"
        if run_results.exists():
            with contextlib.suppress(ValueError, KeyError):
                invocation_id = json.loads(run_results.read_text())["metadata"]["invocation_id"]
        return DbtResult(
            command=list(args),
            success=bool(outcome.success),
            invocation_id=invocation_id,
            nodes=nodes,
            target_path=self.target_path,
            log_path=self.log_path / "dbt.log",
            exception=outcome.exception,
        )

    def _parsed_manifest(self, options: list[str]):
        """Within ``parsed_once``: this kind's parsed project (parsed now if it is the first time); else None
        (dbt parses, partially, as always)."""
        if _parsed is None:
            return None
        key = (self.kind, str(self.state_dir), json.dumps(self.vars, sort_keys=True))
        if key not in _parsed.manifests:
            from dbt.cli.main import dbtRunner

            parse = dbtRunner().invoke(["parse", *options])
            if not parse.success:
                return None  # the invocation itself parses and reports what is wrong
            _parsed.manifests[key] = parse.result
            _parsed.parses += 1
        return _parsed.manifests[key]

    # -- the manifest this kind of run last wrote ----------------------------------------------------

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.target_path / "manifest.json").read_text())
        except (OSError, ValueError):
            return None

    def node_count(
        self, kinds: set[str], *, with_unit_tests: bool = False, without_tag: str | None = None
    ) -> int | None:
        """Nodes of these resource types a run will go through, from the last manifest (None before the
        first run): the enabled ones, fixtures and those tagged ``without_tag`` left out."""
        manifest = self.manifest()
        if manifest is None:
            return None
        nodes = [
            node
            for node in manifest.get("nodes", {}).values()
            if node.get("resource_type") in kinds
            and node.get("config", {}).get("enabled", True)
            and "fixtures" not in node.get("tags", [])
            and (without_tag is None or without_tag not in node.get("tags", []))
        ]
        return (len(nodes) + (len(manifest.get("unit_tests", {})) if with_unit_tests else 0)) or None

    def models_version(self) -> str | None:
        """A hash of what decides a dry run's content, from the manifest: which version of the models built it.

        Every model, seed and test checksum (the file), each enforced contract's checksum (column names
        and types live in YAML, not in the file), each test's severity settings, and the project's own
        macros (the normalisation rules and the generic tests live there).
        """
        manifest = self.manifest()
        if manifest is None:
            return None
        severity_keys = ("severity", "error_if", "warn_if", "where", "enabled")
        parts = [
            f"{uid}:{node.get('checksum', {}).get('checksum')}:{(node.get('contract') or {}).get('checksum')}:"
            + json.dumps({key: (node.get("config") or {}).get(key) for key in severity_keys}, sort_keys=True)
            for uid, node in manifest.get("nodes", {}).items()
        ]
        project = manifest.get("metadata", {}).get("project_name")
        parts += [
            f"{uid}:{hashlib.sha256((macro.get('macro_sql') or '').encode()).hexdigest()}"
            for uid, macro in manifest.get("macros", {}).items()
            if macro.get("package_name") == project
        ]
        return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()

    def current_models_version(self) -> str:
        """The models version of the project as it is now: `dbt parse` in this run's state (right after a
        build of the same kind, dbt reads back the parse that build saved and re-reads only what changed)."""
        result = self.invoke(["parse"])
        version = self.models_version() if result.success else None
        if version is None:
            raise OrchestratorError(
                f"{result.describe_failure()}: cannot tell which version of the models the project holds"
            )
        return version


@dataclasses.dataclass(frozen=True)
class DbtProject:
    """The dbt project of ``settings`` run against ``conn``: the one place that decides how dbt runs."""

    settings: Settings
    conn: ConnInfo

    def schema_env(self, dry_run_schema: str | None = None) -> dict[str, str]:
        """The schema variables the project reads (models/staging/legacy/_legacy__sources.yml, profiles.yml)."""
        return {
            "MIGRATION_LEGACY_SCHEMA": self.settings.legacy_schema,
            "MIGRATION_DRY_RUN_SCHEMA": dry_run_schema or self.settings.dry_run_schema,
            "MIGRATION_META_SCHEMA": self.settings.meta_schema,
        }

    def shell_env(self, *, server: bool = True) -> dict[str, str]:
        """What `eval "$(orchestrator db env)"` exports, so that plain `dbt build` runs the dry run (with
        ``server``, the PG* variables of ``conn`` too)."""
        return {**(self.conn.libpq_env() if server else {}), **self.schema_env(), "DBT_TARGET": TARGET}

    def _run(self, kind: str, state_dir: Path, *, dry_run_schema: str | None = None, **fields) -> DbtRun:
        return DbtRun(self, kind, state_dir, dry_run_schema or self.settings.dry_run_schema, **fields)

    def _threshold_vars(self, max_conflict_rate: Decimal | None) -> dict:
        """The conflict-rate threshold as a var, when it is not the project's own (dbt_project.yml): runs at
        the default keep the same vars from run to run, so dbt's partial parse holds across them."""
        if max_conflict_rate is None:
            return {}
        if max_conflict_rate == default_conflict_rate(self.settings.project_dir):
            return {}
        return {CONFLICT_RATE_VAR: float(max_conflict_rate)}

    def _snapshot_vars(self) -> dict:
        """Every build reads the legacy tables (and the reviewers' decisions) through the copy of one moment
        in the snapshot schema (orchestrator/snapshot.py), never the tables themselves."""
        return {SNAPSHOT_VAR: self.settings.snapshot_schema, REVIEW_SNAPSHOT_VAR: self.settings.snapshot_schema}

    def full(self, *, batches: int = 1, max_conflict_rate: Decimal | None = None) -> DbtRun:
        """The full dry run (and, with ``batches`` > 1, its main build over the batch tables)."""
        run_vars = {**self._snapshot_vars(), **self._threshold_vars(max_conflict_rate)}
        if batches > 1:
            run_vars["batch_count"] = batches
        return self._run("full", self.settings.home, vars=run_vars)

    def summary(self, *, batches: int = 1, max_conflict_rate: Decimal | None = None) -> DbtRun:
        """The summary of a catch-up, over the full dry run's tables: the chat-message counts brought up to
        date by difference (var ``counts_by_difference``, orchestrator/counts.py). Its own dbt state: its
        vars differ from the full dry run's, and a shared state would be parsed again at each switch."""
        run_vars = {**self._snapshot_vars(), **self._threshold_vars(max_conflict_rate), COUNTS_VAR: True}
        if batches > 1:
            run_vars["batch_count"] = batches
        return self._run("summary", self.settings.home / "summary", vars=run_vars)

    def batch(self, index: int, count: int) -> DbtRun:
        """Batch ``index`` of ``count`` of a batched dry run (orchestrator/batches.py): one dbt state per
        index and count, so a rerun with the same count reuses dbt's partial parse."""
        return self._run(
            "batch",
            self.settings.home / "batches" / f"{index}-of-{count}",
            vars={**self._snapshot_vars(), "batch_count": count, "batch_index": index},
            session_options=BATCH_SESSION_OPTIONS,
        )

    def partial(self, *, max_conflict_rate: Decimal | None = None) -> DbtRun:
        """A rebuild of the users in the metadata's scope table, into the partial schema (a partial promote)."""
        return self._run(
            "partial",
            self.settings.home / "partial",
            dry_run_schema=self.settings.partial_schema,
            vars={**self._snapshot_vars(), "user_scope": True, **self._threshold_vars(max_conflict_rate)},
        )

    def parse(self) -> DbtRun:
        """A parse of the project as it is now, apart from every build's state."""
        return self._run("parse", self.settings.home / "parse")

    def docs(self) -> DbtRun:
        return self._run("docs", self.settings.home / "docs")

    def fixtures(self, seed_schema: str) -> DbtRun:
        """Loading the fixture seeds (raw text) into ``seed_schema``."""
        return self._run(
            "fixtures",
            self.settings.home / "fixtures",
            vars={"load_fixtures": True, "fixture_seed_schema": seed_schema},
        )


@functools.cache
def _project_vars(project_file: Path, modified: float) -> dict:
    import yaml  # dbt's own dependency

    try:
        return yaml.safe_load(project_file.read_text()).get("vars") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as exc:
        raise OrchestratorError(f"cannot read the vars of {project_file}: {exc}") from None


def default_conflict_rate(project_dir: Path) -> Decimal:
    """The project's conflict-rate threshold (dbt_project.yml, var max_conflict_rate)."""
    return Decimal(str(project_var(project_dir, CONFLICT_RATE_VAR)))


def project_var(project_dir: Path, name: str):
    """A var declared in dbt_project.yml (the project's defaults, which plain `dbt build` uses too)."""
    project_file = project_dir / "dbt_project.yml"
    try:
        modified = project_file.stat().st_mtime
    except OSError as exc:
        raise OrchestratorError(f"cannot read {project_file}: {exc.strerror}") from None
    declared = _project_vars(project_file, modified)
    if name not in declared:
        raise OrchestratorError(f"{project_file} declares no var {name!r} under `vars:`")
    return declared[name]


@contextlib.contextmanager
def _without(name: str) -> Iterator[None]:
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


def require_success(result: DbtResult) -> DbtResult:
    if not result.success:
        raise OrchestratorError(result.describe_failure())
    return result
