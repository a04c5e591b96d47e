"""The visual migration report, ``migration_report.html``: one file, no script, no external reference,
charts as inline SVG (orchestrator/html_parts.py).

``render`` lays out what orchestrator/reports.py read (``reports.read_html``: every figure aggregated by
PostgreSQL from the dry-run tables, the gates evaluated at the threshold in force), one function per
section.
"""

from __future__ import annotations

from decimal import Decimal

from orchestrator import gates
from orchestrator.config import Settings
from orchestrator.formats import CELL_CHARS, percent, shortened, summary_value
from orchestrator.html_parts import (
    BUCKETS,
    COLORS,
    CSP,
    STYLE,
    accounting_bar,
    bar_chart,
    capped,
    code,
    esc,
    file_link,
    histogram,
    link,
    long_code,
    number,
    rate_gauge,
    shortened_note,
    table,
    verdict,
)

REPORT_FILE = "migration_report.html"
CONFLICTS_CSV = "migration_conflicts.csv"  # beside the page when it shortened a conflict's cell (reports.py)
UNMAPPED_CSV = "migration_unmapped_fields.csv"  # likewise for the unmapped log
TOP_KEYS = 30  # bars in the "unmapped by key" chart (the table below it lists every key)
SHARED = "shared (Profile)"  # how a conflict of a shared field (context type NULL) is named

# -- rendering: one function per section --------------------------------------------------------------


def _figure(data: dict, metric: str) -> int:
    value = data["summary"].value(metric)
    return int(value) if value is not None else 0


def _verdict_section(data: dict) -> str:
    """The gates and the checks at a glance."""
    checks = [row for row in data["summary"].rows if row["passed"] is not None]
    failed_checks = data["summary"].failed_checks()
    threshold: gates.Threshold = data["threshold"]
    if data["gates"] is None:
        gate_html = '<p class="warn">The legacy tables are not in the legacy schema: the gates were not evaluated.</p>'
    else:
        gate_html = table(
            ["gate", "result", "figure", "when it fails"],
            [
                [esc(gate["name"]), verdict(gate["passed"]), esc(gate["figure"]), esc(gate["remedy"])]
                for gate in data["gates"]
            ],
        )
    promotable = data["gates"] is not None and all(gate["passed"] for gate in data["gates"])
    return (
        '<section id="verdict"><h2>Verdict</h2>'
        + _promoted_note(data["last_promote"])
        + f'<p class="big">{len(checks) - len(failed_checks)} of {len(checks)} checks pass'
        + (f' (<span class="fail">FAIL</span>: {esc(", ".join(failed_checks))})' if failed_checks else "")
        + "; "
        + (
            '<span class="pass">every promote gate holds</span>'
            if promotable
            else '<span class="fail">promote would be refused</span>'
        )
        + f" at --max-conflict-rate {esc(threshold.value)} ({esc(threshold.describe())}).</p>"
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


def _promoted_note(last: dict | None) -> str:
    """Whether this dry run is live: its last promote, when and at which threshold."""
    if last is None:
        return '<p class="meta">This dry run is not live: no committed promote of it is in effect.</p>'
    when = last["started_at"].strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f'<p class="big"><span class="pass">Live</span>: promoted by run <code>{esc(last["run_id"])}</code> at '
        f"{esc(when)} with --max-conflict-rate {esc(last['max_conflict_rate'])} ({esc(last['scope'])} users).</p>"
    )


def _checks_section(data: dict) -> str:
    """The verification summary: checks first (failures first), then informational figures."""
    rows = sorted(data["summary"].rows, key=lambda row: (row["passed"] is None, row["passed"], row["metric"]))
    return (
        '<section id="checks"><h2>Verification checks</h2>'
        "<p>The dry run's <code>migration_summary</code>: checks first (failures first, with what they must "
        "equal), then informational figures; the conflict rate is checked against the threshold in force.</p>"
        + table(
            ["metric", "value", "expected", "result"],
            [
                [
                    esc(row["metric"]),
                    esc(summary_value(row["metric"], row["value"])),
                    esc(summary_value(row["metric"], row["expected"])),
                    verdict(row["passed"]),
                ]
                for row in rows
            ],
            numeric={"value", "expected"},
        )
        + "</section>"
    )


