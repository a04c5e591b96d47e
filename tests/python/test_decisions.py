"""`orchestrator decisions` through the real CLI on the fixtures: the template, imports (all or nothing:
every refusal lists each offending line and imports nothing), list and clear. What the decisions do to
a dry run, the gates and promote: test_decisions_flow.py."""

from __future__ import annotations

import hashlib
import json
import stat

import psycopg
import pytest
from helpers import invoke

from orchestrator import console, dry_run, fixtures
from orchestrator.config import FIXTURES_SCHEMA

HEADER = "user_id,context_type,field,values,chosen,decision,note"
TEMPLATE = [
    HEADER,
    'u04,,beliefs.religion,"[""atheist"", ""catholic""]","""atheist""",,',
    'u04,,location,"[""NYC"", ""SF""]","""NYC""",,',
    'u07,romantic,relationshipTimeline,"[""open_to_soon"", ""actively_looking""]","""open_to_soon""",,',
    'u10,,location,"[""Quito"", ""Lima""]","""Quito""",,',
    'u12,,location,"[""Accra"", ""Dakar"", ""Abuja""]","""Accra""",,',
    'u13,,location,"[""Porto"", ""Lisbon""]","""Porto""",,',
    'u13,romantic,relationshipTimeline,"[""taking_my_time"", ""actively_looking""]","""taking_my_time""",,',
]


@pytest.fixture(scope="module")
def cli(settings, database, cli_env):
    """One dry run of the fixtures (7 conflicts), as the CLI sees it."""
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute(f'drop schema if exists "{settings.meta_schema}" cascade')
        pg.execute(f'drop schema if exists "{settings.dry_run_schema}" cascade')
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    return {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}


@pytest.fixture()
def env(cli, settings, database):
    """No decision before each test."""
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute(f'delete from "{settings.meta_schema}".conflict_decisions')
    return cli


def stored(settings, database) -> list[tuple]:
    with psycopg.connect(**database.kwargs()) as pg:
        return pg.execute(
            "select user_id, context_type, field, value::text, reviewer, note, file_sha256"
            f' from "{settings.meta_schema}".conflict_decisions order by user_id, field'  # noqa: S608 (test constants)
        ).fetchall()


