"""`orchestrator report`: the conflict log, the unmapped-field log and the summary as files.

md, csv and json are the tables as they are; html is the visual report (orchestrator/report_html.py).
Every file is new and private (mode 0600): the reports hold personal data.
"""

from __future__ import annotations

import csv
import io
import os
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

from orchestrator import db, gates, metadata, report_html
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject
from orchestrator.errors import OrchestratorError

FORMATS = ("md", "csv", "json", "html")
DETAIL_ROWS = 10_000  # html: per detail table; the csv/json reports always hold every row
REPORT_TABLES = ("migration_summary", "migration_conflicts", "migration_unmapped_fields", "profile", "context_intent")


# table -> (columns, order): jsonb columns are rendered by the server (::text), so numbers keep
# their exact JSON text (1.50 stays 1.50) and a JSON string stays distinguishable from a number
REPORT_QUERIES = {
    "migration_summary": ("metric, value, expected, passed", 'metric collate "C"'),
    "migration_conflicts": (
        'user_id, context_type, field, "values"::text as "values", chosen::text as chosen',
        'user_id collate "C", context_type nulls first, field collate "C"',
    ),
    "migration_unmapped_fields": (
        "user_id, context_type, context_profile_id, legacy_profile_id, key, value::text as value, reason",
        'legacy_profile_id collate "C", key collate "C" nulls first',
    ),
}


