"""The reviewer's view: the lineage docs (every node described, the site renders), the HTML report
(figures, escaping, no external reference, renders), and the CLI's help, --json and exit codes.

The pages are rendered in headless Chromium (Debian's package: `.ci/install-extras` installs it).
A missing browser fails these tests, it never skips them.
Set ORCHESTRATOR_UPDATE_SCREENSHOTS=1 to refresh the screenshots kept in docs/images/.
"""

from __future__ import annotations

import dataclasses
import html
import html.parser
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
import typer.main
from helpers import PROJECT_DIR, invoke

from orchestrator import docs_site as docs_siting
from orchestrator import fixtures, reports
from orchestrator.cli import app
from orchestrator.config import FIXTURES_SCHEMA

SCREENSHOTS = PROJECT_DIR / "docs" / "images"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# attributes that make a browser fetch or navigate somewhere
REFERENCE_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data", "background"}


def chromium_binary() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if found is None:
        pytest.fail(
            "chromium is not installed: these tests render the docs site and the HTML report in headless "
            "Chromium. Install Debian's package with .ci/install-extras (as root: apt-get install -y "
            "--no-install-recommends chromium)."
        )
    return found


def chromium(page: Path, tmp_path: Path, *args: str, url_suffix: str = "", timeout: int = 90) -> tuple[str, float]:
    """Run headless Chromium on a local page; its stdout and how long it took."""
    profile = tmp_path / f"chromium-profile-{time.monotonic_ns()}"
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri() + url_suffix]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done.stdout, elapsed


def dump_dom(page: Path, tmp_path: Path, url_suffix: str = "") -> str:
    dom, elapsed = chromium(page, tmp_path, "--virtual-time-budget=15000", "--dump-dom", url_suffix=url_suffix)
    print(f"chromium --dump-dom {page.name}{url_suffix}: {elapsed:.1f}s")
    return dom


