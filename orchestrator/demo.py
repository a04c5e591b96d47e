"""`orchestrator demo`: the whole flow on the fixture dataset, each step told as it ends.

fixtures → dry run → promote refused at the default threshold (the fixtures are built to conflict) →
promote at a threshold that admits them → verify → the Markdown report.
"""

from __future__ import annotations

from decimal import ROUND_UP, Decimal
from pathlib import Path

from orchestrator import db, fixtures, gates, reports, verify
from orchestrator import dry_run as dry_running
from orchestrator import promote as promoting
from orchestrator.errors import CheckFailed
from orchestrator.feedback import Feedback
from orchestrator.formats import percent, plural, summary_value


def demo(schema: str, out_dir: Path, feedback: Feedback) -> None:
    settings = db.load_settings(legacy_schema=schema)
    conn = db.server(settings)
    feedback.note(f"PostgreSQL: {conn.host}:{conn.port}, database {conn.dbname}")
    counts = fixtures.load(settings, conn, schema, remember=True)
    feedback.note(f"1. Fixtures loaded into schema {schema}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    outcome = dry_running.dry_run(settings, conn, feedback)
    built = outcome.counts()
    failed = [
        f"{row['metric']} {summary_value(row['metric'], row['value'])} (expected "
        f"{summary_value(row['metric'], row['expected'])})"
        for row in outcome.summary.rows
        if row["passed"] is False
    ]
    feedback.note(
        f"2. Dry run {outcome.record['dry_run_id']} built into schema {outcome.record['dry_run_schema']}: "
        f"{built['built']} nodes built, {built['tests_passed']} tests passed, {plural(built['warnings'], 'warning')}; "
        + (f"checks that fail: {'; '.join(failed)}." if failed else "every check passes.")
    )
    default = gates.default_max_conflict_rate(settings)
    try:
        promoting.promote(settings, conn, max_conflict_rate=default, confirm=lambda plan: None)
    except CheckFailed as refusal:
        feedback.note(
            f"3. Promote at the default {percent(default)} conflict-rate gate is refused, as it should be: {refusal}"
        )
    rate = Decimal(outcome.summary.value("conflict_rate"))
    threshold = max(default, rate.quantize(Decimal("0.01"), rounding=ROUND_UP))
    result = promoting.promote(settings, conn, max_conflict_rate=threshold, confirm=lambda plan: None)
    feedback.note(
        f"4. Promoted with --max-conflict-rate {threshold} (the fixtures are built to conflict): run "
        f"{result.run_id}, "
        + "; ".join(f'"{t}" +{c["inserted"]} ~{c["updated"]} -{c["deleted"]}' for t, c in result.plan.items())
    )
    checks = verify.verify(settings, conn)
    feedback.note(f"5. Verify: {sum(c['passed'] for c in checks)}/{len(checks)} checks pass on the live tables.")
    paths = reports.write(settings, conn, "md", out_dir)
    feedback.note(f"6. Report written to {', '.join(str(p) for p in paths)} (mode 0600).")
    feedback.note("Next: `orchestrator rollback --yes` undoes the promote; `orchestrator runs` shows the audit.")
