"""One snapshot per run (spec §10): the legacy rows a run reads, as of one moment.

Every orchestrated run reads the legacy tables through a copy of them in the snapshot schema
(``Settings.snapshot_schema``), never the tables themselves: dbt reads each staging view many times over
minutes (once per model and per test), and the application writes meanwhile. One REPEATABLE READ
transaction copies the rows, takes the per-owner digests of the same moment (orchestrator/changes.py)
and, for a catch-up, finds the owners changed since a reference point; the dbt source ``legacy``
resolves to the copy (dbt.SNAPSHOT_VAR), so staging stays ``source`` → ``renamed`` and
the lineage still shows the legacy tables. What any run read is then, exactly, the legacy data of the
moment whose digests it records: a row inserted and deleted again between two runs is in no output,
and a write during a run is the next round's.

The copy is the dry-run state's: a full dry run makes it anew; a catch-up or a sync round puts the
changed owners' rows of its own moment in place of theirs (and the chat messages, which no digest
covers, anew), so that the copy stays the legacy data as of the dry-run state's latest moment; a
``--user`` rebuild puts its users' rows in place. The copy has the legacy columns (so its rows print,
and fingerprint, exactly as the legacy rows do), except "ChatMessage": only the columns staging reads,
not the message text. It holds personal data: its schema is closed to PUBLIC, like the dry-run schema.
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql

from orchestrator import changes, db, decision_store, fingerprint, metadata
from orchestrator.config import Settings
from orchestrator.errors import CheckFailed

# the legacy tables a run reads, with the columns copied (None: every column)
TABLES: dict[str, tuple[str, ...] | None] = {
    "User": None,
    "ContextProfile": None,
    "Profile": None,
    "ChatMessage": ("id", "contextProfileId", "role", "createdAt"),  # what staging reads: no message text
}
# how an owner's rows are reached in the copy (a catch-up replaces a few owners' rows among millions)
INDEXES = {"ContextProfile": "userId", "Profile": "contextProfileId"}


@dataclasses.dataclass
class Snapshot:
    """What one moment of the legacy tables gave a run: the digests (a temporary table of the session),
    the fingerprint of the rows copied, and for a catch-up the owners changed since its reference."""

    reads: sql.Identifier
    fingerprint: dict | None
    changed: changes.Changes | None = None


def _copy(settings: Settings, table: str) -> sql.Identifier:
    return sql.Identifier(settings.snapshot_schema, table)


def _legacy(settings: Settings, table: str) -> sql.Identifier:
    return sql.Identifier(settings.legacy_schema, table)


def _columns(table: str) -> sql.Composable:
    columns = TABLES[table]
    return sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))


def _begin(pg: psycopg.Connection) -> None:
    """The first statement of the snapshot's transaction: every later one reads the same moment."""
    pg.execute("set transaction isolation level repeatable read")


def _ensure_schema(pg: psycopg.Connection, settings: Settings) -> None:
    schema = sql.Identifier(settings.snapshot_schema)
    if not db.schema_exists(pg, settings.snapshot_schema):
        pg.execute(sql.SQL("create schema if not exists {}").format(schema))
    pg.execute(sql.SQL("revoke all on schema {} from public").format(schema))


def _copy_decisions(pg: psycopg.Connection, settings: Settings) -> None:
    """The reviewers' decisions of the same moment (their digests are the users' too)."""
    target = _copy(settings, decision_store.TABLE)
    if not db.table_exists(pg, settings.meta_schema, decision_store.TABLE):
        pg.execute(sql.SQL("drop table if exists {} cascade").format(target))
        return
    source = decision_store.table(settings.meta_schema)
    if db.table_exists(pg, settings.snapshot_schema, decision_store.TABLE):
        # kept, not dropped: the dry-run schema's staging view reads it
        pg.execute(sql.SQL("truncate {}").format(target))
        pg.execute(sql.SQL("insert into {} select * from {}").format(target, source))
    else:
        pg.execute(sql.SQL("create unlogged table {} as select * from {}").format(target, source))