def screenshot(page: Path, tmp_path: Path, name: str, size: str, url_suffix: str = "", scale: float = 1) -> Path:
    target = tmp_path / name
    _, elapsed = chromium(
        page,
        tmp_path,
        "--virtual-time-budget=15000",
        f"--window-size={size}",
        f"--force-device-scale-factor={scale}",
        f"--screenshot={target}",
        url_suffix=url_suffix,
    )
    print(f"chromium --screenshot {name}: {elapsed:.1f}s")
    data = target.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000, f"{name}: not a real screenshot ({len(data)} bytes)"
    if os.environ.get("ORCHESTRATOR_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / name)
    return target


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in REFERENCE_ATTRIBUTES or name.startswith("on") or name == "style":
                self.references.append(f"{tag} {name}={value!r}")


def parse(page: str) -> _Elements:
    elements = _Elements()
    elements.feed(page)
    elements.close()
    return elements


def outside_references(page: str) -> list[str]:
    """Every attribute of a real element that could load, run or go anywhere but an in-page anchor, or the
    one link to a file beside the report: the decision template it writes there (a relative link)."""
    return [
        ref
        for ref in parse(page).references
        if not re.fullmatch(r"\w+ (href|xlink:href)='#[\w-]+'", ref) and ref != "a href='decisions_template.csv'"
    ]


def without_scripts(page: str) -> str:
    return re.sub(r"<script\b.*?</script>", "", page, flags=re.DOTALL | re.IGNORECASE)


# -- one dry run and one docs build for the module, through the CLI ---------------------------------------


@pytest.fixture(scope="module")
def cli(settings, database, cli_env):
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute(f'drop schema if exists "{settings.meta_schema}" cascade')
        pg.execute(f'drop schema if exists "{settings.dry_run_schema}" cascade')
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    built = invoke(["dry-run", "--json"], env)
    assert built.exit_code == 0, built.output
    outcome = json.loads(built.stdout)
    assert outcome["status"] == "built" and outcome["legacy_unchanged_during_build"] is True
    assert {row["metric"] for row in outcome["summary"]} >= {"keys_seen", "conflict_rate"}
    return env


@pytest.fixture(scope="module")
def docs_site(cli, settings, tmp_path_factory) -> dict:
    out_dir = tmp_path_factory.mktemp("docs-site")
    result = invoke(["docs", "--out", str(out_dir), "--json"], cli)
    assert result.exit_code == 0, result.output
    site = json.loads(result.stdout)
    assert Path(site["index"]) == out_dir / "index.html" and Path(site["index"]).stat().st_size > 100_000
    assert site["nodes_compiled"] > 50 and site["catalog_relations"] > 10 and site["url"] is None
    target = settings.home / "docs" / "target" / "dry_run"
    return {
        **site,
        "manifest": json.loads((target / "manifest.json").read_text()),
        "catalog": json.loads((target / "catalog.json").read_text()),
    }


# -- lineage docs: everything described, so it cannot rot ---------------------------------------------------


def _signature(macro_sql: str) -> list[str]:
    if re.search(r"{%-?\s*materialization\s", macro_sql):
        return []  # a materialization takes no arguments
    match = re.search(r"{%-?\s*(?:macro|test)\s+\w+\s*\((.*?)\)\s*-?%}", macro_sql, re.DOTALL)
    assert match, macro_sql[:200]
    return [part.split("=")[0].strip() for part in match.group(1).split(",") if part.strip()]


@pytest.mark.slow  # the docs site: the same on every PostgreSQL version
def test_every_model_seed_source_macro_and_column_is_described(docs_site):
    manifest, catalog = docs_site["manifest"], docs_site["catalog"]
    missing = []

    def need(description, what: str) -> None:
        if not (description or "").strip():
            missing.append(what)

    ours = {uid: node for uid, node in manifest["nodes"].items() if node["package_name"] == "migration"}
    for uid, node in ours.items():
        if node["resource_type"] not in ("model", "seed"):
            continue
        need(node["description"], uid)
        columns = set(node["columns"]) | set(catalog["nodes"].get(uid, {}).get("columns", {}))
        assert columns, f"{uid}: no columns known (was the dry run built?)"
        for column in columns:
            need(node["columns"].get(column, {}).get("description"), f"{uid}.{column}")
    for uid, source in manifest["sources"].items():
        need(source["description"], uid)
        need(source["source_description"], f"{uid} (its source)")
        columns = set(source["columns"]) | set(catalog["sources"].get(uid, {}).get("columns", {}))
        for column in columns:
            need(source["columns"].get(column, {}).get("description"), f"{uid}.{column}")
    macros = {uid: macro for uid, macro in manifest["macros"].items() if macro["package_name"] == "migration"}
    assert len(macros) >= 10
    for uid, macro in macros.items():
        need(macro["description"], uid)
        documented = [argument["name"] for argument in macro["arguments"]]
        if documented != _signature(macro["macro_sql"]):
            missing.append(f"{uid}: arguments documented {documented}, signature {_signature(macro['macro_sql'])}")
        for argument in macro["arguments"]:
            need(argument["description"], f"{uid}({argument['name']})")
    assert missing == [], "undocumented (describe them in the YAML next to them, macros in macros/_macros.yml):\n" + (
        "\n".join(sorted(missing))
    )


@pytest.mark.slow  # the docs site: the same on every PostgreSQL version
def test_every_docs_block_is_used_and_the_exposures_close_the_graph(docs_site):
    manifest = docs_site["manifest"]
    yaml_text = "\n".join(
        path.read_text() for folder in ("models", "seeds", "macros") for path in (PROJECT_DIR / folder).rglob("*.yml")
    )
    blocks = [doc["name"] for doc in manifest["docs"].values() if doc["package_name"] == "migration"]
    assert {"merge_rules", "context_type", "intent_relationship_timeline"} <= set(blocks)
    unused = [
        name for name in blocks if name != "__overview__" and not re.search(rf"doc\(['\"]{name}['\"]\)", yaml_text)
    ]
    assert unused == []
    exposures = {exposure["name"]: exposure for exposure in manifest["exposures"].values()}
    assert exposures["live_user_profile"]["depends_on"]["nodes"] == ["model.migration.profile"]
    assert exposures["live_context_intent"]["depends_on"]["nodes"] == ["model.migration.context_intent"]
    assert {
        "model.migration.migration_summary",
        "model.migration.migration_conflicts",
        "model.migration.migration_unmapped_fields",
    } <= set(exposures["migration_report"]["depends_on"]["nodes"])
    for exposure in exposures.values():
        assert exposure["description"].strip() and exposure["owner"]["name"]


@pytest.mark.slow  # renders in Chromium: independent of the PostgreSQL version
def test_docs_site_renders_every_node_in_chromium(docs_site, tmp_path):
    index = Path(docs_site["index"])
    raw = without_scripts(index.read_text())
    assert "stg_legacy__users" not in raw  # names below come from the app's JavaScript, not static HTML
    dom = without_scripts(dump_dom(index, tmp_path))
    manifest = docs_site["manifest"]
    expected = [
        uid
        for uid, node in {**manifest["nodes"], **manifest["sources"], **manifest["exposures"]}.items()
        if node["resource_type"] in ("model", "seed", "source", "exposure")
    ]
    unrendered = [uid for uid in expected if f'data-nav-unique-id="{uid}"' not in dom]
    assert unrendered == [], "nodes missing from the rendered docs navigation"
    model_page = without_scripts(dump_dom(index, tmp_path, "#!/model/model.migration.context_intent"))
    assert "One ContextIntent per distinct (user, context type)" in " ".join(model_page.split())
    assert "taking_my_time" in model_page  # a column's docs block, rendered
    screenshot(index, tmp_path, "lineage.png", "1200,600", "#!/overview?g_v=1&g_i=%2Bexposure:*", scale=2)


@pytest.mark.slow  # the docs site: the same on every PostgreSQL version
def test_docs_server_serves_the_site(docs_site):
    directory = Path(docs_site["index"]).parent
    server = docs_siting.server(directory, 0)
    thread = threading.Thread(target=docs_siting.serve, args=(server,), daemon=True)
    thread.start()
    try:
        url = docs_siting.url(server)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own local server)
            assert response.status == 200 and b"dbt" in response.read()
    finally:
        server.shutdown()
        thread.join(timeout=10)
    with pytest.raises(Exception, match="no docs site"):
        docs_siting.server(directory / "nowhere", 0)


