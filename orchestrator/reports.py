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

from psycopg import sql

from orchestrator import db, report_html
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import OrchestratorError

FORMATS = ("md", "csv", "json", "html")


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
    detail_rows: int | None = report_html.DETAIL_ROWS,
) -> list[Path]:
    """Export the conflict log, the unmapped-field log and the summary, with stable names and order; or,
    as ``html``, the visual report (at most ``detail_rows`` detail rows per table, gates evaluated at
    ``max_conflict_rate``, default the threshold in force)."""
    if fmt not in FORMATS:
        raise OrchestratorError(f"unknown report format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "html":
        page = report_html.render(
            report_html.read(settings, conn, max_conflict_rate=max_conflict_rate, detail_rows=detail_rows)
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
