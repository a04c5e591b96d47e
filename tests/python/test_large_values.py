"""Values of any size through every command (issue #27): two users whose legacy blobs hold a 1 MB and a
10 MB value in a conflict and in an unmapped key (generated with SQL beside the fixtures), through
`dry-run`, `report` in every format, `explain` (terminal and --json), `decisions template` / `import` /
`list`, a second dry run that applies the decisions, and `promote`.

Files that are data (CSV, JSON, the template) hold every value whole; what a person reads (the
terminal, Markdown and HTML cells) shows a value's start and says how long it is, and the reports point
to the file with the whole value. One module, one fixture dataset: the values are large, the steps few.
"""

from __future__ import annotations

import csv
import html
import io
import json
from decimal import Decimal

import psycopg
import pytest
from helpers import invoke
from psycopg import sql

from orchestrator import decisions, fixtures
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.console import to_json
from orchestrator.formats import CELL_CHARS, json_loads

MB = 1 << 20
PIECE = 'An essay: "quoted", commas; a | pipe,\n\ttabs, a back\\slash, ünïcödé 日本 😀. '
LUCKY = "7" * 5000  # a JSON integer longer than Python's int() takes by default (4300 digits)


def essay(length: int, tag: str) -> str:
    """``length`` characters of text that CSV, JSON, Markdown and HTML must all escape."""
    return (tag + PIECE * (length // len(PIECE) + 1))[: length - 1] + "."


E1 = essay(MB, "1 MB location ")  # big-1m: location ["Paris", E1]
E1_BELIEF = essay(MB, "1 MB belief ")  # big-1m: beliefs.essay ["short", {"text": E1_BELIEF, "score": 1.50}]
E1_UNMAPPED = essay(MB, "1 MB unmapped ")  # big-1m: unmapped key "essay"
E10 = essay(10 * MB, "10 MB location ")  # big-10m: location ["Lyon", E10]
E10_UNMAPPED = essay(10 * MB, "10 MB unmapped ")  # big-10m: unmapped key "essays" = [E10_UNMAPPED, 1.50]
NOTE = essay(200_000, "why ")  # a reviewer's note, longer than Python's csv reader takes by default

BELIEF = {"text": E1_BELIEF, "score": Decimal("1.50")}
CONFLICTS = {  # (user, field) -> values, in order of first appearance
    ("big-1m", "beliefs.essay"): ["short", BELIEF],
    ("big-1m", "location"): ["Paris", E1],
    ("big-10m", "location"): ["Lyon", E10],
}
UNMAPPED = {  # (user, key) -> value
    ("big-1m", "essay"): E1_UNMAPPED,
    ("big-1m", "luckyNumber"): Decimal(LUCKY),
    ("big-10m", "essays"): [E10_UNMAPPED, Decimal("1.50")],
}

LEGACY_ROWS = """
insert into {user} ("id", "createdAt", "updatedAt") values
    ('big-1m', '2024-01-01', '2024-01-01'), ('big-10m', '2024-01-01', '2024-01-01');
insert into {context_profile} ("id", "userId", "contextType", "createdAt", "updatedAt") values
    ('cp-1m-r', 'big-1m', 'romantic', '2024-01-01 10:00', '2024-01-01 10:00'),
    ('cp-1m-f', 'big-1m', 'friendship', '2024-01-02 10:00', '2024-01-02 10:00'),
    ('cp-10m-r', 'big-10m', 'romantic', '2024-01-01 10:00', '2024-01-01 10:00'),
    ('cp-10m-f', 'big-10m', 'friendship', '2024-01-02 10:00', '2024-01-02 10:00');
insert into {profile} ("id", "contextProfileId", "data", "createdAt", "updatedAt") values
    ('p-1m-r', 'cp-1m-r', jsonb_build_object('location', 'Paris', 'beliefs', jsonb_build_object('essay', 'short'),
        'essay', %(e1_unmapped)s::text, 'luckyNumber', %(lucky)s::numeric), '2024-01-01 10:00', '2024-01-01 10:00'),
    ('p-1m-f', 'cp-1m-f', jsonb_build_object('location', %(e1)s::text, 'friendshipDepth', 'deep',
        'beliefs', jsonb_build_object('essay', jsonb_build_object('text', %(e1_belief)s::text, 'score', 1.50))),
        '2024-01-02 10:00', '2024-01-02 10:00'),
    ('p-10m-r', 'cp-10m-r', jsonb_build_object('location', 'Lyon',
        'essays', jsonb_build_array(%(e10_unmapped)s::text, 1.50)), '2024-01-01 10:00', '2024-01-01 10:00'),
    ('p-10m-f', 'cp-10m-f', jsonb_build_object('location', %(e10)s::text), '2024-01-02 10:00', '2024-01-02 10:00');
"""


@pytest.fixture(scope="module")
def env(settings, database, cli_env):
    """The fixtures plus the two users of large values, and a dry run of them built by the CLI."""
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        for schema in (settings.meta_schema, settings.dry_run_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    tables = {name: sql.Identifier(FIXTURES_SCHEMA, table) for name, table in LEGACY_TABLE_NAMES.items()}
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        params = {
            "e1": E1,
            "e1_belief": E1_BELIEF,
            "e1_unmapped": E1_UNMAPPED,
            "lucky": LUCKY,
            "e10": E10,
            "e10_unmapped": E10_UNMAPPED,
        }
        for statement in filter(str.strip, LEGACY_ROWS.split(";")):
            pg.execute(sql.SQL(statement).format(**tables), params if "%(" in statement else None)
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}
    built = invoke(["dry-run"], env)
    assert built.exit_code == 0, built.output
    assert len(built.output) < 10_000  # the summary: no value reaches the terminal
    decisions.allow_csv_fields_of_any_size()  # this module's own csv readers
    return env


LEGACY_TABLE_NAMES = {"user": "User", "context_profile": "ContextProfile", "profile": "Profile"}


def longest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def logged(database, schema: str) -> dict:
    """The big users' rows of both logs, jsonb as the server prints it: conflicts {(user, field): (values,
    chosen, decided_by)}, unmapped {(user, key): value}."""
    with psycopg.connect(**database.kwargs()) as pg:
        conflicts = pg.execute(
            sql.SQL(
                "select user_id, field, \"values\"::text, chosen::text, decided_by from {} where user_id like 'big-%'"
            ).format(sql.Identifier(schema, "migration_conflicts"))
        ).fetchall()
        unmapped = pg.execute(
            sql.SQL("select user_id, key, value::text from {} where user_id like 'big-%'").format(
                sql.Identifier(schema, "migration_unmapped_fields")
            )
        ).fetchall()
    return {
        "conflicts": {(user, field): (values, chosen, by) for user, field, values, chosen, by in conflicts},
        "unmapped": {(user, key): value for user, key, value in unmapped},
    }


def note(text: str) -> str:
    return f"… ({len(text):,} characters)"


def csv_rows(path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# -- the dry run's logs, and the reports ------------------------------------------------------------------


def test_the_logs_hold_every_value_whole(env, settings, database):
    logs = logged(database, settings.dry_run_schema)
    assert {key: json_loads(values) for key, (values, _, _) in logs["conflicts"].items()} == CONFLICTS
    assert {key: json_loads(value) for key, value in logs["unmapped"].items()} == UNMAPPED
    assert LUCKY in logs["unmapped"][("big-1m", "luckyNumber")]  # its digits, as the legacy data wrote them


def test_csv_and_json_reports_hold_every_value_whole(env, settings, database, tmp_path):
    logs = logged(database, settings.dry_run_schema)
    assert invoke(["report", "--format", "csv", "--out", str(tmp_path / "csv")], env).exit_code == 0
    conflicts = {(r["user_id"], r["field"]): r for r in csv_rows(tmp_path / "csv" / "migration_conflicts.csv")}
    for key, (values, chosen, _) in logs["conflicts"].items():
        assert (conflicts[key]["values"], conflicts[key]["chosen"]) == (values, chosen)  # the server's text
    unmapped = {(r["user_id"], r["key"]): r for r in csv_rows(tmp_path / "csv" / "migration_unmapped_fields.csv")}
    for key, value in logs["unmapped"].items():
        assert unmapped[key]["value"] == value

    assert invoke(["report", "--format", "json", "--out", str(tmp_path / "json")], env).exit_code == 0
    conflicts = json_loads((tmp_path / "json" / "migration_conflicts.json").read_text(encoding="utf-8"))
    assert {(r["user_id"], r["field"]): r["values"] for r in conflicts if r["user_id"].startswith("big-")} == CONFLICTS
    unmapped = json_loads((tmp_path / "json" / "migration_unmapped_fields.json").read_text(encoding="utf-8"))
    assert {(r["user_id"], r["key"]): r["value"] for r in unmapped if (r["user_id"] or "").startswith("big-")} == (
        UNMAPPED
    )
    assert len([r for r in conflicts if not r["user_id"].startswith("big-")]) == 7  # the fixtures' own, too


def test_markdown_and_html_shorten_long_cells_and_link_the_whole_values(env, settings, database, tmp_path):
    logs = logged(database, settings.dry_run_schema)
    whole = tmp_path / "csv"
    assert invoke(["report", "--format", "csv", "--out", str(whole)], env).exit_code == 0
    longest = (
        logs["conflicts"][("big-10m", "location")][0],  # ["Lyon", E10] as JSON text
        logs["unmapped"][("big-10m", "essays")],
        logs["unmapped"][("big-1m", "luckyNumber")],
    )

    md_dir = tmp_path / "md"
    result = invoke(["report", "--format", "md", "--out", str(md_dir), "--json"], env)
    assert result.exit_code == 0, result.output
    assert sorted(path.rsplit("/", 1)[1] for path in json.loads(result.stdout)["files"]) == [
        "migration_conflicts.csv",
        "migration_report.md",
        "migration_unmapped_fields.csv",
    ]
    md = (md_dir / "migration_report.md").read_text(encoding="utf-8")
    assert len(md) < 100_000
    for text in longest:
        assert note(text) in md
    # the cell: the value's first characters (a Markdown cell's | escaped), then how long it is
    assert (longest[0][:CELL_CHARS] + note(longest[0])).replace("|", "\\|") in md
    assert f"Values longer than {CELL_CHARS:,} characters are shortened here" in md
    assert "[migration_conflicts.csv](migration_conflicts.csv)" in md
    assert "[migration_unmapped_fields.csv](migration_unmapped_fields.csv)" in md
    for name in ("migration_conflicts.csv", "migration_unmapped_fields.csv"):  # the same files as --format csv
        assert (md_dir / name).read_bytes() == (whole / name).read_bytes()

    html_dir = tmp_path / "html"
    result = invoke(["report", "--format", "html", "--out", str(html_dir), "--json"], env)
    assert result.exit_code == 0, result.output
    assert sorted(path.rsplit("/", 1)[1] for path in json.loads(result.stdout)["files"]) == [
        "decisions_template.csv",
        "migration_conflicts.csv",
        "migration_report.html",
        "migration_unmapped_fields.csv",
    ]
    page = (html_dir / "migration_report.html").read_text(encoding="utf-8")
    assert len(page) < 300_000
    link = '<a href="migration_conflicts.csv"><code>migration_conflicts.csv</code></a>'
    assert f"({len(longest[0]):,} characters: whole in {link})" in page
    link = '<a href="migration_unmapped_fields.csv"><code>migration_unmapped_fields.csv</code></a>'
    assert f"({len(longest[1]):,} characters: whole in {link})" in page
    assert f'<code>{html.escape(longest[1][:CELL_CHARS])}</code><span class="cut">…' in page
    assert f"Values longer than {CELL_CHARS:,} characters are shortened on this page" in page
    for name in ("migration_conflicts.csv", "migration_unmapped_fields.csv"):
        assert (html_dir / name).read_bytes() == (whole / name).read_bytes()
    template = {(r["user_id"], r["field"]): r["values"] for r in csv_rows(html_dir / "decisions_template.csv")}
    assert template[("big-10m", "location")] == longest[0]


def test_explain_shortens_in_the_terminal_and_its_json_is_whole(env):
    shown = invoke(["explain", "--user", "big-10m"], env)
    assert shown.exit_code == 0, shown.output
    assert longest_line(shown.output) < 1_500 and len(shown.output) < 20_000
    for value in (E10, [E10_UNMAPPED, Decimal("1.50")]):  # as JSON, the way the terminal shows it
        assert note(to_json(value, indent=None)) in shown.output
    assert "location" in shown.output and "lost a conflict" in shown.output

    lucky = invoke(["explain", "--user", "big-1m"], env)  # a 5000-digit JSON integer: read, shown shortened
    assert lucky.exit_code == 0, lucky.output
    assert note(LUCKY) in lucky.output and longest_line(lucky.output) < 1_500

    exact = invoke(["explain", "--user", "big-10m", "--json"], env)
    assert exact.exit_code == 0
    result = json_loads(exact.stdout)
    assert {(row["legacy_profile_id"], row["legacy_key"]): row["legacy_value"] for row in result["keys"]} == {
        ("p-10m-r", "essays"): [E10_UNMAPPED, Decimal("1.50")],
        ("p-10m-r", "location"): "Lyon",
        ("p-10m-f", "location"): E10,
    }
    assert [row["values"] for row in result["conflicts"]] == [["Lyon", E10]]
    exact = invoke(["explain", "--user", "big-1m", "--json"], env)
    assert exact.exit_code == 0 and f'"legacy_value": {LUCKY},' in exact.stdout  # its digits, exactly
    keys = {row["legacy_key"]: row["legacy_value"] for row in json_loads(exact.stdout)["keys"]}
    assert (keys["luckyNumber"], keys["essay"]) == (Decimal(LUCKY), E1_UNMAPPED)


# -- reviewers decide: the template imports whatever its size ----------------------------------------------


def decide(rows: list[dict], choices: dict) -> str:
    """The template as a reviewer saves it: ``choices`` {(user, field): (decision, note)} filled in."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(decisions.HEADER)
    for row in rows:
        decision, why = choices.get((row["user_id"], row["field"]), ("", ""))
        writer.writerow([*(row[column] for column in decisions.HEADER[:5]), decision, why])
    return buffer.getvalue()


def test_the_template_imports_and_the_next_dry_run_migrates_the_decided_values(env, settings, database, tmp_path):
    template = tmp_path / "template.csv"
    written = invoke(["decisions", "template", "--out", str(template)], env)
    assert written.exit_code == 0, written.output
    rows = csv_rows(template)
    logs = logged(database, settings.dry_run_schema)
    for row in rows:
        if row["user_id"].startswith("big-"):
            values, chosen, _ = logs["conflicts"][(row["user_id"], row["field"])]
            assert (row["values"], row["chosen"]) == (values, chosen)
    filled = decide(
        rows,
        {
            ("big-1m", "location"): (json.dumps(E1, ensure_ascii=False), NOTE),  # a 1 MB decision cell
            ("big-1m", "beliefs.essay"): ("2", ""),
            ("big-10m", "location"): ("2", "the essay :thumbs_up:"),
        },
    )
    template.write_text(filled, encoding="utf-8")

    # a filled-in template of any size is recognised as such: never overwritten
    again = invoke(["decisions", "template", "--out", str(template)], env)
    assert again.exit_code == 2 and "holds 3 decisions or notes a reviewer filled in" in again.output
    assert template.read_text(encoding="utf-8") == filled

    imported = invoke(["decisions", "import", str(template), "--by", "Ann"], env)
    assert imported.exit_code == 0, imported.output
    assert "Imported 3 decisions" in imported.output

    shown = invoke(["decisions", "list"], env)
    assert shown.exit_code == 0, shown.output
    assert longest_line(shown.output) < 1_500 and len(shown.output) < 20_000
    assert note(to_json(E10)) in shown.output and note(NOTE) in shown.output
    listed = json_loads(invoke(["decisions", "list", "--json"], env).stdout)
    assert {(row["user_id"], row["field"]): (row["value"], row["note"]) for row in listed} == {
        ("big-1m", "beliefs.essay"): (BELIEF, None),
        ("big-1m", "location"): (E1, NOTE),
        ("big-10m", "location"): (E10, "the essay :thumbs_up:"),  # as written: no emoji code
    }

    rebuilt = invoke(["dry-run"], env)
    assert rebuilt.exit_code == 0, rebuilt.output
    logs = logged(database, settings.dry_run_schema)
    assert {key: (json_loads(chosen), by) for key, (_, chosen, by) in logs["conflicts"].items()} == {
        ("big-1m", "beliefs.essay"): (BELIEF, "reviewer"),
        ("big-1m", "location"): (E1, "reviewer"),
        ("big-10m", "location"): (E10, "reviewer"),
    }
    with psycopg.connect(**database.kwargs()) as pg:
        profiles = dict(
            pg.execute(
                sql.SQL("select user_id, location from {} where user_id like 'big-%'").format(
                    sql.Identifier(settings.dry_run_schema, "profile")
                )
            ).fetchall()
        )
    assert profiles == {"big-1m": E1, "big-10m": E10}


def test_a_refusal_shortens_the_values_it_quotes(env, tmp_path):
    template = tmp_path / "template.csv"
    assert invoke(["decisions", "template", "--out", str(template)], env).exit_code == 0
    rows = csv_rows(template)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(
        decide(
            rows,
            {
                ("big-1m", "location"): (json.dumps(E1 + "!", ensure_ascii=False), ""),  # not among its values
                ("big-10m", "location"): ("9" * 5000, ""),  # a position of 5000 digits
            },
        ),
        encoding="utf-8",
    )
    refused = invoke(["decisions", "import", str(wrong)], env)
    assert refused.exit_code == 2
    assert "was refused whole, nothing was imported" in refused.output
    assert len(refused.output) < 5_000 and longest_line(refused.output) < 1_500
    assert f"{note(json.dumps(E1 + '!', ensure_ascii=False))} is not among the conflict's values" in refused.output
    assert f"{note('9' * 5000)} is out of range: the conflict has 2 values" in refused.output


def test_promote_writes_the_values_whole(env, settings, database):
    promoted = invoke(["promote", "--yes", "--max-conflict-rate", "1"], env)
    assert promoted.exit_code == 0, promoted.output
    with psycopg.connect(**database.kwargs()) as pg:
        live = dict(
            pg.execute(
                sql.SQL('select "userId", location from {} where "userId" like %s').format(
                    sql.Identifier(settings.live_schema, "UserProfile")
                ),
                ["big-%"],
            ).fetchall()
        )
    assert live == {"big-1m": E1, "big-10m": E10}
    assert "identical to the dry run" in invoke(["explain", "--user", "big-10m"], env).output
