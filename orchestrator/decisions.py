"""`orchestrator decisions`: reviewers decide conflicts (spec §11).

A reviewer fills in the template (a CSV of the latest dry run's conflicts) and imports it: every row is
checked against the latest dry run first, and the file is imported whole or not at all. The decisions
live in the metadata schema (orchestrator/decision_store.py); every rebuild reads them (the dbt source
review.conflict_decisions) and migrates the decided values. docs/decisions.md says what each choice is.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from orchestrator import db, decision_store, locks, metadata
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import OrchestratorError
from orchestrator.files import private_file
from orchestrator.formats import json_loads, plural, shortened, shown_repr

HEADER = ("user_id", "context_type", "field", "values", "chosen", "decision", "note")
TEMPLATE_FILE = "decisions_template.csv"  # beside the HTML report, and `decisions template`'s default name
MAX_POSITION = 2**31 - 1


@dataclasses.dataclass
class Template:
    conflicts: int
    path: Path | None  # None: ``text`` holds the CSV
    text: str | None = None

    def as_dict(self) -> dict:
        return {"conflicts": self.conflicts, "file": str(self.path) if self.path else None}


@dataclasses.dataclass
class Imported:
    file: Path
    sha256: str
    reviewer: str
    decided: int  # conflicts the file decides (each replaces an earlier decision, if any)
    undecided: int  # rows with an empty decision: they change nothing

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"file": str(self.file)}


def _no_dry_run(settings: Settings) -> OrchestratorError:
    return OrchestratorError(
        f"there is no dry run in schema {settings.dry_run_schema}, so no conflict to decide: run "
        f"`orchestrator dry-run` first"
    )


def allow_csv_fields_of_any_size() -> None:
    """Let Python's csv reader take a field of any size: by default it refuses one over 131,072 characters,
    and a conflict's values can be as long as PostgreSQL holds (a text up to 1 GB). The limit is a C long:
    where that is 32 bits it stays at 2**31 - 1 characters, and a longer field is refused naming it."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


# -- the template -------------------------------------------------------------------------------------