def _accounting_section(data: dict) -> str:
    seen, mapped, unmapped = _figure(data, "keys_seen"), _figure(data, "keys_mapped"), _figure(data, "keys_unmapped")
    return (
        '<section id="accounting"><h2>Key accounting</h2>'
        f'<p class="big">keys seen {number(seen)} = mapped {number(mapped)} + unmapped {number(unmapped)} '
        f"{verdict(seen == mapped + unmapped)}</p>"
        + accounting_bar(mapped, unmapped)
        + f"<p>Blobs that are not JSON objects are counted on their own line, not as keys: "
        f"<strong>{number(_figure(data, 'non_object_blobs'))}</strong> non-object blobs "
        f"(and {number(_figure(data, 'null_blobs'))} SQL NULL / JSON null blobs, which hold no keys). "
        f'Every unmapped key and non-object blob is a row of the <a href="#unmappeds">unmapped list</a>.</p>'
        "</section>"
    )


def _conflict_rate_section(data: dict) -> str:
    rate = data["summary"].value("conflict_rate")
    threshold = data["threshold"].value
    return (
        '<section id="conflict-rate"><h2>Conflict rate</h2>'
        f'<p class="big">{percent(rate)} of users have at least one conflict '
        f"({number(_figure(data, 'users_with_conflicts'))} of {number(_figure(data, 'users'))}); the promote gate "
        f"allows {percent(threshold)}: {verdict(rate is not None and Decimal(rate) <= threshold)}</p>"
        + rate_gauge(rate, threshold)
        + "<p>A conflict is a scalar field, object sub-key or intent field with two or more distinct values "
        "across a user's contexts; the first value in context order is migrated, unless a reviewer decided "
        'another (<a href="#decisions">reviewer decisions</a>), and every value is listed.</p>'
        "</section>"
    )


# where a shortened cell's whole value is: the log as CSV beside the page (written with it, reports.py)
CONFLICT_CSV_ORDER = "by user_id, context_type and field"
UNMAPPED_CSV_ORDER = "by legacy_profile_id and key"
DECISIONS_WHOLE = "<code>orchestrator decisions list --json</code>"


def _whole(csv_file: str) -> str:
    return file_link(csv_file)


def _context_name(context_type) -> str:
    return context_type or SHARED


def _conflicts_by_field_section(data: dict) -> str:
    shown = len(data["conflicts"])
    by_field = data["conflicts_by_field"]
    return (
        '<section id="conflicts-by-field"><h2>Conflicts by field</h2>'
        + bar_chart(
            [
                (
                    f"{row['field']} ({row['context_type']})" if row["context_type"] else row["field"],
                    row["conflicts"],
                    f"#conflict-{row['first_row']}" if row["first_row"] <= shown else "#conflicts",
                )
                for row in by_field
            ],
            title="conflicts by field",
            color=COLORS["fail"],
        )
        + table(
            ["field", "context type", "conflicts (users)", "detail"],
            [
                [
                    long_code(row["field"], whole=_whole(CONFLICTS_CSV)),
                    esc(_context_name(row["context_type"])),
                    esc(number(row["conflicts"])),
                    link("conflict", row["first_row"], shown, "first row ↓"),
                ]
                for row in by_field
            ],
            numeric={"conflicts (users)"},
        )
        + "</section>"
    )


