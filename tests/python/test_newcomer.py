"""A newcomer's first hour (issue #12): the README's setup command without root, Chromium or npm; a
damaged server.json that `db destroy` recovers from; reports that tell what happened; one run id
everywhere; `runs` at 80 columns; a promote that changed nothing is not a rollback target; and the
small things (plurals, help, SIGTERM, a missing schema, a plain word on a dry run promote would refuse).
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from helpers import invoke
from psycopg import sql

from orchestrator import dry_run, fixtures
from orchestrator import promote as promoting
from orchestrator import rollback as rolling_back
from orchestrator.config import FIXTURES_SCHEMA
from orchestrator.embedded import ProjectServer

PROJECT_DIR = Path(__file__).resolve().parents[2]
README = (PROJECT_DIR / "README.md").read_text()
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")


def commands_of(readme: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)


# -- 1. the README's two commands ---------------------------------------------------------------------


def test_the_setup_command_needs_nothing_but_python_and_the_test_command_installs_its_extras():
    setup, tests = commands_of(README)[:2]
    assert setup == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/orchestrator demo"
    assert "install-extras" not in setup and "[dev]" not in setup
    assert ".ci/install-extras" in tests and tests.endswith(".venv/bin/python -m pytest")
    assert '"UserProfile"' in README and '"ContextIntent"' in README
    # CI runs the README's test command (after the same install)
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert ".ci/install-extras" in ci and "-m pytest" in ci


# what a copy of the checkout for another account leaves out: state, caches and tools of this one
NOT_COPIED = (".git", ".venv", ".orchestrator", "reports", "target", "logs", "dbt_packages", "node_modules")
NOT_COPIED += ("generated", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info")


def _link_or_copy(source: str, target: str) -> None:
    """A hard link to a file every account can read (fast, no space), else a copy they can."""
    mode = os.stat(source).st_mode
    if mode & 0o004:
        try:
            os.link(source, target)
            return
        except OSError:  # another file system, or links not allowed: copy it
            pass
    shutil.copy2(source, target)
    os.chmod(target, mode | 0o044 | (0o011 if mode & 0o100 else 0))


def readable_copy(base: Path) -> tuple[Path, Path]:
    """The checkout and this virtual environment's site-packages, under ``base``, where another account
    can read them: the checkout may sit in a directory only its owner can enter (a clone under /root,
    mode 700), and the venv in it. Returns (project, site-packages). The package is imported from the
    project copy (so it finds its dbt project there), the dependencies from the site-packages copy
    (hard links where the files are already world-readable); the editable install's hook, which points
    into the private checkout, is left out."""
    project, site = base / "project", base / "site-packages"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(*NOT_COPIED), copy_function=_link_or_copy)
    venv_site = next(Path(sys.prefix, "lib").glob("python3.*/site-packages"))
    shutil.copytree(
        venv_site, site, ignore=shutil.ignore_patterns("__editable__*"), copy_function=_link_or_copy, symlinks=True
    )
    for directory in (base, *(path for root in (project, site) for path in root.rglob("*") if path.is_dir())):
        directory.chmod(directory.stat().st_mode | 0o055)
    return project, site


@pytest.mark.slow  # a whole demo on a server of its own: the same on every PostgreSQL version
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged account needs root")
def test_the_demo_runs_as_an_unprivileged_user_with_nothing_but_python():
    """As `nobody`, with a PATH of the system's binaries only (no venv, no npm, no Chromium needed), the
    README's main job runs to its end: the embedded server is that user's own, in its home. The account
    runs a readable copy of the checkout and of the venv's packages (``readable_copy``): wherever the
    clone lives, even in a directory it cannot enter."""
    account = pwd.getpwnam(os.environ.get("ORCHESTRATOR_PG_OS_USER", "nobody"))
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 the unprivileged account can run")
    version = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.split()
    if version != [str(part) for part in sys.version_info[:2]]:
        pytest.skip(
            f"the system's {python} is Python {'.'.join(version)}, this venv's packages are built for "
            f"{sys.version_info[0]}.{sys.version_info[1]}: the unprivileged account cannot import them"
        )
    # pytest's own temporary folders are its user's alone: the account's home and the copies go where
    # it can reach them
    base = Path(tempfile.mkdtemp(prefix="newcomer-"))
    try:
        project, site = readable_copy(base)
        home = base / "home"
        home.mkdir()
        os.chown(home, account.pw_uid, account.pw_gid)
        prelude = f"import site, sys; site.addsitedir({str(site)!r}); sys.path.insert(0, {str(project)!r}); "
        bootstrap = prelude + "from orchestrator.cli import main; main()"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "ORCHESTRATOR_HOME": str(home / ".orchestrator"),
            "XDG_RUNTIME_DIR": str(home),
            "LANG": "C.UTF-8",
        }
        account_run = functools.partial(
            subprocess.run,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
        )
        try:
            where = "from orchestrator import config; print(config.project_dir())"
            found = account_run([python, "-c", prelude + where], timeout=60)
            assert found.stdout.strip() == str(project), found.stderr  # the copy, whatever the checkout's folder
            done = account_run([python, "-c", bootstrap, "demo", "--out", str(home / "reports")], timeout=900)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            assert "6. Report written to" in done.stdout and "5. Verify: 10/10 checks pass" in done.stdout
            assert (home / ".orchestrator" / "pg" / "data" / "PG_VERSION").exists()  # its own cluster, as itself
        finally:
            account_run([python, "-c", bootstrap, "db", "destroy", "--yes"], timeout=120)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- 3. a damaged server.json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"cluster_dir": "/x", "pass', "it is not readable JSON"),
        ("[]", "it holds an array instead of an object"),
        ('"a string"', "it holds a string instead of an object"),
        ('{"port": "abc"}', "its 'port' is 'abc', not a whole number"),
        ("{}", "it has no password for the existing cluster"),
    ],
    ids=["truncated", "array", "string", "port-not-a-number", "no-password"],
)
def test_a_damaged_server_json_names_db_destroy_which_recovers(tmp_path, content, why):
    home = tmp_path / "home"
    env = {"ORCHESTRATOR_HOME": str(home), "PGHOST": ""}
    server = ProjectServer(home)
    conn = server.ensure_running()
    try:
        cluster_dir = server.cluster().cluster_dir
        (home / "server.json").write_text(content)
        status = invoke(["fixtures", "load"], env)
        assert status.exit_code == 2, status.output
        lines = status.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: the embedded server's state file"), status.output
        assert why in lines[0] and "Run `orchestrator db destroy`" in lines[0] and "Traceback" not in status.output
        destroyed = invoke(["db", "destroy", "--yes"], env)
        assert destroyed.exit_code == 0 and "Embedded PostgreSQL deleted." in destroyed.output, destroyed.output
        assert not cluster_dir.exists() and not (home / "server.json").exists()
        with pytest.raises(psycopg.OperationalError):  # the server it could still find was stopped
            psycopg.connect(**conn.kwargs(), connect_timeout=2).close()
        # and the next command starts afresh
        started = invoke(["db", "start"], env)
        assert started.exit_code == 0 and "Embedded PostgreSQL running" in started.output, started.output
    finally:
        ProjectServer(home).destroy()


# -- 4 to 7: what the reports, ids, runs and rollback say after real promotes --------------------------------


@pytest.fixture()
def fresh(settings, database, cli_env):
    with psycopg.connect(**database.kwargs(), autocommit=True) as pg:
        for schema in (settings.meta_schema, settings.dry_run_schema):
            pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    dry_run.dry_run(settings, database)
    return settings, database, {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA}


def test_reports_say_the_dry_run_is_live_and_evaluate_at_the_threshold_used(fresh, tmp_path):
    settings, conn, env = fresh
    before = invoke(["report", "--format", "md", "--out", str(tmp_path / "before")], env)
    assert before.exit_code == 0, before.output
    md = (tmp_path / "before" / "migration_report.md").read_text()
    assert "**Not promoted**" in md and "promote would be refused" in md and "5.00%" in md
    promoted = invoke(["promote", "--yes", "--max-conflict-rate", "0.5"], env)
    assert promoted.exit_code == 0, promoted.output
    run_id = RUN_ID.search(promoted.output).group(0)
    for fmt in ("md", "csv", "json", "html"):
        assert invoke(["report", "--format", fmt, "--out", str(tmp_path / fmt)], env).exit_code == 0
    md = (tmp_path / "md" / "migration_report.md").read_text()
    assert f"**Live**: promoted by run {run_id}" in md and "--max-conflict-rate 0.5" in md
    assert "every promote gate holds" in md and "promote would be refused" not in md
    assert "| conflict_rate | 38.46% | 50.00% | True |" in md and "0.3846153846" not in md
    summary_csv = (tmp_path / "csv" / "migration_summary.csv").read_text()
    assert "conflict_rate,38.46%,50.00%,True" in summary_csv
    summary_json = json.loads((tmp_path / "json" / "migration_summary.json").read_text())
    rate = next(row for row in summary_json if row["metric"] == "conflict_rate")
    assert rate == {"metric": "conflict_rate", "value": "38.46%", "expected": "50.00%", "passed": True}
    page = (tmp_path / "html" / "migration_report.html").read_text()
    assert f"promoted by run <code>{run_id}</code>" in page and "every promote gate holds" in page
    assert "promote would be refused" not in page
    every_conflict = page[page.index('<section id="conflicts">') :]
    assert "<td>shared (Profile)</td>" in every_conflict


def test_one_run_id_everywhere_and_runs_fit_80_columns(fresh):
    settings, conn, env = fresh
    promoted = invoke(["promote", "--yes", "--max-conflict-rate", "0.5"], env).output
    run_id = RUN_ID.search(promoted).group(0)
    history = invoke(["runs"], env).output
    assert run_id in history
    assert all(len(line) <= 80 for line in history.splitlines()), history
    assert "…" not in history  # nothing cut short
    rolled = invoke(["rollback", "--yes"], env).output
    assert f"Rolled back (run {RUN_ID.search(rolled).group(0)})" in rolled
    history = invoke(["runs", "--json"], env)
    runs = json.loads(history.stdout)
    assert [run["run_id"] for run in runs][1] == run_id and runs[0]["undoes_run_id"] == run_id


def test_a_promote_that_changed_nothing_is_not_a_rollback_target(fresh):
    settings, conn, env = fresh
    first = promoting.promote(settings, conn, max_conflict_rate=0.5, confirm=lambda plan: None)
    second = promoting.promote(settings, conn, max_conflict_rate=0.5, confirm=lambda plan: None)
    assert not second.created_tables and all(
        c["inserted"] == c["updated"] == c["deleted"] == 0 for c in second.plan.values()
    )
    history = json.loads(invoke(["runs", "--json"], env).stdout)
    assert history[0]["changed"] is False and history[1]["changed"] is True
    rolled = invoke(["rollback", "--yes"], env)
    assert rolled.exit_code == 0, rolled.output
    # the rollback undid the first promote (it created the tables: they are dropped), stepping over the no-op
    assert "dropped the live tables" in rolled.output
    assert f"skipped 1 later run that changed nothing ({second.run_id})" in rolled.output
    with pytest.raises(Exception, match="no promote to roll back"):
        rolling_back.rollback(settings, conn, drop=False, confirm=lambda action: None)
    assert first.run_id != second.run_id


# -- 8. small things ---------------------------------------------------------------------------------------


def test_the_dry_run_says_plainly_that_promote_would_refuse_and_counts_one_warning(settings, database, cli_env):
    fixtures.load(settings, database, FIXTURES_SCHEMA)
    result = invoke(["dry-run"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": FIXTURES_SCHEMA})
    assert result.exit_code == 0, result.output
    assert "1 warning " in result.output or "1 warning," in result.output or "1 warning (" in result.output
    assert "1 warnings" not in result.output
    assert "The dry run is built and reviewable, but promote would refuse it at the current threshold" in result.output
    assert "38.46% is above 5.00%" in result.output


def test_promote_help_names_the_user_option_plainly():
    result = invoke(["promote", "--help"], {})
    assert "--user ID" in result.output and "list[str]" not in result.output


def test_a_legacy_schema_that_does_not_exist_is_named_as_such(cli_env):
    result = invoke(["dry-run"], {**cli_env, "MIGRATION_LEGACY_SCHEMA": "nothing_here"})
    assert result.exit_code == 2
    assert "Error: the legacy schema 'nothing_here' does not exist in database" in result.output


@pytest.mark.slow  # a subprocess and dbt's docs: the same on every PostgreSQL version
def test_docs_serve_stopped_by_sigterm_ends_cleanly(fresh, tmp_path):
    settings, conn, env = fresh
    out_dir = tmp_path / "site"
    assert invoke(["docs", "--out", str(out_dir)], env).exit_code == 0
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "docs", "--out", str(out_dir), "--serve"],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    line = ""
    while "Serving" not in line and time.monotonic() < deadline:
        line = process.stdout.readline()
    assert "Serving http://127.0.0.1:" in line
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Stopped." in out and "leaked" not in err and "semaphore" not in err and "Traceback" not in err
