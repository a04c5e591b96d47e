"""What a reviewer reads before signing off: the lineage docs site and the visual migration report.

- ``build_docs`` runs ``dbt docs generate --static`` against the current server and copies the one
  self-contained page it writes; ``serve`` serves it on 127.0.0.1.
- ``html_report`` writes ``migration_report.html``: one file, no script, no external reference,
  charts as inline SVG. Every figure is aggregated by PostgreSQL from the dry-run tables; Python
  only lays out the (small) aggregated rows and the capped detail rows, escaping every value.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import http.server
import json
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console

from orchestrator import db, metadata
from orchestrator.config import Settings
from orchestrator.dbt import DbtResult, run_dbt
from orchestrator.embedded import ConnInfo
from orchestrator.errors import OrchestratorError

DOCS_DIR = Path("reports") / "docs"  # git-ignored, like every report
REPORT_FILE = "migration_report.html"
DETAIL_ROWS = 10_000  # per detail table; the csv/json reports always hold every row
TOP_KEYS = 30  # bars in the "unmapped by key" chart (the table below it lists every key)
BUCKETS = [f"{low}-{low + 9}" for low in range(0, 90, 10)] + ["90-100"]


# -- the lineage docs site ---------------------------------------------------------------------------


@dataclasses.dataclass
class DocsSite:
    index: Path
    dbt: DbtResult
    nodes_compiled: int
    catalog_relations: int  # tables/views dbt found in the database (0: nothing built yet)

    def as_dict(self) -> dict:
        return {
            "index": str(self.index),
            "dbt_invocation_id": self.dbt.invocation_id,
            "nodes_compiled": self.nodes_compiled,
            "catalog_relations": self.catalog_relations,
        }


def _docs_node_count(*target_paths: Path) -> int | None:
    """Nodes `dbt docs generate` compiles (models, seeds, tests), from the last manifest found."""
    for target_path in target_paths:
        try:
            manifest = json.loads((target_path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        kinds = {"model", "seed", "test", "snapshot", "analysis"}
        return sum(1 for node in manifest.get("nodes", {}).values() if node.get("resource_type") in kinds) or None
    return None


def build_docs(settings: Settings, conn: ConnInfo, console: Console, out_dir: Path) -> DocsSite:
    """``dbt docs generate --static`` against ``conn``; copies the page to ``out_dir/index.html``.

    dbt writes into its own target path (``<home>/docs``), so the docs never overwrite the dry
    run's artifacts. The catalog (column types, row counts) comes from the dry-run and legacy
    schemas as they are now.
    """
    from orchestrator.pipeline import dbt_progress

    state_dir = settings.home / "docs"
    env = {**settings.dbt_env(), "MIGRATION_META_SCHEMA": settings.meta_schema}
    total = _docs_node_count(state_dir / "target" / "dry_run", settings.home / "target" / "dry_run")
    compiled = []
    with dbt_progress(console, "dbt docs generate", total) as advance:

        def finished(unique_id: str, status: str) -> None:
            compiled.append(unique_id)
            advance(unique_id, status)

        result = run_dbt(
            settings.project_dir,
            conn,
            ["docs", "generate", "--static"],
            env=env,
            on_node_finished=finished,
            state_dir=state_dir,
        )
    page = result.target_path / "static_index.html"
    if not result.success or not page.exists():
        raise OrchestratorError(result.describe_failure())
    try:
        catalog = json.loads((result.target_path / "catalog.json").read_text())
        relations = len(catalog.get("nodes", {})) + len(catalog.get("sources", {}))
    except (OSError, ValueError):
        relations = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    shutil.copyfile(page, index)
    return DocsSite(index=index, dbt=result, nodes_compiled=len(compiled), catalog_relations=relations)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:
        pass


def docs_server(directory: Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``directory`` on 127.0.0.1 (``port`` 0: a free one), not yet serving."""
    if not (directory / "index.html").exists():
        raise OrchestratorError(f"there is no docs site in {directory}: run `orchestrator docs --out {directory}`")
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise OrchestratorError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def serve(server: http.server.HTTPServer, console: Console) -> None:
    """Serve until Ctrl-C (the server from ``docs_server``)."""
    with server:
        console.print(f"Serving {server_url(server)} (Ctrl-C to stop)", markup=False)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("Stopped.")