def take_all(pg: psycopg.Connection, settings: Settings) -> Snapshot:
    """A full dry run's snapshot: the copy made anew from every legacy row, the digests of every owner."""
    with pg.transaction():
        _begin(pg)
        _ensure_schema(pg, settings)
        for table in TABLES:
            # the staging views of the last build read the old copy: dropped with it, the build makes them again
            pg.execute(sql.SQL("drop table if exists {} cascade").format(_copy(settings, table)))
            pg.execute(
                sql.SQL("create unlogged table {} as select {} from {}").format(
                    _copy(settings, table), _columns(table), _legacy(settings, table)
                )
            )
        _copy_decisions(pg, settings)
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema)
    _index(pg, settings)
    return Snapshot(reads, fingerprint.legacy_fingerprint(pg, settings.snapshot_schema))


def take_users(pg: psycopg.Connection, settings: Settings) -> Snapshot:
    """A ``--user`` rebuild's snapshot: the users of the metadata's scope table, their rows put in place of
    theirs in the copy, and their digests (changes.REBUILT)."""
    scope = metadata.scope_table(settings.meta_schema)
    with pg.transaction():
        _begin(pg)
        _ensure_copy(pg, settings)
        _replace_owners(pg, settings, chat_messages="of the owners")
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema, scope, name=changes.REBUILT)
    return Snapshot(reads, fingerprint.legacy_fingerprint(pg, settings.snapshot_schema, scope))


def take_changed(
    pg: psycopg.Connection,
    settings: Settings,
    against: tuple[str, ...],
    *,
    users_only: tuple[str, ...] = (),
    with_fingerprint: bool = False,
) -> Snapshot:
    """A catch-up's (or a sync round's) snapshot: the digests of every owner now, the owners whose digest
    differs from the one each state of ``against`` recorded ("dry_run", "live"; for the states in
    ``users_only``, the users only), written to the metadata's scope tables, and their rows of this same
    moment put in place of theirs in the copy, with every chat message. Nothing is copied when nothing
    changed. ``with_fingerprint``: also the legacy fingerprint of that moment (of the copy, which is then the
    legacy data of that moment). The caller holds the dry-run lock: the copy is the dry-run state's."""
    with pg.transaction():
        _begin(pg)
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema)
        changed = changes.Changes([], [])
        for state in against:
            since = changes.changed_since(pg, settings.meta_schema, state, reads)
            changed = changed | (changes.Changes(since.users, []) if state in users_only else since)
        if changed:
            _ensure_copy(pg, settings, require_rows=True)
            metadata.write_user_scope(pg, settings.meta_schema, changed.users, changed.profiles)
            _replace_owners(pg, settings, chat_messages="all")
    taken = fingerprint.legacy_fingerprint(pg, settings.snapshot_schema) if with_fingerprint and changed else None
    return Snapshot(reads, taken, changed)


def _ensure_copy(pg: psycopg.Connection, settings: Settings, *, require_rows: bool = False) -> None:
    """The copy's tables, with the legacy tables' columns (made empty when there is none yet: a ``--user``
    rebuild before any dry run). A catch-up needs the dry-run state's copy (``require_rows``)."""
    _ensure_schema(pg, settings)
    for table in TABLES:
        target, source = _copy(settings, table), _legacy(settings, table)
        if not db.table_exists(pg, settings.snapshot_schema, table):
            if require_rows:
                raise CheckFailed(
                    f"the dry-run state's copy of the legacy tables ({settings.snapshot_schema}.{table}) is missing "
                    f"(it was dropped, or the dry run was made by an older version of the orchestrator): run "
                    f"`orchestrator dry-run` again; nothing was changed"
                )
            pg.execute(
                sql.SQL("create unlogged table {} as select {} from {} with no data").format(
                    target, _columns(table), source
                )
            )
        elif _column_types(pg, settings.snapshot_schema, table) != _column_types(
            pg, settings.legacy_schema, table, TABLES[table]
        ):
            raise CheckFailed(
                f"the columns of the legacy table {settings.legacy_schema}.{table} changed since the dry run copied "
                f"it: run `orchestrator dry-run` again; nothing was changed"
            )
    _copy_decisions(pg, settings)


def _column_types(pg: psycopg.Connection, schema: str, table: str, only: tuple[str, ...] | None = None) -> list:
    rows = pg.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute as a"
        " join pg_class as c on c.oid = a.attrelid join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped order by a.attnum",
        [schema, table],
    ).fetchall()
    if only is not None:
        order = {name: position for position, name in enumerate(only)}
        rows = sorted((row for row in rows if row[0] in order), key=lambda row: order[row[0]])
    return rows