def template(
    settings: Settings,
    conn: ConnInfo,
    out: Path | None,
    *,
    users: list[str] | None = None,
    field: str | None = None,
) -> Template:
    """The latest dry run's conflicts (of ``users``, of ``field`` or its sub-keys) as a decision template:
    written to ``out`` (mode 0600: it holds personal data), or returned as text when ``out`` is None."""
    with db.connect(conn) as pg:
        pg.read_only = True
        conflicts = decision_store.conflicts_of(pg, settings.dry_run_schema)
        if conflicts is None:
            raise _no_dry_run(settings)
        rows = decision_store.template_rows(pg, conflicts, users, field)
    if out is None:
        buffer = io.StringIO(newline="")
        write_template(buffer, rows)
        return Template(len(rows), None, buffer.getvalue())
    filled = filled_in(out)
    if filled:
        raise OrchestratorError(
            f"{out} holds {plural(filled, 'decision or note', 'decisions or notes')} a reviewer filled in:"
            f" import it first (`orchestrator decisions import {out}`) or write the template "
            f"elsewhere (--out FILE); nothing was written"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with private_file(out) as handle:
            write_template(handle, rows)
    except OSError as exc:
        raise OrchestratorError(f"cannot write {out}: {exc.strerror}: choose another --out") from None
    return Template(len(rows), out)


def filled_in(path: Path) -> int:
    """How many rows of the decision template at ``path`` have a decision or a note (0: no such file, or
    not a template): a template a reviewer is filling in is never replaced."""
    allow_csv_fields_of_any_size()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return sum(
                1
                for row in csv.DictReader(handle)
                if (row.get("decision") or "").strip() or (row.get("note") or "").strip()
            )
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0


def write_template(handle, rows: list[dict]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow([row["user_id"], row["context_type"] or "", row["field"], row["values"], row["chosen"], "", ""])


# -- import ---------------------------------------------------------------------------------------------


def import_file(settings: Settings, conn: ConnInfo, path: Path, *, reviewer: str | None = None) -> Imported:
    """Check every row of ``path`` against the latest dry run, then keep its decisions, all or nothing.

    Refused whole (OrchestratorError, exit 2, nothing imported) when any row is wrong: the message lists
    each such line (its CSV line number) and why."""
    reviewer = reviewer or metadata.os_user()
    if not reviewer.strip():
        raise OrchestratorError("--by is empty: give the reviewer's name")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise OrchestratorError(f"cannot read {path}: {exc.strerror}") from None
    sha256 = hashlib.sha256(content).hexdigest()
    rows, problems, undecided = _parse(path, content)
    with db.connect(conn, autocommit=True, application_name="orchestrator decisions") as pg:
        # a dry run reads the decisions in several statements: none may change under it
        with locks.dry_run_lock(pg):
            conflicts = decision_store.conflicts_of(pg, settings.dry_run_schema)
            if conflicts is None:
                raise _no_dry_run(settings)
            if rows:
                with pg.transaction():
                    checked = decision_store.check(pg, conflicts, rows)
                problems += _problems(rows, checked)
            if problems:
                raise _refusal(path, problems)
            metadata.ensure(pg, settings.meta_schema)
            decided = [
                {
                    "user_id": row["user_id"],
                    "context_type": row["context_type"],
                    "field": row["field"],
                    "value": result["value"],
                    "note": row["note"] or None,
                }
                for row, result in zip(rows, checked if rows else [], strict=True)
            ]
            decision_store.store(
                pg, settings.meta_schema, decided, reviewer=reviewer, file_name=path.name, sha256=sha256
            )
    return Imported(path, sha256, reviewer, len(decided), undecided)


def _refusal(path: Path, problems: list[tuple[int, str]]) -> OrchestratorError:
    lines = "\n".join(f"  line {line}: {why}" for line, why in sorted(problems, key=lambda problem: problem[0]))
    count = len({line for line, _ in problems})
    return OrchestratorError(
        f"{path} was refused whole, nothing was imported: fix {'this line' if count == 1 else f'these {count} lines'}"
        f" and import it again\n{lines}"
    )


def _parse(path: Path, content: bytes) -> tuple[list[dict], list[tuple[int, str]], int]:
    """The file's deciding rows (line, user_id, context_type, field, decision, position, listed_values, note),
    the problems found without the database, and how many rows decide nothing."""
    try:
        text = content.decode("utf-8-sig")  # a spreadsheet's byte-order mark is fine
    except UnicodeDecodeError as exc:
        raise OrchestratorError(
            f"{path} is not UTF-8 text (byte {exc.start}): save it as CSV in UTF-8, nothing was imported"
        ) from None
    allow_csv_fields_of_any_size()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    expected = ",".join(HEADER)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise OrchestratorError(f"{path} is not CSV ({exc}), nothing was imported") from None
    if header is None:
        raise OrchestratorError(
            f"{path} is empty: start from `orchestrator decisions template` (its header is {expected!r}), "
            f"nothing was imported"
        )
    if [name.strip() for name in header] != list(HEADER):
        raise OrchestratorError(
            f"{path} has the header {shown_repr(','.join(header))}, not the decision template's {expected!r}: "
            f"start from `orchestrator decisions template`, nothing was imported"
        )
    rows, problems, undecided = [], [], 0
    first_line_of: dict[tuple, list[int]] = {}
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            problems.append((reader.line_num, f"not valid CSV: {exc}"))
            break
        if record is None:
            break
        if record == []:
            continue  # a blank line
        if len(record) != len(HEADER):
            problems.append((line, f"has {len(record)} fields, the header has {len(HEADER)}: check the quoting"))
            continue
        cells = dict(zip(HEADER, record, strict=True))
        decision = cells["decision"].strip()
        if not decision:
            undecided += 1
            continue
        key = (cells["user_id"], cells["context_type"] or None, cells["field"])
        first_line_of.setdefault(key, []).append(line)
        position = None
        if decision.isascii() and decision.isdigit():
            # more digits than MAX_POSITION has: out of range (and int() refuses over 4300 digits)
            digits = decision.lstrip("0")
            position = MAX_POSITION if len(digits) > len(str(MAX_POSITION)) else min(int(decision), MAX_POSITION)
            if position < 1:
                problems.append((line, f"position {shortened(decision)} is out of range: positions start at 1"))
                continue
        rows.append(
            {
                "line": line,
                "user_id": cells["user_id"],
                "context_type": cells["context_type"] or None,
                "field": cells["field"],
                "decision": decision,
                "position": position,
                "listed_values": cells["values"].strip(),
                "note": cells["note"],
            }
        )
    for lines in first_line_of.values():
        for line in lines if len(lines) > 1 else ():
            others = ", ".join(str(other) for other in lines if other != line)
            problems.append((line, f"decides the same conflict as line {others}: decide each conflict once"))
    twice = {line for lines in first_line_of.values() if len(lines) > 1 for line in lines}
    bad = {line for line, _ in problems}
    return [row for row in rows if row["line"] not in twice | bad], problems, undecided


def _problems(rows: list[dict], checked: list[dict]) -> list[tuple[int, str]]:
    """Why each row the database checked is wrong (none when it names one of its conflict's values)."""
    problems = []
    for row, result in zip(rows, checked, strict=True):
        line = row["line"]
        values = shortened(result["conflict_values"] or "")
        if not result["found"]:
            where = f"intent {shown_repr(row['context_type'])}" if row["context_type"] else "shared (Profile)"
            problems.append(
                (
                    line,
                    f"no conflict of user {shown_repr(row['user_id'])}, {where} field {shown_repr(row['field'])} in "
                    f"the latest dry run: check user_id, context_type and field against `orchestrator decisions "
                    f"template`",
                )
            )
        elif row["position"] is not None:
            if result["listed_malformed"]:
                problems.append((line, f"the values cell is not JSON: {shown_repr(row['listed_values'])}"))
            elif not result["listed_match"]:
                problems.append(
                    (
                        line,
                        f"its values cell differs from the latest dry run's {values}, so position "
                        f"{shortened(row['decision'])} may name another value: write a new template "
                        f"(`orchestrator decisions template`)",
                    )
                )
            elif result["value"] is None:
                problems.append(
                    (
                        line,
                        f"position {shortened(row['decision'])} is out of range: the conflict has "
                        f"{result['value_count']} values (1 to {result['value_count']})"
                        + _number_hint(row["decision"], result),
                    )
                )
        elif result["malformed"]:
            problems.append(
                (
                    line,
                    f"the decision {shown_repr(row['decision'])} is neither a position nor JSON: write a value as "
                    f'JSON (a text with its quotes, e.g. "Paris"), or its position (1 to {result["value_count"]})',
                )
            )
        elif result["value"] is None:
            problems.append(
                (
                    line,
                    f"{shortened(row['decision'])} is not among the conflict's values {values}: write one of them as "
                    f"JSON, or its position (1 to {result['value_count']})",
                )
            )
    return problems


def _number_hint(decision: str, result: dict) -> str:
    """A whole number is a position; say so when the conflict also holds it as a value."""
    wanted = Decimal(decision)
    for position, value in enumerate(json_loads(result["conflict_values"]), 1):
        integer = type(value) is int or (isinstance(value, Decimal) and value.as_tuple().exponent == 0)
        if integer and value == wanted:
            return (
                f"; a whole number is a position: to choose the value {shortened(decision)}, write its position "
                f"{position}"
            )
    return ""


# -- list and clear -------------------------------------------------------------------------------------


def listing(settings: Settings, conn: ConnInfo, users: list[str] | None = None) -> list[dict]:
    """Every decision (of ``users``): who, when, note, value, and its status in the latest dry run:
    `applied`, `pending` (the next dry run applies it), `stale`, or None when there is no dry run."""
    with db.connect(conn) as pg:
        pg.read_only = True
        rows = decision_store.listing(pg, settings.meta_schema, settings.dry_run_schema, users)
    for row in rows:  # JSON values as the server printed them: numbers keep their text (1.50 stays 1.50)
        for column in ("value", "conflict_values"):
            row[column] = None if row[column] is None else json_loads(row[column])
    return rows


def clear(
    settings: Settings, conn: ConnInfo, *, users: list[str] | None, confirm: Callable[[int], None], actor: str = ""
) -> int:
    """Remove the decisions (of ``users``; all without), after ``confirm(count)`` (which raises to stop).
    The next rebuild migrates those conflicts' first values again. How many were removed."""
    with db.connect(conn, autocommit=True, application_name="orchestrator decisions") as pg, locks.dry_run_lock(pg):
        if not db.table_exists(pg, settings.meta_schema, decision_store.TABLE):
            return 0
        count = decision_store.count(pg, settings.meta_schema, users)
        if count == 0:
            return 0
        confirm(count)
        return decision_store.clear(pg, settings.meta_schema, users, actor or metadata.os_user())
