"""The pieces the HTML report is made of: escaping, tables, links and inline SVG charts.

Every value that reaches the page goes through ``esc``: user data is hostile. No script, no external
reference (the page's Content-Security-Policy, ``CSP``, forbids both).
"""

from __future__ import annotations

import html
from decimal import Decimal

from orchestrator.formats import CELL_CHARS, length_note, percent, shortened

BUCKETS = [f"{low}-{low + 9}" for low in range(0, 90, 10)] + ["90-100"]


def esc(value) -> str:
    """Any value as HTML text: user data is hostile."""
    return html.escape("" if value is None else str(value), quote=True)


def number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def clip(text: str, length: int) -> str:
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
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{esc(clip(label, 36))}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{max(bar, 1)}" height="{row_height - 6}" fill="{color}">'
            f"<title>{esc(shortened(label, CELL_CHARS))}: {number(value)}</title></rect>"
            f'<text x="{label_width + bar + 6}" y="{y + 15}">{number(value)}</text>'
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
                f' text-anchor="middle">{number(count)}</text>'
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
        f'<text x="{left + max(x_rate, 1) + 6}" y="30">{percent(rate)}</text>'
        f'<line x1="{x_gate}" y1="6" x2="{x_gate}" y2="44" stroke="#222" stroke-width="2" stroke-dasharray="4 2"/>'
        f'<text class="small" x="{x_gate}" y="58" text-anchor="middle">gate {percent(threshold)}</text></svg>'
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
        f'<text class="small" x="10" y="44">mapped {number(mapped)}</text>'
        f'<text class="small" x="{10 + track}" y="44" text-anchor="end">unmapped {number(unmapped)}</text></svg>'
    )


def table(columns: list[str], rows: list[list[str]], *, row_ids: list[str] | None = None, numeric=()) -> str:
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


def verdict(passed: bool | None) -> str:
    if passed is None:
        return ""
    return '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'


def code(value) -> str:
    return "" if value is None else f"<code>{esc(value)}</code>"


def long_code(value, length: int | None = None, whole: str = "") -> str:
    """``code(value)``, or for a value over CELL_CHARS characters its start and how long it is, and
    ``whole`` (HTML: where the whole value is). ``length``: the whole value's when ``value`` is its start."""
    if value is None:
        return ""
    text = str(value)
    length = len(text) if length is None else length
    if length <= CELL_CHARS:
        return code(text)
    note = esc(length_note(length)[:-1]) + (f": whole in {whole})" if whole else ")")
    return f'<code>{esc(text[:CELL_CHARS])}</code><span class="cut">{note}</span>'


def file_link(name: str) -> str:
    """A relative link to a file beside the report."""
    return f'<a href="{esc(name)}"><code>{esc(name)}</code></a>'


def shortened_note(total_shortened: bool, log: str, order: str) -> str:
    """Above a detail table whose cells were shortened: where every value is whole."""
    if not total_shortened:
        return ""
    return (
        f'<p class="warn">Values longer than {CELL_CHARS:,} characters are shortened on this page, ending in '
        f"“… (N characters)”: every value is whole in {file_link(log + '.csv')}, beside this page (the same "
        f"rows, ordered {esc(order)}; <code>orchestrator report --format csv</code> writes it too).</p>"
    )


def link(anchor: str, first_row, shown: int, text: str) -> str:
    """A link to a detail row, or to the detail table when that row is past the cap."""
    target = f"#{anchor}-{first_row}" if first_row is not None and first_row <= shown else f"#{anchor}s"
    return f'<a href="{esc(target)}">{text}</a>'


def capped(total: int, shown: int, what: str) -> str:
    if shown >= total:
        return f"<p>All {number(total)} {what}.</p>"
    return (
        f'<p class="warn">Showing the first {number(shown)} of {number(total)} {what}: every row is in '
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
.empty{color:#777}.cut{color:#777;font-style:italic}.meta{color:#555}.grid{display:flex;flex-wrap:wrap;gap:8px 24px}
.grid figure{margin:0}figcaption{font-weight:600}.big{font-size:18px}
svg.chart{display:block;max-width:100%;height:auto;font:12px system-ui,sans-serif}
svg .small{font-size:11px;fill:#444}svg a:hover rect{opacity:.75}
"""

# The page may load nothing and run nothing: everything it shows is in the file.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
