"""Lint what we run against a live database, as the field does (issue 24).

``orchestrator.live_ddl.statements`` lists every DDL statement the orchestrator runs on the live and legacy
schemas, in order, each transaction opening with the ``set lock_timeout`` it runs under: the first
promote's (CREATE TABLE and CREATE UNIQUE INDEX on the tables it creates), each foreign key added NOT VALID
in a transaction of its own and validated in another, and rollback --drop's (each key dropped alone, then
the tables). The tests write them to .sql files, each transaction as BEGIN ... COMMIT (squawk then knows a
table was created in the transaction that indexes it, and that a key and its validation are apart), and run

- squawk (``squawk-cli``, the PostgreSQL migration linter) with the repository's .squawk.toml: every rule
  on but the few Prisma's column types contradict (the reasons are beside them there), and, for the
  rollback's statements alone, the two that forbid dropping (ROLLBACK_ONLY_EXCLUDED);
- sqlfluff's PostgreSQL rules PG01 (no CREATE INDEX / DROP INDEX without CONCURRENTLY) and PG02 (foreign
  keys NOT VALID), which are off unless forced.

The old form of the keys (added validated, without a lock_timeout) fails both: the lint can fail.
Without squawk installed (the dev extras) these tests fail; they do not skip.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from helpers import PROJECT_DIR

from orchestrator.live_ddl import statements as live_ddl

BIN = Path(sys.executable).parent
SQUAWK = BIN / "squawk"
SQLFLUFF = BIN / "sqlfluff"
SQUAWK_CONFIG = PROJECT_DIR / ".squawk.toml"

# Off for the rollback's statements only (the promote's keep them: a drop there would be flagged).
ROLLBACK_ONLY_EXCLUDED = {
    # rollback --drop drops the keys the first promote added, each alone under its lock_timeout, so that
    # dropping the tables after takes no lock on "User": the guarantee goes with the tables themselves.
    "ban-drop-constraint",
    # rollback --drop drops the tables the first promote created: undoing them is what it is for (it
    # refuses when the application wrote to them since, unless forced).
    "ban-drop-table",
}

SQLFLUFF_CONFIG = """\
[sqlfluff]
dialect = postgres
templater = raw
rules = PG01,PG02

[sqlfluff:rules:postgres.excessive_locks]
force_enable = True

[sqlfluff:rules:postgres.not_valid_foreign_key]
force_enable = True
"""

# As the default settings run: live and legacy tables in one schema.
LIVE_SCHEMA = LEGACY_SCHEMA = "public"


def is_lock_timeout(statement: str) -> bool:
    return re.match(r"set\s+(local\s+)?lock_timeout\b", statement, re.IGNORECASE) is not None


def is_drop(statement: str) -> bool:
    return re.match(r"drop\b|alter\s+table\s+\S+\s+drop\b", statement, re.IGNORECASE) is not None


def transactions(statements: list[str]) -> list[list[str]]:
    """live_ddl's statements as the transactions they run in: each opens with its ``set lock_timeout``;
    what comes before the first (the search_path) belongs to the first."""
    result: list[list[str]] = [[]]
    for statement in statements:
        if is_lock_timeout(statement) and any(not s.lower().startswith("set ") for s in result[-1]):
            result.append([])
        result[-1].append(statement)
    return result


def promote_and_rollback() -> tuple[list[list[str]], list[list[str]]]:
    """(the promote's transactions, rollback --drop's): the rollback's are the ones that drop, all last."""
    groups = transactions(live_ddl(LIVE_SCHEMA, LEGACY_SCHEMA))
    dropping = [any(is_drop(s) for s in group) for group in groups]
    first = dropping.index(True)
    assert all(dropping[first:]), f"a drop among the promote's statements: {groups}"
    return groups[:first], groups[first:]


def write_sql(path: Path, groups: list[list[str]]) -> Path:
    """Statements joined with ";\\n", each transaction as BEGIN ... COMMIT."""
    path.write_text(";\n".join(s for group in groups for s in ["BEGIN", *group, "COMMIT"]) + ";\n")
    return path


def squawk(path: Path, *also_excluded: str) -> tuple[int, str, set[str]]:
    """squawk's exit status, report and the rules it flagged."""
    assert SQUAWK.exists(), f"{SQUAWK} is missing: pip install -e '.[dev]' installs squawk-cli"
    args = [str(SQUAWK), "--config", str(SQUAWK_CONFIG), "--reporter", "gcc"]
    if also_excluded:
        # --exclude replaces the config's list (it does not add to it): give both
        configured = tomllib.loads(SQUAWK_CONFIG.read_text())["excluded_rules"]
        args.append("--exclude=" + ",".join([*configured, *also_excluded]))
    done = subprocess.run([*args, str(path)], capture_output=True, text=True, cwd=path.parent)
    report = done.stdout + done.stderr
    return done.returncode, report, set(re.findall(r": (?:warning|error): ([a-z0-9-]+) ", report))


