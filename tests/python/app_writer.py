"""An application simulator: random writes to the legacy tables (MIGRATION_SPEC.md §1) in short transactions,
run as a process of its own while the orchestrator works (tests/python/test_snapshot.py).

    python app_writer.py --schema S --seed N [--min-ms 20 --max-ms 150] [--count K] [--stop-file F]
                         [--ghost-log G] [--seconds T] [--dsn CONNINFO]

Connects with ``--dsn`` (a libpq conninfo), else with the PG* environment variables (give the password as
PGPASSWORD, never on the command line). Writes, as the application does: profile blob updates, sign-ups (a
"User" with a "ContextProfile" and its "Profile"), account deletions (the "User" row; sometimes its context
profiles and profiles too), profiles moved to another context profile, contexts retyped ("contextType"
changed), new contexts, and *ghosts*: profiles created and deleted again within a second (in an existing
context profile, in a context profile made and dropped with it, or naming no context profile). Every ghost's
blob holds unique marker values ``app-ghost-<seed>-<n>`` (mapped keys and an unmapped one), each appended to
the ghost log (one line per ghost) before the ghost is written, so a test can look for them anywhere.

Stops after ``--count`` writes, when ``--stop-file`` exists, after ``--seconds``, or on SIGTERM / SIGINT:
it finishes the write in progress, deletes the ghosts still alive (a ghost never outlives the writer), prints
``{"writes": ..., "kinds": {...}, "ghosts": ..., "errors": ...}`` on stdout and exits 0. A write that fails
(a deadlock with the orchestrator's publish, say) is rolled back, counted in "errors" and logged on stderr,
and the writer goes on, as an application would retry.

Importable too: ``App(pg, schema, seed)`` makes one write per call (tests use its writes one by one).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql

CONTEXTS = ["romantic", "friendship", "professional", "creative", "service"]
GHOST_PREFIX = "app-ghost-"  # in every ghost's ids and marker values; nothing else in the tests holds it
BLOBS = [
    {"location": "Lisbon", "coreValues": ["kindness", "humour"]},
    {"location": " Oslo ", "beliefs": {"religion": "none", "politics": 1.5}, "friendshipDepth": "deep"},
    {"ageRange": "30-40", "relationshipTimeline": "soon", "unknownKey": [1, 2]},
    {"location": ["not", "a", "scalar"], "serviceType": "plumbing"},
    ["not", "an", "object"],
    None,
    {"name": "Bo", "lifestyle": {"pets": None, "smoker": False}, "partnershipType": "cofounder"},
    {"coreValues": "honesty", "constraints": ["no smoking", " no smoking "], "creativeType": "music"},
    {"interactionStyle": {"pace": "slow"}, "commitmentHorizon": "2y", "egoBalance": 3},
]
KINDS = {  # kind: weight
    "update blob": 30,
    "sign up": 10,
    "delete account": 8,
    "move profile": 8,
    "retype context": 8,
    "new context": 8,
    "ghost": 14,
}
GHOST_LIFETIME = (0.05, 0.8)  # seconds: created and deleted again within a second


def ghost_marker(seed: int, number: int) -> str:
    return f"{GHOST_PREFIX}{seed}-{number}"


def ghost_blob(marker: str) -> dict:
    """A ghost Profile's blob: its marker in a shared scalar, a shared array, an object sub-key and an
    unmapped key (which would land in the unmapped log)."""
    return {
        "location": marker,
        "coreValues": [marker],
        "beliefs": {"ghost": marker},
        f"{GHOST_PREFIX}key-{marker.removeprefix(GHOST_PREFIX)}": 1,
    }


class App:
    """One simulated application writing the legacy tables of ``schema`` on ``pg`` (autocommit)."""

    def __init__(self, pg: psycopg.Connection, schema: str, seed: int, ghost_log: Path | None = None):
        self.pg, self.schema, self.seed = pg, schema, seed
        self.rng = random.Random(seed)
        self.ghost_log = ghost_log
        self.serial = 0
        self.ghosts = 0
        self.alive: list[tuple[float, list[tuple[str, str]]]] = []  # (delete at, [(table, id)]) per ghost
        self.kinds: dict[str, int] = {}

    # -- helpers ----------------------------------------------------------------------------------------------

    def table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def new_id(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}-a{self.seed}-{self.rng.randrange(10**6)}-{self.serial}"

    def pick(self, table: str, where: str = "true", params=()) -> str | None:
        """A random id of ``table`` (never a ghost's)."""
        ids = self.pg.execute(
            sql.SQL("select id from {} where id not like %s and (" + where + ') order by id collate "C"').format(
                self.table(table)
            ),
            [GHOST_PREFIX + "%", *params],
        ).fetchall()
        return self.rng.choice(ids)[0] if ids else None

    def insert_context(self, user_id: str, context_id: str, context_type: str | None = None) -> None:
        self.pg.execute(
            sql.SQL('insert into {} (id, "userId", "contextType", "updatedAt") values (%s, %s, %s::{}, now())').format(
                self.table("ContextProfile"), sql.Identifier(self.schema, "RelationshipContextType")
            ),
            [context_id, user_id, context_type or self.rng.choice(CONTEXTS)],
        )

    def insert_profile(self, profile_id: str, context_id: str, blob) -> None:
        self.pg.execute(
            sql.SQL(
                'insert into {} (id, "contextProfileId", data, "updatedAt") values (%s, %s, %s::jsonb, now())'
            ).format(self.table("Profile")),
            [profile_id, context_id, json.dumps(blob)],
        )

    # -- the writes -------------------------------------------------------------------------------------------

    def write(self) -> str:
        """One random write in one short transaction; returns its kind."""
        kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        with self.pg.transaction():
            getattr(self, kind.replace(" ", "_"))()
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return kind

    def update_blob(self) -> None:
        profile = self.pick("Profile")
        if profile:
            self.pg.execute(
                sql.SQL('update {} set data = %s::jsonb, "updatedAt" = now() where id = %s').format(
                    self.table("Profile")
                ),
                [json.dumps(self.rng.choice(BLOBS)), profile],
            )

    def sign_up(self) -> str:
        user_id = self.new_id("u")
        self.pg.execute(
            sql.SQL('insert into {} (id, email, "updatedAt") values (%s, %s, now())').format(self.table("User")),
            [user_id, f"{user_id}@example.test"],
        )
        context_id = self.new_id("cp")
        self.insert_context(user_id, context_id)
        self.insert_profile(self.new_id("p"), context_id, self.rng.choice(BLOBS))
        return user_id

    def delete_account(self, user_id: str | None = None, everything: bool | None = None) -> str | None:
        """Delete a "User" row; half the time (or with ``everything``) its context profiles and their
        profiles too, as an application that cleans up would."""
        user_id = user_id or self.pick("User")
        if user_id is None:
            return None
        if everything if everything is not None else self.rng.random() < 0.5:
            self.pg.execute(
                sql.SQL('delete from {} where "contextProfileId" in (select id from {} where "userId" = %s)').format(
                    self.table("Profile"), self.table("ContextProfile")
                ),
                [user_id],
            )
            self.pg.execute(
                sql.SQL('delete from {} where "userId" = %s').format(self.table("ContextProfile")), [user_id]
            )
        self.pg.execute(sql.SQL("delete from {} where id = %s").format(self.table("User")), [user_id])
        return user_id

    def move_profile(self) -> None:
        profile, context = self.pick("Profile"), self.pick("ContextProfile")
        if profile and context:
            self.pg.execute(
                sql.SQL('update {} set "contextProfileId" = %s, "updatedAt" = now() where id = %s').format(
                    self.table("Profile")
                ),
                [context, profile],
            )

    def retype_context(self) -> None:
        context = self.pick("ContextProfile")
        if context:
            self.pg.execute(
                sql.SQL('update {} set "contextType" = %s::{}, "updatedAt" = now() where id = %s').format(
                    self.table("ContextProfile"), sql.Identifier(self.schema, "RelationshipContextType")
                ),
                [self.rng.choice(CONTEXTS), context],
            )

    def new_context(self) -> None:
        user = self.pick("User")
        if user:
            context_id = self.new_id("cp")
            self.insert_context(user, context_id)
            self.insert_profile(self.new_id("p"), context_id, self.rng.choice(BLOBS))

    def ghost(self, where: str | None = None, context: str | None = None, user: str | None = None) -> str:
        """A Profile that lives less than a second: in an existing context profile ("existing"; ``context``,
        else a random one), in a context profile made and deleted with it ("own"; of ``user``, else a random
        one), or naming no context profile ("dangling"). Returns its marker, logged before the insert commits.
        The writer process deletes it within a second (``bury``); a caller of this method deletes it with
        ``bury(everyone=True)``."""
        self.ghosts += 1
        marker = ghost_marker(self.seed, self.ghosts)
        if self.ghost_log is not None:
            with self.ghost_log.open("a", encoding="utf-8") as log:
                log.write(marker + "\n")
        where = where or self.rng.choice(["existing", "existing", "own", "dangling"])
        rows = []
        if where == "existing":
            context = context or self.pick("ContextProfile")
        else:
            context = None
        if context is None and where != "dangling":
            user = user or self.pick("User")
            if user is not None:
                context = f"{marker}-cp"
                self.insert_context(user, context)
                rows.append(("ContextProfile", context))
        profile = f"{marker}-p"
        self.insert_profile(profile, context or f"{marker}-nowhere", ghost_blob(marker))
        rows.insert(0, ("Profile", profile))
        self.alive.append((time.monotonic() + self.rng.uniform(*GHOST_LIFETIME), rows))
        return marker

    def bury(self, everyone: bool = False) -> int:
        """Delete the ghosts whose time is up (all with ``everyone``), each in its own transaction."""
        now, kept, buried = time.monotonic(), [], 0
        for due, rows in self.alive:
            if everyone or due <= now:
                with self.pg.transaction():
                    for table, row_id in rows:
                        self.pg.execute(sql.SQL("delete from {} where id = %s").format(self.table(table)), [row_id])
                buried += 1
            else:
                kept.append((due, rows))
        self.alive = kept
        return buried


# -- the process ----------------------------------------------------------------------------------------------


class _Stop:
    requested = False


def _on_signal(signum, frame) -> None:
    _Stop.requested = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--min-ms", type=float, default=20)
    parser.add_argument("--max-ms", type=float, default=150)
    parser.add_argument("--count", type=int, default=None, help="stop after this many writes")
    parser.add_argument("--stop-file", type=Path, default=None, help="stop once this file exists")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long whatever happens")
    parser.add_argument("--ghost-log", type=Path, default=None)
    parser.add_argument("--dsn", default="", help="libpq conninfo (default: the PG* environment variables)")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    deadline = time.monotonic() + args.seconds
    writes = errors = 0
    with psycopg.connect(args.dsn, autocommit=True, application_name="app_writer") as pg:
        app = App(pg, args.schema, args.seed, args.ghost_log)
        print("ready", flush=True)

        def stopping() -> bool:
            return (
                _Stop.requested
                or (args.count is not None and writes >= args.count)
                or (args.stop_file is not None and args.stop_file.exists())
                or time.monotonic() > deadline
            )

        while not stopping():
            try:
                app.write()
                app.bury()
            except psycopg.errors.OperationalError as exc:  # a deadlock, a lock or statement timeout: go on
                errors += 1
                print(f"app_writer: write failed, going on: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            writes += 1
            time.sleep(app.rng.uniform(args.min_ms, args.max_ms) / 1000)
        for attempt in range(20):  # no ghost outlives the writer
            try:
                app.bury(everyone=True)
                break
            except psycopg.errors.OperationalError as exc:
                print(f"app_writer: burying the ghosts failed ({exc}), attempt {attempt + 1}", file=sys.stderr)
                time.sleep(0.1)
    print(json.dumps({"writes": writes, "kinds": app.kinds, "ghosts": app.ghosts, "errors": errors}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