# -- the HTML report ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def html_report(cli, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("html-report")
    result = invoke(["report", "--format", "html", "--out", str(out_dir), "--json"], cli)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "format": "html",
        "files": [str(out_dir / "migration_report.html"), str(out_dir / "decisions_template.csv")],
    }
    return out_dir / "migration_report.html"


SECTIONS = (
    "verdict",
    "checks",
    "accounting",
    "conflict-rate",
    "conflicts-by-field",
    "decisions",
    "unmapped-summary",
    "completeness",
    "conflicts",
    "unmappeds",
)


def test_html_report_is_private_self_contained_and_complete(html_report, settings, database):
    assert stat.S_IMODE(html_report.stat().st_mode) == 0o600
    page = html_report.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert "<script" not in page.lower()
    assert not re.search(r"https?:|//[a-z]|url\(", page, re.IGNORECASE)
    assert outside_references(page) == []  # every link is an in-page anchor; no handlers, no inline styles
    assert "script" not in parse(page).tags
    assert "default-src 'none'" in page
    with psycopg.connect(**database.kwargs()) as pg:
        schema = settings.dry_run_schema
        conflicts = pg.execute(f'select count(*) from "{schema}".migration_conflicts').fetchone()[0]
        unmapped = pg.execute(f'select count(*) from "{schema}".migration_unmapped_fields').fetchone()[0]
        figures = dict(pg.execute(f'select metric, value from "{schema}".migration_summary').fetchall())
    assert conflicts > 0 and unmapped > 0
    # every detail row has its anchor, and every "first row" link points at one that exists
    assert len(re.findall(r'<tr id="conflict-\d+">', page)) == conflicts
    assert len(re.findall(r'<tr id="unmapped-\d+">', page)) == unmapped
    anchors = set(re.findall(r'id="([^"]+)"', page))
    links = set(re.findall(r'href="#([^"]+)"', page))
    assert links and links <= anchors
    seen, mapped, unmapped_keys = (int(figures[m]) for m in ("keys_seen", "keys_mapped", "keys_unmapped"))
    assert f"keys seen {seen} = mapped {mapped} + unmapped {unmapped_keys}" in page
    assert f"<strong>{int(figures['non_object_blobs'])}</strong> non-object blobs" in page
    assert "38.46% of users have at least one conflict" in page and "promote would be refused" in page
    assert "dry run built by the current models" in page  # every gate promote checks, evaluated now
    assert page.count('class="chart histogram"') == 7  # profile, all intents, five context types
    assert "<code>beliefs.religion</code>" in page and "<code>favouriteColour</code>" in page
    # the decision template, beside the report and private like it, one click away
    template = html_report.parent / "decisions_template.csv"
    assert stat.S_IMODE(template.stat().st_mode) == 0o600
    assert template.read_text().splitlines()[0] == "user_id,context_type,field,values,chosen,decision,note"
    assert len(template.read_text().splitlines()) == conflicts + 1
    assert page.count('<a href="decisions_template.csv">') == 1