def private_file(path: Path) -> io.TextIOWrapper:
    """A new file only its owner can read (reports hold personal data)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def write(
    settings: Settings,
    conn: ConnInfo,
    fmt: str,
    out_dir: Path,
    *,
    max_conflict_rate: Decimal | None = None,
    detail_rows: int | None = DETAIL_ROWS,
) -> list[Path]:
    """Export the conflict log, the unmapped-field log and the summary, with stable names and order; or,
    as ``html``, the visual report (at most ``detail_rows`` detail rows per table, gates evaluated at
    ``max_conflict_rate``, default the threshold in force)."""
    if fmt not in FORMATS:
        raise OrchestratorError(f"unknown report format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "html":
        page = report_html.render(
            read_html(settings, conn, max_conflict_rate=max_conflict_rate, detail_rows=detail_rows)
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / report_html.REPORT_FILE
        with private_file(path) as handle:
            handle.write(page)
        return [path]
    tables = {}
    with db.connect(conn) as pg:
        for name, (columns, order) in REPORT_QUERIES.items():
            if not db.table_exists(pg, settings.dry_run_schema, name):
                raise OrchestratorError(
                    f"the dry-run table {settings.dry_run_schema}.{name} does not exist: run `orchestrator dry-run`"
                )
            query = sql.SQL("select {} from {} order by {}").format(
                sql.SQL(columns), sql.Identifier(settings.dry_run_schema, name), sql.SQL(order)
            )
            if fmt == "json":
                # the server writes the JSON: jsonb values nest as they are, numbers keep their text
                json_columns = sql.SQL(", ").join(
                    sql.SQL("{0}::jsonb as {0}").format(sql.Identifier(c)) if is_json else sql.Identifier(c)
                    for c, is_json in _column_names(columns)
                )
                text = pg.execute(
                    sql.SQL("select coalesce(json_agg(r), '[]')::text from (select {} from ({}) as t) as r").format(
                        json_columns, query
                    )
                ).fetchone()[0]
                tables[name] = text
            else:
                cur = pg.execute(query)
                tables[name] = ([c.name for c in cur.description], cur.fetchall())
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "md":
        path = out_dir / "migration_report.md"
        with private_file(path) as handle:
            handle.write("# Migration report\n")
            for name, (columns, rows) in tables.items():
                handle.write(
                    f"\n## {name} ({len(rows)} rows)\n\n| "
                    + " | ".join(columns)
                    + " |\n|"
                    + "---|" * len(columns)
                    + "\n"
                )
                for row in rows:
                    handle.write("| " + " | ".join(_md_cell(v) for v in row) + " |\n")
        return [path]
    for name, content in tables.items():
        path = out_dir / f"{name}.{fmt}"
        with private_file(path) as handle:
            if fmt == "csv":
                columns, rows = content
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(columns)
                writer.writerows([_csv_cell(v) for v in row] for row in rows)
            else:
                handle.write(content + "\n")
        written.append(path)
    return written


def _column_names(columns: str) -> list[tuple[str, bool]]:
    """(name, is jsonb rendered as text) of each column of a REPORT_QUERIES select list."""
    return [(part.strip().split(" as ")[-1].strip('"'), "::text" in part) for part in columns.split(",")]


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def _md_cell(value) -> str:
    return _csv_cell(value).replace("|", "\\|").replace("\n", " ")


# -- the HTML report's data ---------------------------------------------------------------------------

# The detail tables' order is also the order their "first row" anchors point into.
CONFLICT_ORDER = 'field collate "C", context_type collate "C" nulls first, user_id collate "C"'
UNMAPPED_ORDER = 'reason collate "C", key collate "C" nulls first, legacy_profile_id collate "C"'


def _rows(pg: psycopg.Connection, query: str, schema: str, detail_rows: int | None) -> list[dict]:
    names = {
        "conflicts": sql.Identifier(schema, "migration_conflicts"),
        "unmapped": sql.Identifier(schema, "migration_unmapped_fields"),
        "profile": sql.Identifier(schema, "profile"),
        "context_intent": sql.Identifier(schema, "context_intent"),
        "conflict_order": sql.SQL(CONFLICT_ORDER),
        "unmapped_order": sql.SQL(UNMAPPED_ORDER),
    }
    cur = pg.execute(sql.SQL(query).format(**names), {"detail_rows": detail_rows})
    columns = [column.name for column in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def read_html(
    settings: Settings, conn: ConnInfo, *, max_conflict_rate: Decimal | None = None, detail_rows: int | None
) -> dict:
    """Every figure of the report, plus at most ``detail_rows`` detail rows each (None: all). The gates and
    the summary's conflict-rate check are evaluated at ``max_conflict_rate``, by default the threshold in
    force (the dry run's last promote's, else the dry run's own)."""
    schema = settings.dry_run_schema
    try:
        # the gate "dry run built by the current models" needs the project's version now (a dbt parse)
        models_now = DbtProject(settings, conn).parse().current_models_version()
    except OrchestratorError:
        models_now = None
    with db.connect(conn) as pg:
        for name in REPORT_TABLES:
            if not db.table_exists(pg, schema, name):
                raise OrchestratorError(f"the dry-run table {schema}.{name} does not exist: run `orchestrator dry-run`")
        data = {
            name: _rows(pg, query, schema, detail_rows)
            for name, query in db.packaged_sql_sections("report_html.sql").items()
        }
        data["totals"] = data["totals"][0]
        dry_run = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=schema, legacy_schema=settings.legacy_schema
        )
        threshold = gates.threshold_in_force(pg, settings, dry_run)
        if max_conflict_rate is not None:
            threshold = gates.Threshold(max_conflict_rate, "given")
        data["summary"] = gates.read_summary(pg, schema).at_threshold(threshold.value)
        legacy_present = all(db.table_exists(pg, settings.legacy_schema, t) for t in db.LEGACY_TABLES)
        checked = None
        if legacy_present:
            checked = gates.check(
                pg,
                settings,
                dry_run,
                dry_run_schema=schema,
                max_conflict_rate=threshold.value,
                scope_table=None,
                current_models_version=models_now,
            )
        pg.rollback()
    data.update(
        dry_run=dry_run,
        gates=[gate.as_dict() for gate in checked] if checked is not None else None,
        models_now=models_now,
        settings=settings,
        threshold=threshold,
        detail_rows=detail_rows,
    )
    return data
