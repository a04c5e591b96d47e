"""`orchestrator report`: the conflict log, the unmapped-field log and the summary as files.

md, csv and json are the tables as they are; html is the visual report (orchestrator/report_html.py).
Every file is new and private (mode 0600): the reports hold personal data.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql

from orchestrator import db, decisions, gates, metadata, report_html
from orchestrator.config import ConnInfo, Settings
from orchestrator.dbt import DbtProject
from orchestrator.errors import OrchestratorError
from orchestrator.files import private_file
from orchestrator.formats import CELL_CHARS, shortened, summary_value

FORMATS = ("md", "csv", "json", "html")
DETAIL_ROWS = 10_000  # html: per detail table; the csv/json reports always hold every row
REPORT_TABLES = (
    "migration_summary",
    "migration_conflicts",
    "migration_decisions",
    "migration_unmapped_fields",
    "profile",
    "context_intent",
)


# log table -> (columns, order): jsonb columns are rendered by the server (::text), so numbers keep
# their exact JSON text (1.50 stays 1.50) and a JSON string stays distinguishable from a number
REPORT_QUERIES = {
    "migration_conflicts": (
        'user_id, context_type, field, "values"::text as "values", chosen::text as chosen, decided_by',
        'user_id collate "C", context_type nulls first, field collate "C"',
    ),
    "migration_unmapped_fields": (
        "user_id, context_type, context_profile_id, legacy_profile_id, key, value::text as value, reason",
        'legacy_profile_id collate "C", key collate "C" nulls first',
    ),
}


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
    ``max_conflict_rate``, default the threshold in force) and, beside it, the decision template, unless
    the one there holds a reviewer's decisions (the report then links to that one)."""
    try:
        return _write(settings, conn, fmt, out_dir, max_conflict_rate=max_conflict_rate, detail_rows=detail_rows)
    except OSError as exc:
        raise OrchestratorError(
            f"cannot write the report into {out_dir}: {exc.strerror or exc}: choose another --out"
        ) from None


def _write(
    settings: Settings,
    conn: ConnInfo,
    fmt: str,
    out_dir: Path,
    *,
    max_conflict_rate: Decimal | None,
    detail_rows: int | None,
) -> list[Path]:
    if fmt not in FORMATS:
        raise OrchestratorError(f"unknown report format {fmt!r}: use {', '.join(FORMATS)}")
    if fmt == "html":
        data = read_html(settings, conn, max_conflict_rate=max_conflict_rate, detail_rows=detail_rows)
        page = report_html.render(data)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / report_html.REPORT_FILE
        with private_file(path) as handle:
            handle.write(page)
        # the logs whose cells the page shortened, whole, beside it (the page links to them)
        written = [path, *_whole_logs(settings, conn, out_dir, data["shortened_logs"])]
        # one click from the report (a relative link): every conflict, ready for reviewers to decide
        if decisions.filled_in(out_dir / decisions.TEMPLATE_FILE):
            return written
        template = decisions.template(settings, conn, out_dir / decisions.TEMPLATE_FILE)
        return [*written, template.path]
    schema = settings.dry_run_schema
    with db.connect(conn) as pg:
        _require_tables(pg, schema, ("migration_summary", *LOGS))
        state = _state(pg, settings, conn, max_conflict_rate, with_gates=fmt == "md")
        summary = _summary_rows(state["summary"])
        # the logs' row counts and rows: one snapshot
        pg.rollback()
        pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        out_dir.mkdir(parents=True, exist_ok=True)
        if fmt == "md":
            path = out_dir / "migration_report.md"
            shortened_logs = []
            with private_file(path) as handle:
                handle.write("# Migration report\n\n" + _md_status(settings, state) + "\n")
                _md_table(handle, "migration_summary", *summary, len(summary[1]))
                for name in LOGS:
                    count = pg.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, name)))
                    with _log_rows(pg, schema, name) as (columns, rows):
                        if _md_table(handle, name, columns, rows, count.fetchone()[0]):
                            shortened_logs.append(name)
            return [path, *_whole_logs_in(pg, schema, out_dir, shortened_logs)]
        written = []
        for name in ("migration_summary", *LOGS):
            path = out_dir / f"{name}.{fmt}"
            with private_file(path) as handle:
                if name == "migration_summary" and fmt == "csv":
                    _write_csv(handle, *summary)
                elif name == "migration_summary":
                    columns, rows = summary
                    handle.write(
                        json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=_json_number)
                    )
                    handle.write("\n")
                else:
                    with _log_rows(pg, schema, name) as (columns, rows):
                        if fmt == "csv":
                            _write_csv(handle, columns, rows)
                        else:
                            _write_json_log(handle, name, columns, rows)
            written.append(path)
        return written