def server_url(server: http.server.HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


# -- the visual report: reading ------------------------------------------------------------------------

REPORT_TABLES = ("migration_summary", "migration_conflicts", "migration_unmapped_fields", "profile", "context_intent")

# The detail tables' order is also the order their "first row" anchors point into.
CONFLICT_ORDER = 'field collate "C", context_type collate "C" nulls first, user_id collate "C"'
UNMAPPED_ORDER = 'reason collate "C", key collate "C" nulls first, legacy_profile_id collate "C"'

QUERIES = {
    "summary": """
        select metric, value, expected, passed
        from {summary}
        order by passed is null, passed, metric collate "C"
    """,
    "conflicts_by_field": """
        with numbered as (
            select context_type, field, row_number() over (order by {conflict_order}) as row_number
            from {conflicts}
        )
        select context_type, field, count(*) as conflicts, min(row_number) as first_row
        from numbered
        group by context_type, field
        order by conflicts desc, field collate "C", context_type collate "C" nulls first
    """,
    "conflicts": """
        select
            row_number() over (order by {conflict_order}) as row_number,
            user_id, context_type, field, "values"::text as "values", chosen::text as chosen
        from {conflicts}
        order by row_number
        limit %(detail_rows)s
    """,
    "unmapped_by_reason": """
        with numbered as (
            select reason, legacy_profile_id, row_number() over (order by {unmapped_order}) as row_number
            from {unmapped}
        )
        select reason, count(*) as keys, count(distinct legacy_profile_id) as profiles, min(row_number) as first_row
        from numbered
        group by reason
        order by keys desc, reason collate "C"
    """,
    "unmapped_by_key": """
        with numbered as (
            select key, reason, row_number() over (order by {unmapped_order}) as row_number
            from {unmapped}
        )
        select
            key,
            count(*) as occurrences,
            string_agg(distinct reason, ', ' order by reason) as reasons,
            min(row_number) as first_row
        from numbered
        group by key
        order by occurrences desc, key collate "C" nulls first
        limit %(detail_rows)s
    """,
    "unmapped": """
        select
            row_number() over (order by {unmapped_order}) as row_number,
            user_id, context_type, context_profile_id, legacy_profile_id, key, value::text as value, reason
        from {unmapped}
        order by row_number
        limit %(detail_rows)s
    """,
    "totals": """
        select
            (select count(*) from {conflicts}) as conflicts,
            (select count(*) from {unmapped}) as unmapped,
            (select count(distinct key) + coalesce(bool_or(key is null)::int, 0) from {unmapped}) as unmapped_keys
    """,
    "completeness_buckets": """
        with scored as (
            select 'profile' as target, null::text as context_type, completeness from {profile}
            union all
            select 'context_intent' as target, context_type, completeness from {context_intent}
        )
        select
            target,
            context_type,
            grouping(context_type) = 1 as all_types,
            least(completeness / 10, 9) as bucket,
            count(*) as row_count
        from scored
        group by grouping sets ((target, bucket), (target, context_type, bucket))
        having target = 'context_intent' or grouping(context_type) = 1
    """,
    "completeness_stats": """
        with scored as (
            select 'profile' as target, null::text as context_type, completeness from {profile}
            union all
            select 'context_intent' as target, context_type, completeness from {context_intent}
        )
        select
            target,
            context_type,
            grouping(context_type) = 1 as all_types,
            count(*) as row_count,
            round(avg(completeness), 1) as mean,
            count(*) filter (where completeness = 100) as complete
        from scored
        group by grouping sets ((target), (target, context_type))
        having target = 'context_intent' or grouping(context_type) = 1
        order by target desc, all_types desc, context_type collate "C"
    """,
}


def _rows(pg: psycopg.Connection, name: str, schema: str, detail_rows: int | None) -> list[dict]:
    names = {
        "summary": sql.Identifier(schema, "migration_summary"),
        "conflicts": sql.Identifier(schema, "migration_conflicts"),
        "unmapped": sql.Identifier(schema, "migration_unmapped_fields"),
        "profile": sql.Identifier(schema, "profile"),
        "context_intent": sql.Identifier(schema, "context_intent"),
        "conflict_order": sql.SQL(CONFLICT_ORDER),
        "unmapped_order": sql.SQL(UNMAPPED_ORDER),
    }
    cur = pg.execute(sql.SQL(QUERIES[name]).format(**names), {"detail_rows": detail_rows})
    columns = [column.name for column in cur.description]
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def read_report(settings: Settings, conn: ConnInfo, *, max_conflict_rate: Decimal, detail_rows: int | None) -> dict:
    """Every figure of the report, aggregated by the server, plus at most ``detail_rows`` detail rows each
    (None: all)."""
    from orchestrator import promote as promoting

    schema = settings.dry_run_schema
    try:
        # the gate "dry run built by the current models" needs the project's version now (a dbt parse)
        models_now = promoting.current_models_version(settings, conn)
    except OrchestratorError:
        models_now = None
    with db.connect(conn) as pg:
        for table in REPORT_TABLES:
            if not db.table_exists(pg, schema, table):
                raise OrchestratorError(
                    f"the dry-run table {schema}.{table} does not exist: run `orchestrator dry-run`"
                )
        data = {name: _rows(pg, name, schema, detail_rows) for name in QUERIES}
        data["totals"] = data["totals"][0]
        dry_run = metadata.latest_dry_run(
            pg, settings.meta_schema, dry_run_schema=schema, legacy_schema=settings.legacy_schema
        )
        legacy_present = all(db.table_exists(pg, settings.legacy_schema, t) for t in db.LEGACY_TABLES)
        gates = None
        if legacy_present:
            gates = promoting.check_gates(
                pg,
                settings,
                dry_run,
                dry_run_schema=schema,
                max_conflict_rate=max_conflict_rate,
                scope_table=None,
                current_models_version=models_now,
            )
        pg.rollback()
    data.update(
        dry_run=dry_run,
        gates=[gate.as_dict() for gate in gates] if gates is not None else None,
        models_now=models_now,
        settings=settings,
        max_conflict_rate=max_conflict_rate,
        detail_rows=detail_rows,
    )
    return data


def html_report(
    settings: Settings,
    conn: ConnInfo,
    out_dir: Path,
    *,
    max_conflict_rate: Decimal = Decimal("0.05"),
    detail_rows: int | None = DETAIL_ROWS,
) -> list[Path]:
    """Write ``out_dir/migration_report.html`` (mode 0600: it holds personal data)."""
    from orchestrator.pipeline import _private_file

    data = read_report(settings, conn, max_conflict_rate=max_conflict_rate, detail_rows=detail_rows)
    page = render_report(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    with _private_file(path) as handle:
        handle.write(page)
    return [path]


# -- the visual report: rendering ----------------------------------------------------------------------


def esc(value) -> str:
    """Any value as HTML text: user data is hostile."""
    return html.escape("" if value is None else str(value), quote=True)


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _percent(value) -> str:
    return "unknown" if value is None else f"{Decimal(value) * 100:.2f}%"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


COLORS = {"bar": "#4a6fa5", "pass": "#2e7d32", "fail": "#c62828", "warn": "#b26a00", "grid": "#d0d4da"}


def bar_chart(items: list[tuple[str, int, str | None]], *, title: str, color: str = COLORS["bar"]) -> str:
    """Horizontal bars: (label, value, link or None) each, largest first as given."""
    if not items:
        return '<p class="empty">Nothing to chart.</p>'
    width, label_width, row_height = 760, 250, 22
    plot_width = width - label_width - 80
    top = max(value for _, value, _ in items) or 1
    height = row_height * len(items) + 8
    parts = [
        f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}"><title>{esc(title)}</title>'
    ]
    for index, (label, value, link) in enumerate(items):
        y = 4 + index * row_height
        bar = round(plot_width * value / top) if value else 0
        row = (
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{esc(_clip(label, 36))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{max(bar, 1)}" height="{row_height - 6}" fill="{color}">'
            f"<title>{esc(label)}: {_number(value)}</title></rect>"
            f'<text x="{label_width + bar + 6}" y="{y + 15}">{_number(value)}</text>'
        )
        parts.append(f'<a href="{esc(link)}">{row}</a>' if link else row)
    parts.append("</svg>")
    return "".join(parts)


def histogram(counts: list[int], *, title: str) -> str:
    """Ten vertical bars over the completeness buckets 0-9 … 90-100."""
    width, height, left, bottom, top_margin = 440, 190, 36, 30, 18
    plot_height = height - bottom - top_margin
    slot = (width - left - 6) / len(counts)
    top = max(counts) or 1
    parts = [
        f'<svg class="chart histogram" role="img" aria-label="{esc(title)}" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}"><title>{esc(title)}</title>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 4}" y2="{height - bottom}" stroke="{COLORS["grid"]}"/>',
    ]
    for index, (bucket, count) in enumerate(zip(BUCKETS, counts, strict=True)):
        bar = round(plot_height * count / top)
        x = left + index * slot
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{height - bottom - bar}" width="{slot - 4:.1f}" height="{bar}"'
            f' fill="{COLORS["bar"]}"><title>completeness {bucket}: {count}</title></rect>'
            f'<text class="small" x="{x + slot / 2:.1f}" y="{height - bottom + 13}"'
            f' text-anchor="middle">{bucket}</text>'
        )
        if count:
            parts.append(
                f'<text class="small" x="{x + slot / 2:.1f}" y="{height - bottom - bar - 4}"'
                f' text-anchor="middle">{_number(count)}</text>'
            )
    parts.append(
        f'<text class="small" x="4" y="{top_margin - 6}">rows</text>'
        f'<text class="small" x="{width - 4}" y="{height - 2}" text-anchor="end">completeness %</text></svg>'
    )
    return "".join(parts)


def rate_gauge(rate: Decimal | None, threshold: Decimal) -> str:
    """The conflict rate as a bar against the gate's threshold (a marked line)."""
    width, height, left, track = 760, 64, 10, 700
    rate = Decimal(rate or 0)
    scale = max(rate, threshold, Decimal("0.01")) * Decimal("1.25")
    x_rate = round(track * float(rate / scale))
    x_gate = left + round(track * float(threshold / scale))
    color = COLORS["pass"] if rate <= threshold else COLORS["fail"]
    return (
        f'<svg class="chart" role="img" aria-label="conflict rate against the gate" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}"><title>conflict rate against the gate</title>'
        f'<rect x="{left}" y="14" width="{track}" height="22" fill="#eef0f3"/>'
        f'<rect x="{left}" y="14" width="{max(x_rate, 1)}" height="22" fill="{color}"/>'
        f'<text x="{left + max(x_rate, 1) + 6}" y="30">{_percent(rate)}</text>'
        f'<line x1="{x_gate}" y1="6" x2="{x_gate}" y2="44" stroke="#222" stroke-width="2" stroke-dasharray="4 2"/>'
        f'<text class="small" x="{x_gate}" y="58" text-anchor="middle">gate {_percent(threshold)}</text></svg>'
    )


def accounting_bar(mapped: int, unmapped: int) -> str:
    """Keys seen as one bar split into mapped and unmapped."""
    width, track = 760, 700
    seen = mapped + unmapped
    x_mapped = round(track * mapped / seen) if seen else 0
    return (
        f'<svg class="chart" role="img" aria-label="keys seen = mapped + unmapped" width="{width}" height="52"'
        f' viewBox="0 0 {width} 52"><title>keys seen = mapped + unmapped</title>'
        f'<rect x="10" y="6" width="{x_mapped}" height="22" fill="{COLORS["pass"]}">'
        f"<title>mapped: {mapped}</title></rect>"
        f'<rect x="{10 + x_mapped}" y="6" width="{track - x_mapped if seen else track}" height="22"'
        f' fill="{COLORS["warn"] if seen else "#eef0f3"}"><title>unmapped: {unmapped}</title></rect>'
        f'<text class="small" x="10" y="44">mapped {_number(mapped)}</text>'
        f'<text class="small" x="{10 + track}" y="44" text-anchor="end">unmapped {_number(unmapped)}</text></svg>'
    )


def _table(columns: list[str], rows: list[list[str]], *, row_ids: list[str] | None = None, numeric=()) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th{' class=num' if c in numeric else ''}>{esc(c)}</th>" for c in columns)
    body = []
    for index, cells in enumerate(rows):
        row_id = f' id="{row_ids[index]}"' if row_ids else ""
        tds = "".join(
            f"<td{' class=num' if column in numeric else ''}>{cell}</td>"
            for column, cell in zip(columns, cells, strict=True)
        )
        body.append(f"<tr{row_id}>{tds}</tr>")
    if not rows:
        body.append(f'<tr><td colspan="{len(columns)}" class="empty">None.</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return ""
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


def _code(value) -> str:
    return "" if value is None else f"<code>{esc(value)}</code>"


def _link(anchor: str, first_row, shown: int, text: str) -> str:
    """A link to a detail row, or to the detail table when that row is past the cap."""
    target = f"#{anchor}-{first_row}" if first_row is not None and first_row <= shown else f"#{anchor}s"
    return f'<a href="{esc(target)}">{text}</a>'


def _capped(total: int, shown: int, what: str) -> str:
    if shown >= total:
        return f"<p>All {_number(total)} {what}.</p>"
    return (
        f'<p class="warn">Showing the first {_number(shown)} of {_number(total)} {what}: every row is in '
        f"<code>orchestrator report --format csv</code> (or raise <code>--max-rows</code>).</p>"
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:8px 28px 48px;background:#fff}
h1{margin:0;padding:20px 0 4px}h2{margin-top:36px;border-bottom:2px solid #e3e6ea;padding-bottom:4px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #e3e6ea;padding:8px 0;z-index:1}
nav a{margin-right:14px;white-space:nowrap}a{color:#1f5fa8}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #e0e3e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:38px}td.num,th.num{text-align:right}
tr:target{background:#fff4c2}code{font:12px/1.3 ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:700}.warn{color:#b26a00}
.empty{color:#777}.meta{color:#555}.grid{display:flex;flex-wrap:wrap;gap:8px 24px}
.grid figure{margin:0}figcaption{font-weight:600}.big{font-size:18px}
svg.chart{display:block;max-width:100%;height:auto;font:12px system-ui,sans-serif}
svg .small{font-size:11px;fill:#444}svg a:hover rect{opacity:.75}
"""

# The page may load nothing and run nothing: everything it shows is in the file.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_report(data: dict) -> str:
    settings: Settings = data["settings"]
    summary = {row["metric"]: row for row in data["summary"]}
    totals = data["totals"]
    sections = []

    # -- verdict: the gates and the checks at a glance
    checks = [row for row in data["summary"] if row["passed"] is not None]
    failed_checks = [row["metric"] for row in checks if not row["passed"]]
    gate_html = ""
    if data["gates"] is None:
        gate_html = '<p class="warn">The legacy tables are not in the legacy schema: the gates were not evaluated.</p>'
    else:
        gate_html = _table(
            ["gate", "result", "figure", "when it fails"],
            [
                [esc(gate["name"]), _verdict(gate["passed"]), esc(gate["figure"]), esc(gate["remedy"])]
                for gate in data["gates"]
            ],
        )
    promotable = data["gates"] is not None and all(gate["passed"] for gate in data["gates"])
    sections.append(
        '<section id="verdict"><h2>Verdict</h2>'
        f'<p class="big">{len(checks) - len(failed_checks)} of {len(checks)} checks pass'
        + (f' (<span class="fail">FAIL</span>: {esc(", ".join(failed_checks))})' if failed_checks else "")
        + "; "
        + (
            '<span class="pass">every promote gate holds</span>'
            if promotable
            else '<span class="fail">promote would be refused</span>'
        )
        + f" at --max-conflict-rate {esc(data['max_conflict_rate'])}.</p>"
        + "<p>The gates are what <code>orchestrator promote</code> checks before it writes anything "
        "(evaluated now, read-only).</p>"
        + (
            ""
            if data["models_now"]
            else '<p class="warn">The project does not parse, so the gate "dry run built by the current '
            'models" was not evaluated: promote would refuse.</p>'
        )
        + gate_html
        + "</section>"
    )

    # -- the verification summary
    from orchestrator.pipeline import format_value

    summary_rows = [
        [
            esc(row["metric"]),
            esc(format_value(row["metric"], row["value"])),
            esc(format_value(row["metric"], row["expected"])),
            _verdict(row["passed"]),
        ]
        for row in data["summary"]
    ]
    sections.append(
        '<section id="checks"><h2>Verification checks</h2>'
        "<p>The dry run's <code>migration_summary</code>: checks first (failures first, with what they must "
        "equal), then informational figures.</p>"
        + _table(["metric", "value", "expected", "result"], summary_rows, numeric={"value", "expected"})
        + "</section>"
    )

    # -- key accounting
    def figure(metric: str) -> int:
        value = summary.get(metric, {}).get("value")
        return int(value) if value is not None else 0

    seen, mapped, unmapped = figure("keys_seen"), figure("keys_mapped"), figure("keys_unmapped")
    reconciles = seen == mapped + unmapped
    sections.append(
        '<section id="accounting"><h2>Key accounting</h2>'
        f'<p class="big">keys seen {_number(seen)} = mapped {_number(mapped)} + unmapped {_number(unmapped)} '
        f"{_verdict(reconciles)}</p>"
        + accounting_bar(mapped, unmapped)
        + f"<p>Blobs that are not JSON objects are counted on their own line, not as keys: "
        f"<strong>{_number(figure('non_object_blobs'))}</strong> non-object blobs "
        f"(and {_number(figure('null_blobs'))} SQL NULL / JSON null blobs, which hold no keys). "
        f'Every unmapped key and non-object blob is a row of the <a href="#unmappeds">unmapped list</a>.</p>'
        "</section>"
    )

    # -- conflict rate against the gate
    rate = summary.get("conflict_rate", {}).get("value")
    threshold = data["max_conflict_rate"]
    within = rate is not None and Decimal(rate) <= threshold
    sections.append(
        '<section id="conflict-rate"><h2>Conflict rate</h2>'
        f'<p class="big">{_percent(rate)} of users have at least one conflict '
        f"({_number(figure('users_with_conflicts'))} of {_number(figure('users'))}); the promote gate allows "
        f"{_percent(threshold)}: {_verdict(within)}</p>"
        + rate_gauge(rate, threshold)
        + "<p>A conflict is a scalar field, object sub-key or intent field with two or more distinct values "
        "across a user's contexts; the first value in context order is migrated and every value is listed.</p>"
        "</section>"
    )

    # -- conflicts by field
    shown_conflicts = len(data["conflicts"])
    by_field = data["conflicts_by_field"]

    def field_label(row) -> str:
        return f"{row['field']} ({row['context_type']})" if row["context_type"] else row["field"]

    sections.append(
        '<section id="conflicts-by-field"><h2>Conflicts by field</h2>'
        + bar_chart(
            [
                (
                    field_label(row),
                    row["conflicts"],
                    f"#conflict-{row['first_row']}" if row["first_row"] <= shown_conflicts else "#conflicts",
                )
                for row in by_field
            ],
            title="conflicts by field",
            color=COLORS["fail"],
        )
        + _table(
            ["field", "context type", "conflicts (users)", "detail"],
            [
                [
                    _code(row["field"]),
                    esc(row["context_type"] or "shared (Profile)"),
                    esc(_number(row["conflicts"])),
                    _link("conflict", row["first_row"], shown_conflicts, "first row ↓"),
                ]
                for row in by_field
            ],
            numeric={"conflicts (users)"},
        )
        + "</section>"
    )

    # -- unmapped keys
    shown_unmapped = len(data["unmapped"])
    by_reason, by_key = data["unmapped_by_reason"], data["unmapped_by_key"]

    def key_label(key) -> str:
        return "(data not an object)" if key is None else key

    sections.append(
        '<section id="unmapped-summary"><h2>Unmapped keys</h2>'
        "<h3>By reason</h3>"
        + bar_chart(
            [
                (
                    row["reason"],
                    row["keys"],
                    f"#unmapped-{row['first_row']}" if row["first_row"] <= shown_unmapped else "#unmappeds",
                )
                for row in by_reason
            ],
            title="unmapped rows by reason",
            color=COLORS["warn"],
        )
        + _table(
            ["reason", "rows", "legacy profiles", "detail"],
            [
                [
                    _code(row["reason"]),
                    esc(_number(row["keys"])),
                    esc(_number(row["profiles"])),
                    _link("unmapped", row["first_row"], shown_unmapped, "first row ↓"),
                ]
                for row in by_reason
            ],
            numeric={"rows", "legacy profiles"},
        )
        + f"<h3>By key (top {min(TOP_KEYS, len(by_key))} of {_number(totals['unmapped_keys'])})</h3>"
        + bar_chart(
            [
                (
                    key_label(row["key"]),
                    row["occurrences"],
                    f"#unmapped-{row['first_row']}" if row["first_row"] <= shown_unmapped else "#unmappeds",
                )
                for row in by_key[:TOP_KEYS]
            ],
            title="unmapped rows by key",
            color=COLORS["warn"],
        )
        + _table(
            ["key", "occurrences", "reasons", "detail"],
            [
                [
                    _code(key_label(row["key"])),
                    esc(_number(row["occurrences"])),
                    esc(row["reasons"]),
                    _link("unmapped", row["first_row"], shown_unmapped, "first row ↓"),
                ]
                for row in by_key
            ],
            numeric={"occurrences"},
        )
        + _capped(totals["unmapped_keys"], len(by_key), "distinct keys")
        + "</section>"
    )

    # -- completeness distributions
    buckets: dict[tuple, list[int]] = {}
    for row in data["completeness_buckets"]:
        group = (row["target"], None if row["all_types"] else row["context_type"])
        buckets.setdefault(group, [0] * len(BUCKETS))[row["bucket"]] = row["row_count"]
    figures = []
    for stats in data["completeness_stats"]:
        group = (stats["target"], None if stats["all_types"] else stats["context_type"])
        name = (
            "profile"
            if group[0] == "profile"
            else ("context_intent (all types)" if group[1] is None else f"context_intent: {group[1]}")
        )
        figures.append(
            f"<figure><figcaption>{esc(name)}</figcaption>"
            + histogram(buckets.get(group, [0] * len(BUCKETS)), title=f"completeness of {name}")
            + f'<p class="meta">{_number(stats["row_count"])} rows, mean {esc(stats["mean"])}, '
            f"{_number(stats['complete'])} complete (100)</p></figure>"
        )
    sections.append(
        '<section id="completeness"><h2>Completeness</h2>'
        "<p>round(100 × filled ÷ required) per row, against the <code>required_fields</code> seed; "
        "buckets of ten (the last is 90-100).</p>"
        f'<div class="grid">{"".join(figures)}</div></section>'
    )

    # -- the detail rows
    sections.append(
        '<section id="conflicts"><h2>Every conflict</h2>'
        + _capped(totals["conflicts"], shown_conflicts, "conflicts")
        + _table(
            ["#", "user_id", "context_type", "field", "values (in order of first appearance)", "chosen"],
            [
                [
                    esc(row["row_number"]),
                    _code(row["user_id"]),
                    esc(row["context_type"] or ""),
                    _code(row["field"]),
                    _code(row["values"]),
                    _code(row["chosen"]),
                ]
                for row in data["conflicts"]
            ],
            row_ids=[f"conflict-{row['row_number']}" for row in data["conflicts"]],
            numeric={"#"},
        )
        + "</section>"
    )
    sections.append(
        '<section id="unmappeds"><h2>Every unmapped key</h2>'
        + _capped(totals["unmapped"], shown_unmapped, "unmapped rows")
        + _table(
            ["#", "user_id", "context_type", "context_profile_id", "legacy_profile_id", "key", "value", "reason"],
            [
                [
                    esc(row["row_number"]),
                    _code(row["user_id"]),
                    esc(row["context_type"] or ""),
                    _code(row["context_profile_id"]),
                    _code(row["legacy_profile_id"]),
                    _code(row["key"]) if row["key"] is not None else '<span class="empty">(not an object)</span>',
                    _code(row["value"]),
                    _code(row["reason"]),
                ]
                for row in data["unmapped"]
            ],
            row_ids=[f"unmapped-{row['row_number']}" for row in data["unmapped"]],
            numeric={"#"},
        )
        + "</section>"
    )

    dry_run = data["dry_run"]
    provenance = (
        f"dry run {esc(dry_run['dry_run_id'][:12])} ({esc(dry_run['status'])}, finished "
        f"{esc(dry_run['finished_at'] and dry_run['finished_at'].strftime('%Y-%m-%d %H:%M:%S %Z'))}, dbt invocation "
        f"{esc(dry_run['dbt_invocation_id'])}, models version {esc((dry_run.get('models_version') or '')[:12])})"
        if dry_run
        else "no recorded dry run (the tables were built outside the orchestrator)"
    )
    nav = "".join(
        f'<a href="#{anchor}">{text}</a>'
        for anchor, text in (
            ("verdict", "Verdict"),
            ("checks", "Checks"),
            ("accounting", "Key accounting"),
            ("conflict-rate", "Conflict rate"),
            ("conflicts-by-field", "Conflicts by field"),
            ("unmapped-summary", "Unmapped keys"),
            ("completeness", "Completeness"),
            ("conflicts", "Every conflict"),
            ("unmappeds", "Every unmapped key"),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>Migration report: {esc(settings.dry_run_schema)}</title><style>{STYLE}</style></head>"
        "<body><main>"
        "<h1>Migration report</h1>"
        f'<p class="meta">Dry-run schema <code>{esc(settings.dry_run_schema)}</code> built from legacy schema '
        f"<code>{esc(settings.legacy_schema)}</code>: {provenance}. Personal data: keep this file private.</p>"
        f"<nav>{nav}</nav>" + "".join(sections) + "</main></body></html>\n"
    )