def sqlfluff(path: Path) -> tuple[int, str]:
    config = path.parent / "pg_rules.sqlfluff"
    config.write_text(SQLFLUFF_CONFIG)
    done = subprocess.run(
        [str(SQLFLUFF), "lint", "--ignore-local-config", "--config", str(config), str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
    )
    return done.returncode, done.stdout + done.stderr


def old_form(groups: list[list[str]]) -> list[list[str]]:
    """The keys as they were added before issue 24: validated at once (no NOT VALID, no VALIDATE), with no
    lock_timeout, each in a transaction of its own."""
    old = []
    for group in groups:
        statements = [
            re.sub(r"\s+NOT VALID$", "", s)
            for s in group
            if not is_lock_timeout(s) and not re.search(r"\bVALIDATE CONSTRAINT\b", s)
        ]
        if statements:
            old.append(statements)
    return old


def test_live_ddl_is_what_it_should_be():
    """The files linted below hold the statements that matter (a lint of nothing would pass)."""
    promote, rollback = promote_and_rollback()
    statements = [s for group in promote for s in group]
    assert sum(s.startswith("CREATE TABLE") for s in statements) == 2
    assert sum(s.startswith("CREATE UNIQUE INDEX") for s in statements) == 2
    keys = [s for s in statements if "FOREIGN KEY" in s]
    assert len(keys) == 2 and all(k.endswith(" NOT VALID") for k in keys)
    # each key added in a transaction of its own, validated in another, each under a lock_timeout
    for key in keys:
        (adding,) = [group for group in promote if key in group]
        name = re.search(r'ADD CONSTRAINT ("[^"]+")', key).group(1)
        (validating,) = [group for group in promote if any(f"VALIDATE CONSTRAINT {name}" in s for s in group)]
        assert adding is not validating
        assert is_lock_timeout(adding[0]) and len(adding) == 2, adding
        assert is_lock_timeout(validating[0]) and len(validating) == 2, validating
    drops = [s for group in rollback for s in group if is_drop(s)]
    assert len(drops) == 4, drops
    assert all(is_lock_timeout(group[0]) for group in rollback)


def test_squawk_passes_the_live_ddl(tmp_path):
    promote, rollback = promote_and_rollback()
    code, report, _ = squawk(write_sql(tmp_path / "promote.sql", promote))
    assert code == 0, f"squawk flags the promote's DDL:\n{report}"
    code, report, _ = squawk(write_sql(tmp_path / "rollback.sql", rollback), *ROLLBACK_ONLY_EXCLUDED)
    assert code == 0, f"squawk flags rollback --drop's DDL:\n{report}"


def test_squawk_flags_the_old_form_of_the_keys(tmp_path):
    """Proof that the lint can fail: the keys added validated, without a lock_timeout."""
    promote, _ = promote_and_rollback()
    code, report, flagged = squawk(write_sql(tmp_path / "old.sql", old_form(promote)))
    assert code != 0, report
    expected = {"adding-foreign-key-constraint", "constraint-missing-not-valid", "require-lock-timeout"}
    assert expected <= flagged, f"squawk flagged {sorted(flagged)}:\n{report}"


def test_squawk_flags_a_drop_in_the_promote(tmp_path):
    """The rollback's exclusions are the rollback's alone."""
    promote, rollback = promote_and_rollback()
    code, report, flagged = squawk(write_sql(tmp_path / "promote.sql", promote + rollback[-1:]))
    assert code != 0 and "ban-drop-table" in flagged, report


def test_sqlfluff_postgres_rules_pass_the_live_ddl(tmp_path):
    promote, rollback = promote_and_rollback()
    code, report = sqlfluff(write_sql(tmp_path / "live_ddl.sql", promote + rollback))
    assert code == 0, f"sqlfluff PG01/PG02 flag the live DDL:\n{report}"


def test_sqlfluff_flags_the_old_form_of_the_keys(tmp_path):
    """PG02 flags a key added validated, in a transaction of its own or in the transaction that creates its
    table, as the first promote did before issue 24 (squawk 2.70 lets that one pass: it exempts a key on a
    table created in the same transaction, though the key locks "User" until that transaction ends)."""
    promote, _ = promote_and_rollback()
    own = old_form(promote)
    creating = [promote[0] + [s for group in own for s in group if "FOREIGN KEY" in s]]
    for name, groups in {"own": own, "creating": creating}.items():
        code, report = sqlfluff(write_sql(tmp_path / f"old_{name}.sql", groups))
        assert code != 0 and report.count("PG02") == 2, report
