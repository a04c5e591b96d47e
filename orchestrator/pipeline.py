"""The workflow: dry run, demo. Each step calls dbt or the database; none transforms data itself."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from orchestrator import db, fixtures
from orchestrator.config import Settings, connect_info
from orchestrator.dbt import DbtResult, run_dbt
from orchestrator.embedded import ConnInfo
from orchestrator.errors import CheckFailed


@dataclasses.dataclass
class DryRunOutcome:
    dbt: DbtResult


@contextlib.contextmanager
def dbt_progress(console: Console, label: str) -> Iterator:
    """A progress bar advanced on each finished dbt node."""
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[node]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(label, total=None, node="")

        def advance(unique_id: str, status: str) -> None:
            progress.update(task, advance=1, node=unique_id.split(".")[-1])

        yield advance


def dry_run(settings: Settings, conn: ConnInfo, console: Console) -> DryRunOutcome:
    """``dbt build --target dry_run`` into the dry-run schema."""
    with db.connect(conn) as pg:
        db.require_legacy_tables(pg, settings.legacy_schema)
    with dbt_progress(console, "dbt build") as advance:
        result = run_dbt(
            settings.project_dir,
            conn,
            ["build"],
            env=settings.dbt_env(),
            on_node_finished=advance,
            state_dir=settings.home,
        )
    if not result.success:
        raise CheckFailed(result.describe_failure())
    return DryRunOutcome(dbt=result)


def demo(schema: str, console: Console) -> None:
    settings = Settings.load(legacy_schema=schema)
    conn = connect_info(settings)
    console.print(f"PostgreSQL: {conn.host}:{conn.port}, database {conn.dbname}")
    counts = fixtures.load(settings, conn, schema)
    from orchestrator.config import external_server_configured

    if not external_server_configured():
        from orchestrator.embedded import ProjectServer

        ProjectServer(settings.home).remember_legacy_schema(schema)
    console.print(f"Fixtures loaded into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    outcome = dry_run(settings, conn, console)
    print_dry_run(outcome, settings, console)


def print_dry_run(outcome: DryRunOutcome, settings: Settings, console: Console) -> None:
    built = sum(1 for node in outcome.dbt.nodes if node.status == "success")
    passed = sum(1 for node in outcome.dbt.nodes if node.status == "pass")
    console.print(f"Dry run built into schema {settings.dry_run_schema}: {built} nodes built, {passed} tests passed.")