LOGS = ("migration_conflicts", "migration_unmapped_fields")


def _require_tables(pg: psycopg.Connection, schema: str, names) -> None:
    for name in names:
        if not db.table_exists(pg, schema, name):
            raise OrchestratorError(f"the dry-run table {schema}.{name} does not exist: run `orchestrator dry-run`")


LOG_BATCH_ROWS = 50  # rows a log's cursor fetches at a time: a row can hold values of any size


@contextlib.contextmanager
def _log_rows(pg: psycopg.Connection, schema: str, name: str) -> Iterator[tuple[list[str], Iterator[tuple]]]:
    """One log table in a stable order, jsonb values as the server prints them (numbers keep their text):
    (columns, rows), the rows read through a server-side cursor, a batch at a time, so a log of any size
    is written without holding it in memory (and no value or log is bound by a size but PostgreSQL's own)."""
    columns, order = REPORT_QUERIES[name]
    query = sql.SQL("select {} from {} order by {}").format(
        sql.SQL(columns), sql.Identifier(schema, name), sql.SQL(order)
    )
    with pg.cursor(name=f"report_{name}") as cur:
        cur.itersize = LOG_BATCH_ROWS
        cur.execute(query)
        yield [column.name for column in cur.description], iter(cur)


def _write_csv(handle, columns: list[str], rows) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(v) for v in row] for row in rows)


def _write_json_log(handle, name: str, columns: list[str], rows) -> None:
    """A log as a JSON array of objects: jsonb columns are the server's JSON text, verbatim (values nest
    as they are, numbers keep their text), every other column a JSON string (or null)."""
    is_json = dict(_column_names(REPORT_QUERIES[name][0]))
    handle.write("[")
    for index, row in enumerate(rows):
        handle.write(",\n " if index else "")
        fields = (
            f"{json.dumps(column)}: "
            + ("null" if value is None else value if is_json[column] else json.dumps(value, ensure_ascii=False))
            for column, value in zip(columns, row, strict=True)
        )
        handle.write("{" + ", ".join(fields) + "}")
    handle.write("]\n")


def _whole_logs(settings: Settings, conn: ConnInfo, out_dir: Path, names: list[str]) -> list[Path]:
    if not names:
        return []
    with db.connect(conn) as pg:
        return _whole_logs_in(pg, settings.dry_run_schema, out_dir, names)


def _whole_logs_in(pg: psycopg.Connection, schema: str, out_dir: Path, names: list[str]) -> list[Path]:
    """The logs ``names`` as CSV in ``out_dir`` (as `--format csv` writes them): where a Markdown or HTML
    report that shortened some of their cells says the whole values are."""
    written = []
    for name in names:
        path = out_dir / f"{name}.csv"
        with private_file(path) as handle, _log_rows(pg, schema, name) as (columns, rows):
            _write_csv(handle, columns, rows)
        written.append(path)
    return written


def _summary_rows(summary: gates.Summary) -> tuple[list[str], list[tuple]]:
    """The summary in metric order, figures as people read them (the conflict rate as a percentage), its
    conflict-rate check at the threshold in force."""
    rows = sorted(summary.rows, key=lambda row: row["metric"])
    return ["metric", "value", "expected", "passed"], [
        (
            row["metric"],
            summary_value(row["metric"], row["value"]) if row["metric"] == "conflict_rate" else row["value"],
            summary_value(row["metric"], row["expected"]) if row["metric"] == "conflict_rate" else row["expected"],
            row["passed"],
        )
        for row in rows
    ]