@pytest.mark.slow  # renders in Chromium: independent of the PostgreSQL version
def test_html_report_renders_in_chromium(html_report, tmp_path):
    dom = dump_dom(html_report, tmp_path)
    for heading in ("Verdict", "Key accounting", "Conflict rate", "Conflicts by field", "Every unmapped key"):
        assert f"<h2>{heading}</h2>" in dom
    assert dom.count("<svg") >= 11  # accounting, gauge, 3 bar charts, 7 histograms
    screenshot(html_report, tmp_path, "report.png", "1100,3000", scale=0.6)


HOSTILE_KEY = "<script>document.title='pwned'</script>"
HOSTILE_VALUE = '"><img src=x onerror="document.title=\'pwned\'">'
HOSTILE_URL = "https://evil.example/beacon.png"


def test_html_report_escapes_hostile_data(settings, database, cli, tmp_path):
    hostile = dataclasses.replace(settings, dry_run_schema="hostile_dry_run")
    tables = (
        "migration_summary",
        "migration_conflicts",
        "migration_decisions",
        "migration_unmapped_fields",
        "profile",
        "context_intent",
    )
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        pg.execute('drop schema if exists "hostile_dry_run" cascade')
        pg.execute('create schema "hostile_dry_run"')
        for table in tables:
            source = f'"{settings.dry_run_schema}"."{table}"'
            pg.execute(f'create table "hostile_dry_run"."{table}" as select * from {source}')
        pg.execute(
            'insert into "hostile_dry_run".migration_unmapped_fields'
            " (user_id, context_type, context_profile_id, legacy_profile_id, key, value, reason)"
            " values (%s, 'romantic', %s, %s, %s, to_jsonb(%s::text), 'unknown_key')",
            [HOSTILE_VALUE, HOSTILE_VALUE, "p<b>1</b>", HOSTILE_KEY, HOSTILE_URL],
        )
        pg.execute(
            'insert into "hostile_dry_run".migration_conflicts (user_id, context_type, field, "values", chosen,'
            " decided_by) values (%s, null, %s, jsonb_build_array(%s::text, 'b'), to_jsonb(%s::text), 'first_value')",
            ["u</td><td>", HOSTILE_KEY, HOSTILE_VALUE, HOSTILE_VALUE],
        )
        pg.execute(
            'insert into "hostile_dry_run".migration_decisions (user_id, context_type, field, decided_value, reviewer,'
            " decided_at, note, status) values (%s, null, %s, to_jsonb(%s::text), %s, now(), %s, 'applied')",
            [HOSTILE_VALUE, HOSTILE_KEY, HOSTILE_VALUE, HOSTILE_VALUE, HOSTILE_KEY],
        )
    path, _template = reports.write(hostile, database, "html", tmp_path / "out")
    page = path.read_text()
    assert HOSTILE_KEY not in page and HOSTILE_VALUE not in page and "<img" not in page and "<b>" not in page
    assert html.escape(HOSTILE_KEY, quote=True) in page
    assert outside_references(page) == [] and {"script", "img"}.isdisjoint(parse(page).tags)
    assert f"<code>&quot;{HOSTILE_URL}&quot;</code>" in page  # a URL in the data is text, never a reference
    dom = dump_dom(path, tmp_path)
    assert "<title>Migration report: hostile_dry_run</title>" in dom and "pwned</title>" not in dom
    assert "<img" not in dom


