"""The CLI's `decisions` commands: reviewers decide which of a conflict's values is migrated (spec §11).

The loop (docs/reviewing.md): `decisions template` → fill in `decision` → `decisions import` →
`orchestrator dry-run` (every rebuild applies the decisions) → review → `orchestrator promote`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator import console
from orchestrator.cli_common import JsonOption, YesOption, context, handles_errors
from orchestrator.console import out
from orchestrator.formats import shortened

decisions_app = typer.Typer(
    help="Reviewers decide conflicts: which of a conflict's values is migrated, applied by every rebuild.",
    no_args_is_help=True,
)

UserOption = Annotated[
    list[str] | None,
    typer.Option("--user", metavar="ID", help="Only this user's conflicts (repeatable; matched byte for byte)."),
]


@decisions_app.command("template")
@handles_errors
def template(
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Where to write the CSV (mode 0600: it holds personal data); `-` prints it on stdout.",
        ),
    ] = Path("reports/decisions_template.csv"),
    user: UserOption = None,
    field: Annotated[
        str | None,
        typer.Option(
            "--field",
            metavar="NAME",
            help="Only this field's conflicts (`location`, `beliefs.religion`; `beliefs`: all its sub-keys).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Write a CSV of the latest dry run's conflicts, for a reviewer to decide.

    Columns: user_id, context_type (empty for a shared field), field, values and chosen (JSON, as
    the server prints it), decision (empty) and note. Fill `decision` with the 1-based position of a
    value in `values`, or with the JSON of one of them ("SF" with its quotes), then import the file.
    An empty decision decides nothing.

    \b
    Examples:
      orchestrator decisions template
      orchestrator decisions template --user u04 --field location --out u04.csv
      orchestrator decisions template --field beliefs --out - | less
    """
    from orchestrator import decisions

    settings, conn = context()
    written = decisions.template(
        settings, conn, None if str(out_file) == "-" else out_file, users=user or None, field=field
    )
    if written.path is None:
        typer.echo(written.text, nl=False)
    elif json_output:
        console.print_json(written.as_dict())
    else:
        out.print(f"Wrote {written.path}: {written.conflicts} conflicts to decide.", markup=False)


@decisions_app.command("import")
@handles_errors
def import_(
    file: Annotated[Path, typer.Argument(help="A filled-in decision template (UTF-8 CSV).", metavar="FILE")],
    by: Annotated[str | None, typer.Option("--by", metavar="NAME", help="Who decided (default: the OS user).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Check every row against the latest dry run, then keep the file's decisions: all or nothing.

    Refused whole (exit 2, nothing imported), listing each wrong line and why: a conflict the latest
    dry run does not have, a position out of range, a value not among the conflict's values (JSON
    compared as jsonb: 1.0 and 1.00 are one value), a decision that is neither a position nor JSON,
    a conflict decided twice, a file that is not UTF-8 CSV with the template's header. Each decision
    replaces the conflict's earlier one; an empty decision leaves it as it is. Kept with who, when,
    the note and the file's sha256. The next `orchestrator dry-run` applies them.

    \b
    Examples:
      orchestrator decisions import reports/decisions_template.csv
      orchestrator decisions import reviewed.csv --by "Ann Smith" --json
    """
    from orchestrator import decisions

    settings, conn = context()
    imported = decisions.import_file(settings, conn, file, reviewer=by)
    if json_output:
        console.print_json(imported.as_dict())
    else:
        console.decisions_imported(imported)


@decisions_app.command("list")
@handles_errors
def list_(user: UserOption = None, json_output: JsonOption = False) -> None:
    """Show every decision: the conflict, the value chosen, who decided, when and why, and its status
    in the latest dry run: applied, pending (the next dry run applies it) or stale (its conflict is
    gone or its value is no longer among the conflict's values: promote refuses until it is decided
    again or cleared).

    \b
    Examples:
      orchestrator decisions list
      orchestrator decisions list --user u04 --json
    """
    from orchestrator import decisions

    settings, conn = context()
    rows = decisions.listing(settings, conn, user or None)
    if json_output:
        console.print_exact_json(rows)
    else:
        console.decisions(rows)


@decisions_app.command("clear")
@handles_errors
def clear(
    user: Annotated[
        list[str] | None,
        typer.Option("--user", metavar="ID", help="Only this user's decisions (repeatable). Default: every decision."),
    ] = None,
    yes: YesOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove decisions: the next rebuild migrates those conflicts' first values again.

    Asks first, unless --yes; without a terminal it needs --yes (exit 2). Answering no removes
    nothing (exit 1).

    \b
    Examples:
      orchestrator decisions clear --user u04
      orchestrator decisions clear --yes --json
    """
    from orchestrator import decisions

    settings, conn = context()
    console.require_terminal_or_yes(yes)
    whose = f" of {', '.join(shortened(one) for one in user)}" if user else ""
    removed = decisions.clear(
        settings,
        conn,
        users=user or None,
        confirm=lambda count: console.confirm(f"Remove {count} reviewer decisions{whose}?", yes),
    )
    if json_output:
        console.print_json({"removed": removed, "users": user or None})
    else:
        out.print(
            f"Removed {removed} reviewer decisions{whose}; the next dry run migrates those conflicts' first values."
            if removed
            else f"There is no reviewer decision{whose} to remove.",
            markup=False,
        )