def _decisions_section(data: dict) -> str:
    """The reviewers' decisions (spec §11): applied ones apart from the defaulted conflicts, stale ones
    flagged, and the template to decide more, one click away."""
    rows = data["decisions"]
    decided, stale = _figure(data, "conflicts_decided"), _figure(data, "decisions_stale")
    defaulted = data["totals"]["conflicts"] - decided
    template = data["decision_template"]
    return (
        '<section id="decisions"><h2>Reviewer decisions</h2>'
        f'<p class="big">{number(decided)} {"conflict" if decided == 1 else "conflicts"} decided by a reviewer, '
        f"{number(defaulted)} defaulted to their first value"
        + (
            f'; <span class="fail">{number(stale)} stale {"decision" if stale == 1 else "decisions"}</span> '
            "(promote refuses them)"
            if stale
            else ""
        )
        + ".</p>"
        f'<p>To decide conflicts, fill in the <a href="{esc(template)}">decision template</a> '
        f"(<code>{esc(template)}</code>, beside this report: every conflict, with its values): write in "
        "<code>decision</code> the position of the value to migrate or its JSON, then "
        f"<code>orchestrator decisions import {esc(template)}</code> and <code>orchestrator dry-run</code> "
        "again. A decision is stale when the legacy data changed since it was made: its conflict is gone or its "
        "value is no longer among the conflict's values (<code>orchestrator decisions list</code>).</p>"
        + table(
            ["status", "user_id", "context_type", "field", "value", "decided by", "when", "note"],
            [
                [
                    '<span class="pass">applied</span>'
                    if row["status"] == "applied"
                    else f'<span class="fail">stale</span> ({esc(row["stale_reason"])})',
                    long_code(row["user_id"], whole=DECISIONS_WHOLE),
                    esc(_context_name(row["context_type"])),
                    long_code(row["field"], whole=DECISIONS_WHOLE),
                    long_code(row["decided_value"], row["decided_value_length"], DECISIONS_WHOLE),
                    esc(row["reviewer"]),
                    esc(row["decided_at"].strftime("%Y-%m-%d %H:%M:%S %Z")),
                    esc(shortened(row["note"] or "", CELL_CHARS)),
                ]
                for row in rows
            ],
        )
        + capped(data["totals"]["decisions"], len(rows), "decisions")
        + "</section>"
    )


def _unmapped_summary_section(data: dict) -> str:
    shown = len(data["unmapped"])
    by_reason, by_key = data["unmapped_by_reason"], data["unmapped_by_key"]

    def key_label(key) -> str:
        return "(data not an object)" if key is None else key

    def anchor(row) -> str:
        return f"#unmapped-{row['first_row']}" if row["first_row"] <= shown else "#unmappeds"

    return (
        '<section id="unmapped-summary"><h2>Unmapped keys</h2><h3>By reason</h3>'
        + bar_chart(
            [(row["reason"], row["keys"], anchor(row)) for row in by_reason],
            title="unmapped rows by reason",
            color=COLORS["warn"],
        )
        + table(
            ["reason", "rows", "legacy profiles", "detail"],
            [
                [
                    code(row["reason"]),
                    esc(number(row["keys"])),
                    esc(number(row["profiles"])),
                    link("unmapped", row["first_row"], shown, "first row ↓"),
                ]
                for row in by_reason
            ],
            numeric={"rows", "legacy profiles"},
        )
        + f"<h3>By key (top {min(TOP_KEYS, len(by_key))} of {number(data['totals']['unmapped_keys'])})</h3>"
        + bar_chart(
            [(key_label(row["key"]), row["occurrences"], anchor(row)) for row in by_key[:TOP_KEYS]],
            title="unmapped rows by key",
            color=COLORS["warn"],
        )
        + table(
            ["key", "occurrences", "reasons", "detail"],
            [
                [
                    long_code(key_label(row["key"]), whole=_whole(UNMAPPED_CSV)),
                    esc(number(row["occurrences"])),
                    esc(row["reasons"]),
                    link("unmapped", row["first_row"], shown, "first row ↓"),
                ]
                for row in by_key
            ],
            numeric={"occurrences"},
        )
        + capped(data["totals"]["unmapped_keys"], len(by_key), "distinct keys")
        + "</section>"
    )


def _completeness_section(data: dict) -> str:
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
            + f'<p class="meta">{number(stats["row_count"])} rows, mean {esc(stats["mean"])}, '
            f"{number(stats['complete'])} complete (100)</p></figure>"
        )
    return (
        '<section id="completeness"><h2>Completeness</h2>'
        "<p>round(100 × filled ÷ required) per row, against the <code>required_fields</code> seed; "
        "buckets of ten (the last is 90-100).</p>"
        f'<div class="grid">{"".join(figures)}</div></section>'
    )


