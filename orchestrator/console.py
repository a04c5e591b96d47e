"""All terminal output: messages, tables, progress bars, prompts and JSON on stdout.

It renders what the core returns (plain dicts and dataclasses, read by attribute) and implements the
core's ``Feedback`` for long work; it imports no core module. Results go to stdout (``out``);
progress, messages and errors to stderr (``err``) when a command prints JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import re
import secrets
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.errors import Aborted, OrchestratorError
from orchestrator.feedback import Advance
from orchestrator.formats import ERROR_LINE_CHARS, percent, plural, shortened, shown_repr, summary_value

# user data is shown as it is: no highlighting, and no ":name:" taken for an emoji code
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


class TerminalFeedback:
    """The core's Feedback on a console: lines as plain text, dbt progress as a bar (on a terminal only)."""

    def __init__(self, console: Console):
        self.console = console

    def note(self, text: str) -> None:
        self.console.print(text, markup=False)

    @contextlib.contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Advance]:
        columns = [
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[node]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=self.console, transient=True, disable=not self.console.is_terminal) as bar:
            task = bar.add_task(label, total=total, node="")

            def advance(unique_id: str, status: str) -> None:
                bar.update(task, advance=1, node=unique_id.split(".")[-1])

            yield advance


def feedback(json_output: bool) -> TerminalFeedback:
    """Where a command's progress goes: stderr when stdout carries its JSON."""
    return TerminalFeedback(err if json_output else out)


def error(message: str) -> None:
    """``Error: message`` on stderr. Messages shorten the values they quote (formats.shortened); a line
    that is still longer than ERROR_LINE_CHARS is shortened too, saying how long it was."""
    lines = (shortened(line, ERROR_LINE_CHARS) for line in message.split("\n"))
    err.print("Error: " + "\n".join(lines), markup=False)


# -- JSON ---------------------------------------------------------------------------------------------