def _state(
    pg: psycopg.Connection, settings: Settings, conn: ConnInfo, max_conflict_rate: Decimal | None, *, with_gates: bool
) -> dict:
    """What a report says about the dry run: its record, the threshold in force (its last promote's, else
    its own; or ``max_conflict_rate`` when given), the summary at that threshold and, ``with_gates``,
    every promote gate evaluated at it (read-only; one dbt parse for the models version)."""
    dry_run = metadata.latest_dry_run(
        pg, settings.meta_schema, dry_run_schema=settings.dry_run_schema, legacy_schema=settings.legacy_schema
    )
    last_promote = metadata.last_promote_of(pg, settings.meta_schema, dry_run["dry_run_id"]) if dry_run else None
    threshold = gates.threshold_in_force(pg, settings, dry_run)
    if max_conflict_rate is not None:
        threshold = gates.Threshold(max_conflict_rate, "given")
    checked, models_now = None, None
    if with_gates and all(db.table_exists(pg, settings.legacy_schema, t) for t in db.LEGACY_TABLES):
        try:
            # the gate "dry run built by the current models" needs the project's version now (a dbt parse)
            models_now = DbtProject(settings, conn).parse().current_models_version()
        except OrchestratorError:
            models_now = None
        checked = gates.check(
            pg,
            settings,
            dry_run,
            dry_run_schema=settings.dry_run_schema,
            max_conflict_rate=threshold.value,
            scope_table=None,
            current_models_version=models_now,
        )
        pg.rollback()
    return {
        "dry_run": dry_run,
        "last_promote": last_promote,
        "threshold": threshold,
        "summary": gates.read_summary(pg, settings.dry_run_schema).at_threshold(threshold.value),
        "gates": [gate.as_dict() for gate in checked] if checked is not None else None,
        "models_now": models_now,
    }


def _md_status(settings: Settings, state: dict) -> str:
    """The report's first lines: which dry run, whether it is live, and the gates at the threshold in force."""
    dry_run, last, threshold = state["dry_run"], state["last_promote"], state["threshold"]
    lines = [
        f"Dry run {dry_run['dry_run_id']} ({dry_run['status']}, finished {dry_run['finished_at']:%Y-%m-%d %H:%M:%S})"
        if dry_run and dry_run["finished_at"]
        else "No finished dry run is recorded for these tables.",
        f"in schema `{settings.dry_run_schema}`, from legacy schema `{settings.legacy_schema}`.",
        "",
        f"**Live**: promoted by run {last['run_id']} at {last['started_at']:%Y-%m-%d %H:%M:%S} with "
        f"--max-conflict-rate {last['max_conflict_rate']} ({last['scope']} users)."
        if last
        else "**Not promoted**: no committed promote of this dry run is in effect.",
    ]
    if state["gates"] is not None:
        failed = [gate for gate in state["gates"] if not gate["passed"]]
        verdict = (
            "every promote gate holds"
            if not failed
            else "promote would be refused: " + "; ".join(f"{g['name']} ({g['figure']})" for g in failed)
        )
        lines += ["", f"**Gates** at the threshold in force ({threshold.describe()}): {verdict}."]
    return "\n".join(lines) + "\n"


def _json_number(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _column_names(columns: str) -> list[tuple[str, bool]]:
    """(name, is jsonb rendered as text) of each column of a REPORT_QUERIES select list."""
    return [(part.strip().split(" as ")[-1].strip('"'), "::text" in part) for part in columns.split(",")]


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)


def _md_cell(value) -> tuple[str, bool]:
    """A cell of a Markdown table, and whether it was shortened (at CELL_CHARS, saying how long it is)."""
    text = _csv_cell(value)
    return shortened(text, CELL_CHARS).replace("|", "\\|").replace("\n", " "), len(text) > CELL_CHARS