def csv_file(tmp_path, *rows: str, header: str = HEADER, name: str = "decided.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def listed(env, *args) -> list[dict]:
    result = invoke(["decisions", "list", "--json", *args], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- the template ---------------------------------------------------------------------------------------


def test_template_lists_every_conflict_of_the_latest_dry_run(env, tmp_path):
    out = tmp_path / "t" / "template.csv"
    result = invoke(["decisions", "template", "--out", str(out)], env)
    assert result.exit_code == 0, result.output
    assert result.output == f"Wrote {out}: 7 conflicts to decide.\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # personal data
    assert out.read_text(encoding="utf-8").splitlines() == TEMPLATE
    printed = invoke(["decisions", "template", "--out", "-"], env)
    assert printed.exit_code == 0 and printed.stdout.splitlines() == TEMPLATE
    one = invoke(["decisions", "template", "--out", "-", "--user", "u04", "--field", "location"], env)
    assert one.stdout.splitlines() == [HEADER, TEMPLATE[2]]
    beliefs = invoke(["decisions", "template", "--out", "-", "--field", "beliefs"], env)  # an object's sub-keys
    assert beliefs.stdout.splitlines() == [HEADER, TEMPLATE[1]]
    as_json = invoke(["decisions", "template", "--out", str(out), "--user", "u13", "--json"], env)
    assert json.loads(as_json.stdout) == {"conflicts": 2, "file": str(out)}
    unwritable = invoke(["decisions", "template", "--out", str(tmp_path)], env)  # a directory
    assert unwritable.exit_code == 2
    assert unwritable.output.startswith(f"Error: cannot write {tmp_path}: ")
    assert unwritable.output.endswith(": choose another --out\n")


def test_a_template_a_reviewer_filled_in_is_never_overwritten(env, settings, database, tmp_path):
    from orchestrator import reports

    out = tmp_path / "decisions_template.csv"
    assert invoke(["decisions", "template", "--out", str(out)], env).exit_code == 0
    assert invoke(["decisions", "template", "--out", str(out)], env).exit_code == 0  # nothing filled in yet
    lines = out.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][: -len(",,")] + ',2,"the newer answer"'
    decided = "\n".join(lines) + "\n"
    out.write_text(decided, encoding="utf-8")
    again = invoke(["decisions", "template", "--out", str(out)], env)
    assert again.exit_code == 2, again.output
    assert again.output.startswith(f"Error: {out} holds 1 decision or note a reviewer filled in: import it first")
    assert out.read_text(encoding="utf-8") == decided
    # the HTML report writes a template beside itself, but keeps (and links to) one being filled in
    written = reports.write(settings, database, "html", tmp_path)
    assert written == [tmp_path / "migration_report.html"]
    assert out.read_text(encoding="utf-8") == decided
    assert 'href="decisions_template.csv"' in (tmp_path / "migration_report.html").read_text(encoding="utf-8")


# -- importing ------------------------------------------------------------------------------------------


def test_import_keeps_positions_and_json_values_with_who_when_and_why(env, settings, database, tmp_path):
    path = csv_file(
        tmp_path,
        'u04,,location,"[""NYC"", ""SF""]","""NYC""",2,SF is where she lives now',
        'u04,,beliefs.religion,"[""atheist"", ""catholic""]","""atheist""", "catholic" ,',
        'u07,romantic,relationshipTimeline,,,"""actively_looking""",asked the user',
        'u10,,location,"[""Quito"", ""Lima""]","""Quito""",,an empty decision decides nothing',
    )
    result = invoke(["decisions", "import", str(path), "--by", "Ann"], env)
    assert result.exit_code == 0, result.output
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.output == (
        f"Imported 3 decisions from {path} by Ann (sha256 {sha256[:12]}); 1 row with no decision changed nothing."
        " Run `orchestrator dry-run` to apply them.\n"
    )
    assert stored(settings, database) == [
        ("u04", None, "beliefs.religion", '"catholic"', "Ann", None, sha256),
        ("u04", None, "location", '"SF"', "Ann", "SF is where she lives now", sha256),
        ("u07", "romantic", "relationshipTimeline", '"actively_looking"', "Ann", "asked the user", sha256),
    ]
    rows = listed(env)
    assert [(r["user_id"], r["field"], r["value"], r["status"]) for r in rows] == [
        ("u04", "beliefs.religion", "catholic", "pending"),  # the next dry run applies them
        ("u04", "location", "SF", "pending"),
        ("u07", "relationshipTimeline", "actively_looking", "pending"),
    ]
    assert {r["reviewer"] for r in rows} == {"Ann"} and all(r["decided_at"] for r in rows)
    assert [r["field"] for r in listed(env, "--user", "u07")] == ["relationshipTimeline"]
    text = invoke(["decisions", "list"], env).output
    assert 'u04 location = "SF": pending: the next dry run applies it' in text
    assert "by Ann at " in text and "note: SF is where she lives now" in text
    with psycopg.connect(**database.kwargs()) as pg:
        events = pg.execute(
            f'select action, actor, file_name, file_sha256, decisions from "{settings.meta_schema}".decision_events'  # noqa: S608
            " order by at"
        ).fetchall()
    assert events[-1] == ("import", "Ann", "decided.csv", sha256, 3)


def test_importing_again_replaces_the_decisions_the_file_makes_and_keeps_the_others(env, settings, database, tmp_path):
    first = csv_file(tmp_path, "u04,,location,,,2,", 'u13,,location,,,"""Lisbon""",', name="first.csv")
    assert invoke(["decisions", "import", str(first), "--by", "Ann"], env).exit_code == 0
    second = csv_file(tmp_path, "u04,,location,,,1,changed my mind", "u13,,location,,,,", name="second.csv")
    result = invoke(["decisions", "import", str(second), "--by", "Bob", "--json"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) | {"sha256": None} == {
        "file": str(second),
        "sha256": None,
        "reviewer": "Bob",
        "decided": 1,
        "undecided": 1,
    }
    assert [row[:6] for row in stored(settings, database)] == [
        ("u04", None, "location", '"NYC"', "Bob", "changed my mind"),  # replaced
        ("u13", None, "location", '"Lisbon"', "Ann", None),  # an empty decision leaves it as it is
    ]


def test_a_decided_number_is_the_conflicts_own_json(env, settings, database, tmp_path):
    """Object sub-values compare as jsonb (1.0 = 1.00) and the value kept is the conflict's own JSON."""
    schema = settings.dry_run_schema
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute(
            f'insert into "{schema}".migration_conflicts (user_id, context_type, field, "values", chosen, decided_by)'  # noqa: S608
            " values ('u99', null, 'beliefs.age', '[30, 1.0, \"30\"]', '30', 'first_value')"
        )
    try:
        path = csv_file(tmp_path, "u99,,beliefs.age,,,1.00,", 'u04,,location,,," ""SF"" ",')
        assert invoke(["decisions", "import", str(path)], env).exit_code == 0
        values = {row[2]: row[3] for row in stored(settings, database)}
        assert values == {"beliefs.age": "1.0", "location": '"SF"'}
        refused = invoke(["decisions", "import", str(csv_file(tmp_path, "u99,,beliefs.age,,,31,"))], env)
        assert refused.exit_code == 2 and "position 31 is out of range: the conflict has 3 values" in refused.output
        as_json = invoke(["decisions", "import", str(csv_file(tmp_path, 'u99,,beliefs.age,,,"""1.0""",'))], env)
        assert as_json.exit_code == 2 and '"1.0" is not among the conflict\'s values [30, 1.0, "30"]' in as_json.output
    finally:
        with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
            pg.execute(f"delete from \"{schema}\".migration_conflicts where user_id = 'u99'")  # noqa: S608


REFUSALS = {
    "an unknown conflict": (
        ["u99,,location,,,1,"],
        "line 2: no conflict of user 'u99', shared (Profile) field 'location' in the latest dry run",
    ),
    "a conflict of another context type": (
        ["u04,romantic,location,,,1,"],
        "line 2: no conflict of user 'u04', intent 'romantic' field 'location' in the latest dry run",
    ),
    "a position out of range": (
        ["u04,,location,,,3,"],
        "line 2: position 3 is out of range: the conflict has 2 values",
    ),
    "position zero": (["u04,,location,,,0,"], "line 2: position 0 is out of range: positions start at 1"),
    "a value not among the values": (
        ['u04,,location,,,"""Paris""",'],
        'line 2: "Paris" is not among the conflict\'s values ["NYC", "SF"]',
    ),
    "a scalar value compared exactly": (
        ['u04,,location,,,""" SF""",'],
        'line 2: " SF" is not among the conflict\'s values',
    ),
    "malformed JSON": (
        ["u04,,location,,,SF,"],
        "line 2: the decision 'SF' is neither a position nor JSON: write a value as JSON",
    ),
    "a conflict decided twice": (
        ["u04,,location,,,1,", "u10,,location,,,1,", 'u04,,location,,,"""SF""",'],
        "line 2: decides the same conflict as line 4: decide each conflict once\n"
        "  line 4: decides the same conflict as line 2: decide each conflict once",
    ),
    "a position against other values": (
        ['u04,,location,"[""SF"", ""NYC""]",,1,'],
        'line 2: its values cell differs from the latest dry run\'s ["NYC", "SF"], so position 1 may name'
        " another value",
    ),
    "a row with too few fields": (["u04,,location,1"], "line 2: has 4 fields, the header has 7: check the quoting"),
    "a line of a quoted field counted where it starts": (
        ['u13,,location,"[""Porto"",', ' ""Lisbon""]",,3,', "u04,,location,,,9,"],
        "line 2: position 3 is out of range: the conflict has 2 values (1 to 2)\n  line 4: position 9 is out of range",
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_import_refuses_the_whole_file_naming_each_line(case, env, settings, database, tmp_path):
    kept = csv_file(tmp_path, "u13,,location,,,2,kept", name="kept.csv")
    assert invoke(["decisions", "import", str(kept)], env).exit_code == 0
    before = stored(settings, database)
    rows, why = REFUSALS[case]
    path = csv_file(tmp_path, *rows, "u12,,location,,,2,valid but refused with the rest")
    result = invoke(["decisions", "import", str(path)], env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {path} was refused whole, nothing was imported: fix th")
    assert f"\n  {why}" in result.output
    assert f"line {len(rows) + 2}:" not in result.output  # the valid row is not blamed
    assert stored(settings, database) == before  # nothing imported, nothing replaced


def test_import_lists_every_wrong_line_at_once(env, settings, database, tmp_path):
    path = csv_file(
        tmp_path, "u04,,location,,,3,", "u07,romantic,relationshipTimeline,,,2,", "u99,,x,,,1,", "u10,,location,,,x,"
    )
    result = invoke(["decisions", "import", str(path)], env)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0] == f"Error: {path} was refused whole, nothing was imported: fix these 3 lines and import it again"
    assert [line.split(":")[0] for line in lines[1:]] == ["  line 2", "  line 4", "  line 5"]
    assert stored(settings, database) == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("user_id,context_type,field,values,chosen,decision,note\nu04,,location,,,1,caf\xe9\n".encode("latin-1"),
         "is not UTF-8 text (byte 76): save it as CSV in UTF-8, nothing was imported"),
        (b"user,field,decision\nu04,location,1\n",
         "has the header 'user,field,decision', not the decision template's "
         "'user_id,context_type,field,values,chosen,decision,note': start from `orchestrator decisions template`"),
        (b"", "is empty: start from `orchestrator decisions template`"),
    ],
    ids=["not UTF-8", "another header", "empty"],
)  # fmt: skip
def test_import_refuses_a_file_that_is_not_the_templates_csv(content, why, env, settings, database, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    result = invoke(["decisions", "import", str(path)], env)
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path} {why}") and result.output.count("\n") == 1  # one line
    assert stored(settings, database) == []


def test_import_accepts_a_spreadsheets_byte_order_mark(env, settings, database, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\r\nu04,,location,,,2,\r\n".encode())
    assert invoke(["decisions", "import", str(path)], env).exit_code == 0
    assert [row[3] for row in stored(settings, database)] == ['"SF"']


# -- clearing -------------------------------------------------------------------------------------------


def test_clear_asks_needs_a_terminal_or_yes_and_removes_whose_it_is_told(
    env, settings, database, tmp_path, monkeypatch
):
    path = csv_file(tmp_path, "u04,,location,,,2,", "u04,,beliefs.religion,,,2,", "u13,,location,,,2,")
    assert invoke(["decisions", "import", str(path)], env).exit_code == 0
    no_terminal = invoke(["decisions", "clear"], env)
    assert no_terminal.exit_code == 2
    assert no_terminal.output == "Error: this command changes data and there is no terminal to ask: use --yes\n"
    monkeypatch.setattr(console, "interactive", lambda: True)
    answered_no = invoke(["decisions", "clear", "--user", "u04"], env, input="n\n")
    assert answered_no.exit_code == 1
    assert "Remove 2 reviewer decisions of u04?" in answered_no.output and "nothing was changed" in answered_no.output
    assert len(stored(settings, database)) == 3
    cleared = invoke(["decisions", "clear", "--user", "u04", "--yes"], env)
    assert cleared.exit_code == 0
    assert cleared.output.startswith("Removed 2 reviewer decisions of u04; the next dry run migrates")
    assert [row[0] for row in stored(settings, database)] == ["u13"]
    everything = invoke(["decisions", "clear", "--yes", "--json"], env)
    assert json.loads(everything.stdout) == {"removed": 1, "users": None}
    nothing = invoke(["decisions", "clear", "--yes"], env)
    assert nothing.exit_code == 0 and nothing.output == "There is no reviewer decision to remove.\n"
    assert listed(env) == []
    with psycopg.connect(**database.kwargs()) as pg:
        clears = pg.execute(
            f"select decisions, scope_users from \"{settings.meta_schema}\".decision_events where action = 'clear'"  # noqa: S608
            " order by at"
        ).fetchall()
    assert clears == [(2, ["u04"]), (1, None)]
