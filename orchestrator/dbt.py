"""One dbt invocation as an object: its arguments, target path, outcome, failing nodes and log file.

dbt runs in-process through ``dbtRunner``. Success is read from the returned results (the same
content as ``run_results.json``), never scraped from printed text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from orchestrator.embedded import ConnInfo
from orchestrator.errors import OrchestratorError

FAILED_STATUSES = {"error", "fail", "runtime error"}

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


def preload() -> None:
    """Import dbt in a background thread, while the caller does its database work first.

    Importing dbt takes 1-2 s of CPU; a command that will run dbt after waiting on the database (a lock,
    a fingerprint) overlaps the two. ``run_dbt``'s own import then finds dbt loaded, or waits for this
    one to finish; if this one fails, that import raises the error.
    """

    def load() -> None:
        with contextlib.suppress(Exception):
            import dbt.cli.main  # noqa: F401

    threading.Thread(target=load, name="dbt-import", daemon=True).start()


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
def _environment(values: dict[str, str]) -> Iterator[None]:
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


def run_dbt(
    project_dir: Path,
    conn: ConnInfo,
    args: list[str],
    *,
    target: str = "dry_run",
    env: dict[str, str] | None = None,
    dbt_vars: dict | None = None,
    on_node_finished: Callable[[str, str], None] | None = None,
    state_dir: Path | None = None,
    session_options: str = "",
) -> DbtResult:
    """Run ``dbt <args>`` against ``conn``; ``on_node_finished(unique_id, status)`` follows progress.

    ``session_options`` (``-c name=value ...``) go after ``DBT_SESSION_OPTIONS`` and win over them.
    """
    from dbt.cli.main import dbtRunner

    state_dir = state_dir or project_dir / ".orchestrator"
    target_path = state_dir / "target" / target
    log_path = state_dir / "logs"
    log_path.mkdir(parents=True, exist_ok=True)
    command = [
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
        "--target",
        target,
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        "--log-level",  # nothing on stdout: the orchestrator reports from the results
        "none",
        "--log-level-file",  # the full log, for describe_failure to point at (dbt masks secrets)
        "debug",
        "--no-use-colors",
    ]
    if dbt_vars:
        command += ["--vars", json.dumps(dbt_vars)]

    def callback(event) -> None:
        # An exception escaping a callback while a node runs deadlocks dbt: never let one out.
        try:
            if on_node_finished is not None and event.info.name == "NodeFinished":
                node = event.data.node_info
                on_node_finished(node.unique_id, node.node_status)
        except Exception:  # noqa: BLE001
            pass

    full_env = {**conn.libpq_env(), **(env or {})}
    full_env["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} {DBT_SESSION_OPTIONS} {session_options}".strip()
    full_env.pop("PGPASSWORD", None)  # dbt reads DBT_ENV_SECRET_PGPASSWORD, which it masks
    with _environment(full_env), _without("PGPASSWORD"):
        outcome = dbtRunner(callbacks=[callback]).invoke(command)
    nodes = []
    result = outcome.result
    for item in getattr(result, "results", None) or []:
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
    run_results = target_path / "run_results.json"
    if run_results.exists():
        with contextlib.suppress(ValueError, KeyError):
            invocation_id = json.loads(run_results.read_text())["metadata"]["invocation_id"]
    return DbtResult(
        command=[arg for arg in args],
        success=bool(outcome.success),
        invocation_id=invocation_id,
        nodes=nodes,
        target_path=target_path,
        log_path=log_path / "dbt.log",
        exception=outcome.exception,
    )


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