def test_html_report_caps_the_detail_rows(cli, tmp_path):
    result = invoke(["report", "--format", "html", "--out", str(tmp_path), "--max-rows", "2"], cli)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "migration_report.html").read_text()
    assert len(re.findall(r'<tr id="conflict-\d+">', page)) == 2
    assert "Showing the first 2 of" in page
    anchors = set(re.findall(r'id="([^"]+)"', page))
    assert set(re.findall(r'href="#([^"]+)"', page)) <= anchors  # links past the cap go to the table


# -- the CLI: help with examples, --json, exit codes ------------------------------------------------------------

REPORTING = {
    ("dry-run",),
    ("promote",),
    ("rollback",),
    ("verify",),
    ("report",),
    ("runs",),
    ("cleanup",),
    ("docs",),
    ("db", "status"),
    ("fixtures", "load"),
    ("decisions", "template"),
    ("decisions", "import"),
    ("decisions", "list"),
    ("decisions", "clear"),
}


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_has_help_with_an_example_and_reporting_ones_take_json():
    commands = dict(_commands(typer.main.get_command(app)))
    assert set(commands) >= REPORTING
    for path in commands:
        result = invoke([*path, "--help"], {})
        assert result.exit_code == 0
        assert "Example" in result.output, f"`orchestrator {' '.join(path)} --help` shows no example"
    for path in REPORTING:
        assert "--json" in {opt for param in commands[path].params for opt in param.opts}, path


def test_json_outputs_and_exit_codes(cli, tmp_path):
    status = invoke(["db", "status", "--json"], cli)
    assert status.exit_code == 0 and json.loads(status.stdout)["server"] == "external"
    refused = invoke(["promote", "--yes", "--json"], cli)
    assert refused.exit_code == 1 and refused.stdout == ""  # a failed gate: nothing on stdout, exit 1
    assert "conflict rate within threshold" in refused.output
    promoted = invoke(["promote", "--yes", "--json", "--max-conflict-rate", "0.5"], cli)
    assert promoted.exit_code == 0, promoted.output
    result = json.loads(promoted.stdout)
    assert result["plan"]["UserProfile"]["inserted"] == 13 and all(gate["passed"] for gate in result["gates"])
    verified = json.loads(invoke(["verify", "--json"], cli).stdout)
    assert all(check["passed"] for check in verified)
    rolled = invoke(["rollback", "--yes", "--json"], cli)
    assert rolled.exit_code == 0 and json.loads(rolled.stdout)["legacy_unchanged"] is True
    files = invoke(["report", "--format", "csv", "--out", str(tmp_path), "--json"], cli)
    assert [Path(p).name for p in json.loads(files.stdout)["files"]] == [
        "migration_summary.csv",
        "migration_conflicts.csv",
        "migration_unmapped_fields.csv",
    ]
    pdf = invoke(["report", "--format", "pdf"], cli)
    assert pdf.exit_code == 2  # could not run
    assert pdf.output == "Error: unknown report format 'pdf': use md, csv, json, html\n"
    unknown_option = invoke(["report", "--no-such-option"], cli)
    assert unknown_option.exit_code == 2  # a usage error: click's message, with the way to the help
    assert "Error: No such option: --no-such-option" in unknown_option.output
    assert re.search(r"Try '\S+ report --help' for help\.", unknown_option.output)  # `orchestrator` outside tests
    assert json.loads(invoke(["cleanup", "--json"], cli).stdout)["kept"] == 1