def _replace_owners(pg: psycopg.Connection, settings: Settings, *, chat_messages: str) -> None:
    """In the copy: the rows of the owners in the metadata's scope tables (users, orphan Profiles) become
    theirs as the legacy tables hold them now (inside the snapshot's transaction). ``chat_messages``:
    "all" copies every chat message anew; "of the owners", those of the owners' context profiles."""
    params = {
        "users": metadata.scope_table(settings.meta_schema),
        "profiles": sql.Identifier(settings.meta_schema, metadata.PROFILE_SCOPE_TABLE),
        "user": _copy(settings, "User"),
        "context_profile": _copy(settings, "ContextProfile"),
        "profile": _copy(settings, "Profile"),
        "chat_message": _copy(settings, "ChatMessage"),
        "legacy_user": _legacy(settings, "User"),
        "legacy_context_profile": _legacy(settings, "ContextProfile"),
        "legacy_profile": _legacy(settings, "Profile"),
        "legacy_chat_message": _legacy(settings, "ChatMessage"),
        "chat_columns": _columns("ChatMessage"),
        "new_context_profiles": sql.Identifier("pg_temp", "snapshot_context_profiles"),
        "new_profiles": sql.Identifier("pg_temp", "snapshot_profiles"),
        "old_context_profiles": sql.Identifier("pg_temp", "snapshot_old_context_profiles"),
    }
    statements = [
        # the owners' rows now: their context profiles, the Profiles of those, and the scope's orphan Profiles
        # (a Profile whose context profile exists belongs to that profile's user, who is then in the scope)
        "drop table if exists {new_context_profiles}, {new_profiles}, {old_context_profiles}",
        "create temporary table {new_context_profiles} as select * from {legacy_context_profile} as cp"
        ' where cp."userId" in (select user_id from {users})',
        "create temporary table {new_profiles} as select p.* from {legacy_profile} as p"
        ' where p."contextProfileId" in (select id from {new_context_profiles})'
        " or (p.id in (select legacy_profile_id from {profiles})"
        ' and not exists (select from {legacy_context_profile} as cp where cp.id = p."contextProfileId"))',
        "create temporary table {old_context_profiles} as select id from {context_profile}"
        ' where "userId" in (select user_id from {users})',
        # out with the rows the copy holds of them (and any copy of a row that comes back in)
        'delete from {profile} as p where p."contextProfileId" in (select id from {old_context_profiles})'
        " or p.id in (select legacy_profile_id from {profiles}) or p.id in (select id from {new_profiles})",
        'delete from {context_profile} as cp where cp."userId" in (select user_id from {users})'
        " or cp.id in (select id from {new_context_profiles})",
        "delete from {user} as u where u.id in (select user_id from {users})",
        "insert into {user} select * from {legacy_user} as u where u.id in (select user_id from {users})",
        "insert into {context_profile} select * from {new_context_profiles}",
        "insert into {profile} select * from {new_profiles}",
    ]
    if chat_messages == "all":
        statements += [
            "truncate {chat_message}",
            "insert into {chat_message} select {chat_columns} from {legacy_chat_message}",
        ]
    else:
        statements += [
            'delete from {chat_message} as m where m."contextProfileId" in (select id from {old_context_profiles})'
            ' or m."contextProfileId" in (select id from {new_context_profiles})',
            "insert into {chat_message} select {chat_columns} from {legacy_chat_message} as m"
            ' where m."contextProfileId" in (select id from {new_context_profiles})',
        ]
    for statement in statements:
        pg.execute(sql.SQL(statement).format(**params))
    for table in TABLES:
        pg.execute(sql.SQL("analyze {}").format(_copy(settings, table)))


def _index(pg: psycopg.Connection, settings: Settings) -> None:
    """Index the copy by owner (after the load: one bulk build) and give the planner its statistics."""
    for table, column in INDEXES.items():
        pg.execute(sql.SQL("create index on {} ({})").format(_copy(settings, table), sql.Identifier(column)))
    for table in TABLES:
        pg.execute(sql.SQL("analyze {}").format(_copy(settings, table)))


def drop(pg: psycopg.Connection, settings: Settings) -> None:
    """Remove the copy (its data is personal): nothing but the dry-run state reads it."""
    pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(settings.snapshot_schema)))