def _json_default(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def print_json(value) -> None:
    """One JSON document on stdout (plain text: no markup or emoji rendering of user data)."""
    typer.echo(json.dumps(value, indent=2, default=_json_default))


def print_exact_json(value) -> None:
    """One JSON document on stdout, every value whole and every number as its exact text (``to_json``),
    written as it is (not through rich: a value can be megabytes long)."""
    typer.echo(to_json(value))


def to_json(value, indent: int | None = 2) -> str:
    """JSON in which numbers keep their exact text (Decimal 1.50 is written 1.50, not 1.5)."""
    nonce = secrets.token_hex(8)

    def default(item):
        if isinstance(item, Decimal):
            # a placeholder no JSON string from the database can contain (jsonb rejects \u0000)
            return f"\x00{nonce}:{item}\x00"
        return str(item)

    text = json.dumps(value, indent=indent, default=default, ensure_ascii=False)
    return re.sub(r'"\\u0000' + nonce + r':([^"\\]+)\\u0000"', r"\1", text)


# -- prompts ------------------------------------------------------------------------------------------


def interactive() -> bool:
    """Whether a person can answer a prompt (standard input is a terminal)."""
    return sys.stdin.isatty()


def require_terminal_or_yes(yes: bool) -> None:
    """The one rule for commands that change data: without --yes they ask, so they need a terminal."""
    if not yes and not interactive():
        raise OrchestratorError("this command changes data and there is no terminal to ask: use --yes")


def confirm(question: str, yes: bool) -> None:
    """Ask ``question``; "no" stops the command with nothing changed (exit 1)."""
    if yes:
        return
    require_terminal_or_yes(yes)
    if not typer.confirm(question, default=False):
        raise Aborted("nothing was changed")


# -- the dry run --------------------------------------------------------------------------------------


def summary(rows: list[dict], console: Console = out, title: str = "Verification summary") -> None:
    table = Table(title=title, show_lines=False)
    for column in ("metric", "value", "expected", "check"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        check = {True: "pass", False: "FAIL", None: ""}[row["passed"]]
        table.add_row(
            row["metric"],
            summary_value(row["metric"], row["value"]),
            summary_value(row["metric"], row["expected"]),
            check,
        )
    console.print(table)


def dry_run(outcome, console: Console = out) -> None:
    counts = outcome.counts()
    console.print(
        f"Dry run {outcome.record['dry_run_id']} built into schema {outcome.record['dry_run_schema']}:"
        f" {counts['built']} nodes built, {counts['tests_passed']} tests passed, "
        f"{plural(counts['warnings'], 'warning')}"
        + (f", per-user models in {outcome.batches} batches" if outcome.batches > 1 else "")
        + f" (dbt invocation {outcome.dbt.invocation_id}).",
        markup=False,
    )
    summary(outcome.summary.rows, console)
    if outcome.record.get("message"):
        console.print(f"Note: {outcome.record['message']}.", markup=False)
    failed = outcome.summary.failed_checks()
    if "decisions_stale" in failed:
        failed.remove("decisions_stale")
        console.print(
            f"Stale reviewer decisions: {int(outcome.summary.value('decisions_stale'))} (the legacy data changed since "
            f"they were made, so those conflicts migrated their first values). Promote refuses until they are decided "
            f"again or cleared: `orchestrator decisions list`.",
            markup=False,
        )
    if failed == ["conflict_rate"]:
        console.print(
            f"The dry run is built and reviewable, but promote would refuse it at the current threshold: the "
            f"conflict rate {percent(outcome.summary.value('conflict_rate'))} is above {percent(outcome.threshold)}. "
            f"Review the conflicts (`orchestrator report`), decide them (`orchestrator decisions template`), or "
            f"promote with a --max-conflict-rate you accept.",
            markup=False,
        )
    elif failed:
        console.print(
            f"The dry run is built and reviewable, but promote would refuse it: {', '.join(failed)} failed.",
            markup=False,
        )


# -- promote, rollback, verify, runs ------------------------------------------------------------------


def plan_confirmation(yes: bool, live_schema: str, console: Console = out):
    """promote's ``confirm``: show the changes to the live tables, then ask (unless --yes)."""

    def confirm_plan(plan: dict) -> None:
        table = Table(title=f"Changes to the live tables in schema {live_schema}")
        for column in ("table", "insert", "update", "delete", "unchanged"):
            table.add_column(column, justify="left" if column == "table" else "right")
        for name, counts in plan.items():
            table.add_row(name, *(str(counts[k]) for k in ("inserted", "updated", "deleted", "unchanged")))
        console.print(table)
        confirm("Promote these changes?", yes)

    return confirm_plan


def sync_line_printer(json_output: bool):
    """One line per sync round (users changed, rows written, seconds), or its JSON."""

    def show(result) -> None:
        if json_output:
            print_json(result.as_dict())
            return
        dead_runs(result.dead_runs)
        slot_warning(result.change_source)
        source = change_source_text(result.change_source)
        if result.run_id is None and not result.changed:
            out.print(f"sync: nothing changed ({result.seconds:.1f} s; {source})", markup=False)
            return
        changed = f"{plural(len(result.changed.users), 'user')} changed"
        if result.changed.profiles:
            changed += f" (and {plural(len(result.changed.profiles), 'orphan profile')})"
        skipped = f", {plural(len(result.handed_over), 'user')} handed over" if result.handed_over else ""
        if result.handed_over and len(result.skipped) < len(result.handed_over):
            skipped += f" ({len(result.handed_over) - len(result.skipped)} of them the application's own new users)"
        if result.left_out:
            skipped += f", {plural(len(result.left_out), 'user')} deleted meanwhile left for the next round"
        if result.held_back:
            held = ", ".join(map(shortened, result.held_back[:5])) + (", ..." if len(result.held_back) > 5 else "")
            skipped += f", {plural(len(result.held_back), 'user')} held back (a stale decision: {held})"
        run = f"sync run {result.run_id}" if result.run_id else "sync (no live row to write)"
        written = f"{plural(result.rows_written, 'row')} written"
        out.print(f"{run}: {changed}, {written}{skipped} ({result.seconds:.1f} s; {source})", markup=False)

    return show


def change_source_text(source: dict) -> str:
    """How a round or catch-up found the changes (orchestrator/stream.py), in a few words."""
    if source.get("source") == "wal":
        return f"changes read from the WAL: {plural(source.get('transactions_read') or 0, 'transaction')}"
    return "every owner's digests compared" + (f": {source['note']}" if source.get("note") else "")


def slot_warning(source: dict) -> None:
    """Say so when the change stream's slot holds back more WAL than MIGRATION_SLOT_WARN_BYTES (the limit
    comes in ``source``, snapshot.Snapshot.source_dict)."""
    retained, limit = source.get("slot_retained_bytes"), source.get("slot_warn_bytes")
    if retained is not None and limit is not None and retained > limit:
        err.print(
            f"Warning: the change stream's replication slot holds back {retained / 2**20:,.0f} MiB of WAL on the "
            f"server (more than MIGRATION_SLOT_WARN_BYTES={limit:,} bytes): keep `sync` following, or end the "
            f"cutover (`sync --end` drops the slot); docs/cutover.md",
            markup=False,
        )


def rollback_confirmation(yes: bool, live_schema: str, console: Console = out):
    def confirm_action(action: str) -> None:
        console.print(f"Rollback will {action} in schema {live_schema}.", markup=False)
        confirm("Roll back?", yes)

    return confirm_action


def dead_runs(runs: list[dict], console: Console = out) -> None:
    for run in runs:
        console.print(
            f"Note: {run['command']} run {run['run_id']} started {run['started_at']:%Y-%m-%d %H:%M:%S} "
            f"died before finishing; nothing of it was committed (recorded as 'died').",
            markup=False,
        )


def promoted(result, live_schema: str, console: Console = out) -> None:
    dead_runs(result.dead_runs, console)
    scope = plural(len(result.users), "user") if result.users is not None else "all users"
    console.print(
        f"Promoted ({scope}) into schema {live_schema}: run {result.run_id}"
        + (" (created the live tables)" if result.created_tables else "")
        + ".",
        markup=False,
    )
    if result.left_out:
        console.print(
            f"Left out {plural(len(result.left_out), 'user')} deleted from the legacy tables after the snapshot "
            f"this promote was built from (their live rows went by the cascade; `orchestrator sync` handles "
            f"them): {', '.join(map(shortened, result.left_out[:10]))}{', ...' if len(result.left_out) > 10 else ''}.",
            markup=False,
        )
    if result.caught_up is not None and not result.caught_up.changed:
        console.print(
            f"Caught up: nothing changed since dry run {result.caught_up.reviewed['dry_run_id']} read the legacy "
            f"data ({change_source_text(result.caught_up.source)}). Follow later writes with "
            "`orchestrator sync --follow`.",
            markup=False,
        )
    elif result.caught_up is not None:
        caught = result.caught_up.as_dict()
        console.print(
            f"Caught up: dry run {caught['reviewed_dry_run_id']} reviewed {caught['reviewed_users']} users; "
            f"{plural(caught['rebuilt_users'], 'user')} changed since "
            f"{'was' if caught['rebuilt_users'] == 1 else 'were'} rebuilt from the legacy data as it is now"
            + (
                f" (and {plural(caught['rebuilt_orphan_profiles'], 'orphan profile')})"
                if caught["rebuilt_orphan_profiles"]
                else ""
            )
            + f" ({change_source_text(caught['change_source'])})"
            + ". Follow later writes with `orchestrator sync --follow`.",
            markup=False,
        )


def rolled_back(result, console: Console = out) -> None:
    dead_runs(result.dead_runs, console)
    what = (
        "dropped the live tables"
        if result.dropped
        else f"restored the live tables to their state before {_run_name(result.undone_command)} "
        f"{result.undone_run_id or ''} ("
        + "; ".join(f'"{t}" -{c["removed"]} +{c["restored"]}' for t, c in result.counts.items())
        + ")"
    )
    gone = sum(c.get("not_restored_user_deleted", 0) for c in result.counts.values())
    if gone:
        what += f"; {plural(gone, 'row')} of users deleted since not restored (the cascade removed them)"
    skipped = result.skipped_unchanged
    if skipped:
        what += f"; skipped {plural(len(skipped), 'later run')} that changed nothing ({', '.join(skipped)})"
    console.print(f"Rolled back (run {result.run_id}): {what}.", markup=False)
    if result.legacy_unchanged:
        console.print("Legacy tables verified unchanged by the rollback: its transaction wrote no row of them.")


def _run_name(command: str | None) -> str:
    return "sync round" if command == "sync" else "promote"


def verification(checks: list[dict], live_schema: str, console: Console = out) -> None:
    table = Table(title=f"Verification of the live tables in schema {live_schema}")
    for column in ("check", "value", "expected", "result"):
        table.add_column(column)
    for check in checks:
        table.add_row(
            check["check"], str(check["value"]), str(check["expected"]), "pass" if check["passed"] else "FAIL"
        )
    console.print(table)


def runs(history: list[dict], console: Console = out) -> None:
    """One line per run (when, what, outcome, its whole run id, as every other command prints it), then
    its details indented and wrapped: readable at 80 columns, in a terminal or not."""
    if not history:
        console.print("No promote or rollback has run yet.")
        return
    console.print("started           command  status    run id", markup=False)
    for run in history:
        console.print(
            f"{run['started_at']:%Y-%m-%d %H:%M}  {run['command']:<8} {run['status']:<9} {run['run_id']}", markup=False
        )
        notes = [
            f"scope {run['scope']}"
            + (f" ({plural(run['scope_users'], 'user')})" if run["scope_users"] is not None else ""),
            (
                f"rebuilt {plural(run['rebuilt_users'], 'user')} changed since the review"
                if run.get("rebuilt_users")
                else ""
            ),
            run["message"] or "",
            "changed nothing" if run.get("changed") is False else "",
            f"rolled back by {run['rolled_back_by']}" if run["rolled_back_by"] else "",
            f"by {run['os_user']}",
            f"dbt invocation {run['dbt_invocation_id']}" if run["dbt_invocation_id"] else "",
        ]
        for line in textwrap.wrap("; ".join(note for note in notes if note), 76, break_on_hyphens=False):
            console.print("    " + line, markup=False)


# -- reviewer decisions -------------------------------------------------------------------------------

DECISION_STATUS = {
    "applied": "applied",
    "pending": "pending: the next dry run applies it",
    "stale": "STALE: decide it again or clear it",
    None: "no dry run to check it against",
}


def decisions_imported(imported, console: Console = out) -> None:
    console.print(
        f"Imported {plural(imported.decided, 'decision')} from {imported.file} by {shortened(imported.reviewer)}"
        f" (sha256 {imported.sha256[:12]}); {plural(imported.undecided, 'row')} with no decision changed nothing."
        " Run `orchestrator dry-run` to apply them.",
        markup=False,
    )


def _conflict_name(row: dict) -> str:
    field = shortened(row["field"])
    return f"{field} ({shortened(row['context_type'])})" if row["context_type"] else field


def decisions(rows: list[dict], console: Console = out) -> None:
    """One block per decision: the conflict, the value chosen, its status; who, when and the note."""
    if not rows:
        console.print("No reviewer decision yet: `orchestrator decisions template`, fill it in, then import it.")
        return
    for row in rows:
        console.print(
            f"{_text(row['user_id'])} {escape(_conflict_name(row))} = {_json_text(row['value'])}:"
            f" {DECISION_STATUS.get(row['status'], row['status'])}"
        )
        console.print(
            f"    by {_text(row['reviewer'])} at {row['decided_at']:%Y-%m-%d %H:%M:%S}"
            + (f"; note: {_text(row['note'])}" if row["note"] else "")
            + (f"; values now: {_json_text(row['conflict_values'])}" if row["status"] == "stale" else "")
        )
    counts = {status: sum(1 for row in rows if row["status"] == status) for status in ("applied", "pending", "stale")}
    console.print(
        f"{plural(len(rows), 'decision')}: " + ", ".join(f"{count} {status}" for status, count in counts.items())
    )


# -- explain ------------------------------------------------------------------------------------------


def _text(value) -> str:
    """User data as inert text for the terminal (rich markup escaped), shortened when long, saying how
    long it is (formats.shortened)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, Decimal)):
        value = to_json(value, indent=None)
    return escape(shortened(str(value)))


def _json_text(value) -> str:
    """A JSON value as JSON (so " Bo " shows its spaces and "30" differs from 30), markup escaped,
    shortened when long (formats.shortened)."""
    return "" if value is None else escape(shortened(to_json(value, indent=None)))


OUTCOME_WORDS = {
    "chosen": "chosen",
    "same_as_chosen": "agreed with the chosen value",
    "lost_conflict": "lost a conflict",
    "partly_lost_conflict": "some sub-keys lost a conflict",
    "merged": "merged into the array",
    "partly_deduplicated": "merged; some elements were duplicates",
    "deduplicated": "all elements were duplicates",
    "absent": "empty/absent after normalisation",
    "unmapped": "unmapped",
}


def explain(result: dict, console: Console = out) -> None:
    console.print(f"User {shown_repr(result['user_id'])}", style="bold", markup=False)
    table = Table(title="Context profiles (context order)")
    for column in ("context profile", "type", "created", "legacy profiles (in order)"):
        table.add_column(column)
    by_cp: dict[str, list[str]] = {}
    for profile in result["legacy_profiles"]:
        by_cp.setdefault(profile["context_profile_id"], []).append(
            f"#{profile['context_order']} {shortened(profile['legacy_profile_id'])} ({profile['data_type']})"
        )
    for cp in result["context_profiles"]:
        table.add_row(
            _text(cp["context_profile_id"]),
            cp["context_type"],
            f"{cp['created_at']}",
            escape(", ".join(by_cp.get(cp["context_profile_id"], [])) or "no legacy Profile"),
        )
    console.print(table)

    console.print("Every legacy key (original -> normalised => target: outcome):", style="bold")
    current = None
    for row in result["keys"]:
        if row["legacy_profile_id"] != current:
            current = row["legacy_profile_id"]
            console.print(
                f"  #{row['context_order'] or '-'} legacy Profile {_text(current)} "
                f"(context profile {_text(row['context_profile_id'])}, {row['context_type']})"
            )
        target = ""
        if row["field"]:
            target = (
                "Profile." if row["target"] == "profile" else f"ContextIntent[{row['target_context_type']}]."
            ) + row["field"]
        outcome = OUTCOME_WORDS.get(row["outcome"], row["outcome"])
        if row["outcome"] == "unmapped":
            outcome += f" ({row['unmapped_reason']})"
        outcome = escape(outcome)
        for atom in row["atom_details"] or []:
            if atom.get("outcome") == "lost_conflict":
                where = f"{_text(atom['sub_key'])}: " if atom.get("sub_key") else ""
                outcome += (
                    f"; {where}lost to {_json_text(atom['chosen_value'])} "
                    f"from {_text(atom['chosen_from_legacy_profile_id'])}"
                )
        key = _text(row["legacy_key"]) if row["legacy_key"] is not None else "(the whole data)"
        normalised = f" -> {_json_text(row['normalised_value'])}" if row["normalised_value"] is not None else ""
        arrow = f" => {escape(target)}" if target else " =>"
        console.print(f"    {key}: {_json_text(row['legacy_value'])}{normalised}{arrow}: {outcome}")
    if not result["keys"]:
        console.print("  (no legacy keys)")

    for decision in result.get("decisions") or []:
        state = "applied" if decision["status"] == "applied" else f"STALE ({decision['stale_reason']})"
        console.print(
            f"Reviewer decision on {escape(_conflict_name(decision))}: {_json_text(decision['decided_value'])},"
            f" {state}; by {_text(decision['reviewer'])} at {decision['decided_at']:%Y-%m-%d %H:%M:%S}"
            + (f"; note: {_text(decision['note'])}" if decision["note"] else "")
        )
    for name, rows in result["dry_run"].items():
        for row in rows:
            title = "Profile" if name == "profile" else f"ContextIntent [{row['context_type']}]"
            filled = {k: v for k, v in row.items() if v not in (None, [], {}) and k not in ("user_id",)}
            console.print(
                f"{title} (dry run): completeness {row['completeness']}, missing {row['missing']}", markup=False
            )
            console.print("  " + _shortened_object(filled), markup=False)
    if result["live"] is None:
        console.print("Live tables: not promoted yet.")
    elif result["live_matches_dry_run"]:
        console.print("Live tables: this user's rows are identical to the dry run.")
    else:
        console.print("Live tables: this user's rows DIFFER from the dry run (promote again, or see --json).")


def _shortened_object(row: dict) -> str:
    """A row as one line of JSON, each long value shortened (formats.shortened): not JSON any more when
    one is, but readable; `explain --json` has every value whole."""
    pairs = (f"{to_json(key)}: {shortened(to_json(value, indent=None))}" for key, value in row.items())
    return "{" + ", ".join(pairs) + "}"