def _md_table(handle, name: str, columns: list[str], rows, count: int) -> bool:
    """One table of the Markdown report, its cells shortened at CELL_CHARS; when some were, a line under it
    says where the whole values are (the log as CSV beside the report). Whether any was shortened."""
    handle.write(f"\n## {name} ({count} rows)\n\n| " + " | ".join(columns) + " |\n|")
    handle.write("---|" * len(columns) + "\n")
    any_shortened = False
    for row in rows:
        cells = [_md_cell(v) for v in row]
        any_shortened = any_shortened or any(cut for _, cut in cells)
        handle.write("| " + " | ".join(text for text, _ in cells) + " |\n")
    if any_shortened:
        handle.write(
            f'\nValues longer than {CELL_CHARS:,} characters are shortened here, ending in "… (N characters)": '
            f"every value is whole in [{name}.csv]({name}.csv), beside this report, row for row.\n"
        )
    return any_shortened


# -- the HTML report's data ---------------------------------------------------------------------------

# The detail tables' order is also the order their "first row" anchors point into.
CONFLICT_ORDER = 'field collate "C", context_type collate "C" nulls first, user_id collate "C"'
UNMAPPED_ORDER = 'reason collate "C", key collate "C" nulls first, legacy_profile_id collate "C"'


def _rows(pg: psycopg.Connection, query: str, schema: str, detail_rows: int | None) -> list[dict]:
    names = {
        "conflicts": sql.Identifier(schema, "migration_conflicts"),
        "decisions": sql.Identifier(schema, "migration_decisions"),
        "unmapped": sql.Identifier(schema, "migration_unmapped_fields"),
        "profile": sql.Identifier(schema, "profile"),
        "context_intent": sql.Identifier(schema, "context_intent"),
        "conflict_order": sql.SQL(CONFLICT_ORDER),
        "unmapped_order": sql.SQL(UNMAPPED_ORDER),
    }
    cur = pg.execute(sql.SQL(query).format(**names), {"detail_rows": detail_rows, "cell_chars": CELL_CHARS})
    columns = [column.name for column in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def read_html(
    settings: Settings, conn: ConnInfo, *, max_conflict_rate: Decimal | None = None, detail_rows: int | None
) -> dict:
    """Every figure of the HTML report, plus at most ``detail_rows`` detail rows each (None: all), and the
    report's state (``_state``: the threshold in force, the summary and the gates at it)."""
    schema = settings.dry_run_schema
    with db.connect(conn) as pg:
        _require_tables(pg, schema, REPORT_TABLES)
        data = {
            name: _rows(pg, query, schema, detail_rows)
            for name, query in db.packaged_sql_sections("report_html.sql").items()
        }
        data["totals"] = data["totals"][0]
        data.update(_state(pg, settings, conn, max_conflict_rate, with_gates=True))
    data.update(
        settings=settings,
        detail_rows=detail_rows,
        decision_template=decisions.TEMPLATE_FILE,
        shortened_logs=[name for name, shortened in _shortened_cells(data).items() if shortened],
    )
    return data


# the text cells of the HTML report's tables of each log, and the JSON ones read shortened (with a *_length)
HTML_CELLS = {
    "migration_conflicts": {
        "conflicts": (("user_id", "field"), ("values", "chosen")),
        "conflicts_by_field": (("field",), ()),
    },
    "migration_unmapped_fields": {
        "unmapped": (("user_id", "context_profile_id", "legacy_profile_id", "key"), ("value",)),
        "unmapped_by_key": (("key",), ()),
    },
}


def _shortened_cells(data: dict) -> dict[str, bool]:
    """Whether the HTML report shortens a cell of each log's tables (a value over CELL_CHARS characters):
    the log is then written whole as CSV beside it."""
    return {
        log: any(
            any(len(row[column] or "") > CELL_CHARS for column in texts)
            or any((row[f"{column}_length"] or 0) > CELL_CHARS for column in jsons)
            for table, (texts, jsons) in tables.items()
            for row in data[table]
        )
        for log, tables in HTML_CELLS.items()
    }