def _conflicts_section(data: dict) -> str:
    rows = data["conflicts"]
    return (
        '<section id="conflicts"><h2>Every conflict</h2>'
        + capped(data["totals"]["conflicts"], len(rows), "conflicts")
        + shortened_note(CONFLICTS_CSV[:-4] in data["shortened_logs"], CONFLICTS_CSV[:-4], CONFLICT_CSV_ORDER)
        + table(
            ["#", "user_id", "context_type", "field", "values (in order of first appearance)", "chosen", "chosen by"],
            [
                [
                    esc(row["row_number"]),
                    long_code(row["user_id"], whole=_whole(CONFLICTS_CSV)),
                    esc(_context_name(row["context_type"])),
                    long_code(row["field"], whole=_whole(CONFLICTS_CSV)),
                    long_code(row["values"], row["values_length"], _whole(CONFLICTS_CSV)),
                    long_code(row["chosen"], row["chosen_length"], _whole(CONFLICTS_CSV)),
                    "reviewer" if row["decided_by"] == "reviewer" else "first value",
                ]
                for row in rows
            ],
            row_ids=[f"conflict-{row['row_number']}" for row in rows],
            numeric={"#"},
        )
        + "</section>"
    )


def _unmapped_section(data: dict) -> str:
    rows = data["unmapped"]
    return (
        '<section id="unmappeds"><h2>Every unmapped key</h2>'
        + capped(data["totals"]["unmapped"], len(rows), "unmapped rows")
        + shortened_note(UNMAPPED_CSV[:-4] in data["shortened_logs"], UNMAPPED_CSV[:-4], UNMAPPED_CSV_ORDER)
        + table(
            ["#", "user_id", "context_type", "context_profile_id", "legacy_profile_id", "key", "value", "reason"],
            [
                [
                    esc(row["row_number"]),
                    long_code(row["user_id"], whole=_whole(UNMAPPED_CSV)),
                    esc(row["context_type"] or ""),
                    long_code(row["context_profile_id"], whole=_whole(UNMAPPED_CSV)),
                    long_code(row["legacy_profile_id"], whole=_whole(UNMAPPED_CSV)),
                    long_code(row["key"], whole=_whole(UNMAPPED_CSV))
                    if row["key"] is not None
                    else '<span class="empty">(not an object)</span>',
                    long_code(row["value"], row["value_length"], _whole(UNMAPPED_CSV)),
                    code(row["reason"]),
                ]
                for row in rows
            ],
            row_ids=[f"unmapped-{row['row_number']}" for row in rows],
            numeric={"#"},
        )
        + "</section>"
    )


SECTIONS = (
    ("verdict", "Verdict", _verdict_section),
    ("checks", "Checks", _checks_section),
    ("accounting", "Key accounting", _accounting_section),
    ("conflict-rate", "Conflict rate", _conflict_rate_section),
    ("conflicts-by-field", "Conflicts by field", _conflicts_by_field_section),
    ("decisions", "Reviewer decisions", _decisions_section),
    ("unmapped-summary", "Unmapped keys", _unmapped_summary_section),
    ("completeness", "Completeness", _completeness_section),
    ("conflicts", "Every conflict", _conflicts_section),
    ("unmappeds", "Every unmapped key", _unmapped_section),
)


def _provenance(dry_run: dict | None) -> str:
    if not dry_run:
        return "no recorded dry run (the tables were built outside the orchestrator)"
    finished = dry_run["finished_at"] and dry_run["finished_at"].strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"dry run {esc(dry_run['dry_run_id'])} ({esc(dry_run['status'])}, finished {esc(finished)}, dbt invocation "
        f"{esc(dry_run['dbt_invocation_id'])}, models version {esc((dry_run.get('models_version') or '')[:12])})"
    )


def render(data: dict) -> str:
    settings: Settings = data["settings"]
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text, _ in SECTIONS)
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
        f"<code>{esc(settings.legacy_schema)}</code>: {_provenance(data['dry_run'])}. "
        "Personal data: keep this file private.</p>"
        f"<nav>{nav}</nav>" + "".join(section(data) for _, _, section in SECTIONS) + "</main></body></html>\n"
    )
