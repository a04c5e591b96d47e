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

import contextlib
import dataclasses

import psycopg
from psycopg import sql

from orchestrator import changes, counts, db, decision_store, fingerprint, metadata, stream
from orchestrator.config import ConnInfo, Settings
from orchestrator.errors import Busy, CheckFailed
from orchestrator.faults import fault_point

# the legacy tables a run reads, with the columns copied (None: every column)
TABLES: dict[str, tuple[str, ...] | None] = {
    "User": None,
    "ContextProfile": None,
    "Profile": None,
    "ChatMessage": ("id", "contextProfileId", "role", "createdAt"),  # what staging reads: no message text
}
# how an owner's rows are reached in the copy (a catch-up replaces a few owners' rows among millions)
INDEXES = {"ContextProfile": "userId", "Profile": "contextProfileId"}
# The copy is written once in bulk, then changed a few rows at a time: autovacuum's vacuums after inserts
# (PostgreSQL 13 on) would read every page of it while the dry run builds from it, to set visibility bits
# nothing needs. They are off for the copy; vacuums after deletes and updates, and the anti-wraparound
# ones, stay as the server has them (macros/analyze.sql does the same for the dry run's tables).
NO_INSERT_VACUUM = sql.SQL("autovacuum_vacuum_insert_threshold = -1")


@dataclasses.dataclass
class Snapshot:
    """What one moment of the legacy tables gave a run: the digests (a temporary table of the session),
    the fingerprint of the rows copied, and for a catch-up the owners changed since its reference."""

    reads: sql.Identifier
    fingerprint: dict | None
    changed: changes.Changes | None = None
    source: str = "digests"  # how the changed owners were found: "wal" (the change stream) or "digests"
    note: str | None = None  # why the digests, or what the run did to the stream
    retained_bytes: int | None = None  # the WAL the change stream's slot holds back
    transactions: int = 0  # the legacy transactions the stream read

    def source_dict(self) -> dict:
        return {
            "source": self.source,
            "note": self.note,
            "slot_retained_bytes": self.retained_bytes,
            "slot_warn_bytes": stream.warn_bytes() if self.retained_bytes is not None else None,
            "transactions_read": self.transactions,
        }


def _copy(settings: Settings, table: str) -> sql.Identifier:
    return sql.Identifier(settings.snapshot_schema, table)


def _legacy(settings: Settings, table: str) -> sql.Identifier:
    return sql.Identifier(settings.legacy_schema, table)


def _columns(table: str) -> sql.Composable:
    columns = TABLES[table]
    return sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))


def _begin(pg: psycopg.Connection, exported: str | None = None) -> None:
    """The first statements of the snapshot's transaction: every later one reads the same moment (that of
    the ``exported`` snapshot, when given: a new replication slot's start)."""
    pg.execute("set transaction isolation level repeatable read")
    if exported is not None:
        pg.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(exported)))


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
        pg.execute(
            sql.SQL("create unlogged table {} with ({}) as select * from {}").format(target, NO_INSERT_VACUUM, source)
        )


def take_all(pg: psycopg.Connection, settings: Settings) -> Snapshot:
    """A full dry run's snapshot: the copy made anew from every legacy row, the digests of every owner.
    (The change stream's slot is made after the build: anchor().)"""
    with contextlib.suppress(psycopg.Error, Busy):  # the copy is made anew: an older slot's position is not its
        stream.drop(pg, settings)
    reads = _copy_all(pg, settings, None)
    _index(pg, settings)
    return Snapshot(reads, fingerprint.legacy_fingerprint(pg, settings.snapshot_schema))


def anchor(pg: psycopg.Connection, settings: Settings, conn: ConnInfo) -> dict:
    """Where the server offers the change stream: (re)make its slot now, after a bulk write of our own (a
    dry run's build, a promote of every user), whose WAL the next round would otherwise decode for nothing.
    In the new slot's exported snapshot, every owner's digests are compared with the dry-run state's; the
    owners changed since (by the application, meanwhile) get their rows of that moment in the copy and wait,
    recorded, for the next catch-up or round to rebuild them. The copy is then the legacy data at the slot's
    start. Returns how changes will be found (Snapshot.source_dict); the caller holds the dry-run lock."""
    reason = stream.not_offered(pg, settings)
    if reason is not None:
        return {
            "source": "digests",
            "note": reason,
            "slot_retained_bytes": None,
            "slot_warn_bytes": None,
            "transactions_read": 0,
        }
    try:
        with stream.created(pg, conn, settings) as made:
            taken = _take_by_digests(pg, settings, ("dry_run",), (), False, made, pending=True)
    except stream.StreamGap as gap:
        return {
            "source": "digests",
            "note": str(gap),
            "slot_retained_bytes": None,
            "slot_warn_bytes": None,
            "transactions_read": 0,
        }
    stream.prepare_copy(pg, settings)
    pending = taken.changed.describe() if taken.changed else "nothing"
    taken.source, taken.note = "wal", f"made the change stream's slot ({pending} changed meanwhile, to rebuild)"
    return taken.source_dict()


def _copy_all(pg: psycopg.Connection, settings: Settings, made: stream.Created | None) -> sql.Identifier:
    with pg.transaction():
        _begin(pg, made.snapshot if made else None)
        _ensure_schema(pg, settings)
        for table in TABLES:
            # the staging views of the last build read the old copy: dropped with it, the build makes them again
            pg.execute(sql.SQL("drop table if exists {} cascade").format(_copy(settings, table)))
            pg.execute(
                sql.SQL("create unlogged table {} with ({}) as select {} from {}").format(
                    _copy(settings, table), NO_INSERT_VACUUM, _columns(table), _legacy(settings, table)
                )
            )
        _copy_decisions(pg, settings)
        counts.forget(pg, settings.meta_schema)  # the dry run counts every chat message
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema)
        if made:
            stream.record(pg, settings, made.slot, made.position, created_now=True)
    return reads


def take_users(pg: psycopg.Connection, settings: Settings, conn: ConnInfo) -> Snapshot:
    """A ``--user`` rebuild's snapshot: the users of the metadata's scope table, their rows put in place of
    theirs in the copy, and their digests (changes.REBUILT). With the change stream, the whole copy is
    brought to the stream's last commit instead (what changed for other users waits, recorded, for the
    dry-run state's next catch-up), and the users' rows are read from it: no legacy table is scanned."""
    scope = metadata.scope_table(settings.meta_schema)
    followed = stream.recorded(pg, settings) if stream.not_offered(pg, settings) is None else None
    if followed is not None and stream.health(pg, followed[0]) is None:
        with contextlib.suppress(stream.StreamGap):
            return _take_users_from_stream(pg, settings, followed, scope)
    with pg.transaction():
        _begin(pg)
        _ensure_copy(pg, settings)
        _replace_owners(pg, settings, chat_messages="of the owners")
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema, scope, name=changes.REBUILT)
    return Snapshot(reads, fingerprint.legacy_fingerprint(pg, settings.snapshot_schema, scope))


def _take_users_from_stream(
    pg: psycopg.Connection, settings: Settings, followed: tuple[str, str], scope: sql.Identifier
) -> Snapshot:
    slot, position = followed
    read = stream.read(pg, settings, slot, position)
    with pg.transaction():
        _begin(pg)
        _ensure_copy(pg, settings, require_rows=True)
        users, profiles = stream.apply(pg, settings, read) if read.net or read.decision_users else ([], [])
        stream.pending_owners(pg, settings, users, profiles)
        scope_users = [row[0] for row in pg.execute(sql.SQL("select user_id from {}").format(scope))]
        at = read.position or position
        reads = changes.streamed(pg, changes.Changes(scope_users, []), at, name=changes.REBUILT)
        if read.position is not None:
            stream.record(pg, settings, slot, read.position)
    if read.position is not None:
        stream.advance(pg, slot, read.position)
    taken = Snapshot(reads, fingerprint.legacy_fingerprint(pg, settings.snapshot_schema, scope), source="wal")
    taken.transactions = read.transactions
    return taken


def take_changed(
    pg: psycopg.Connection,
    settings: Settings,
    against: tuple[str, ...],
    *,
    conn: ConnInfo,
    users_only: tuple[str, ...] = (),
    with_fingerprint: bool = False,
) -> Snapshot:
    """A catch-up's (or a sync round's) snapshot: the owners changed since each state of ``against``
    ("dry_run", "live"; for the states in ``users_only``, the users only), written to the metadata's scope
    tables, and their rows of one moment put in place of theirs in the copy. The change source
    (orchestrator/stream.py): the write-ahead log since the copy's position where the server offers it,
    else every owner's digests compared (which, where the stream is offered, also makes its slot). Nothing
    is copied when nothing changed. ``with_fingerprint``: also the legacy fingerprint of that moment (of the
    copy, which is then the legacy data of that moment). The caller holds the dry-run lock: the copy is the
    dry-run state's."""
    reason = stream.not_offered(pg, settings)
    if reason is not None and stream.recorded(pg, settings) is not None:
        with contextlib.suppress(psycopg.Error, Busy):  # it holds WAL back: gone, if the role still may
            stream.drop(pg, settings)
    if reason is None:
        followed = stream.recorded(pg, settings)
        if followed is not None:
            reason = stream.health(pg, followed[0])
            if reason is None:
                try:
                    return _take_from_stream(pg, settings, followed, against, with_fingerprint)
                except stream.StreamGap as gap:
                    reason = f"the change stream cannot say what changed ({gap})"
        try:
            with stream.created(pg, conn, settings) as made:
                taken = _take_by_digests(pg, settings, against, users_only, with_fingerprint, made)
        except stream.StreamGap as gap:
            reason = str(gap)
        else:
            stream.prepare_copy(pg, settings)
            taken.note = "compared every owner's digests and made the change stream's slot" + (
                f" ({reason})" if reason else ""
            )
            return taken
    taken = _take_by_digests(pg, settings, against, users_only, with_fingerprint, None)
    taken.note = reason
    return taken


def _take_by_digests(
    pg: psycopg.Connection,
    settings: Settings,
    against: tuple[str, ...],
    users_only: tuple[str, ...],
    with_fingerprint: bool,
    made: stream.Created | None,
    *,
    pending: bool = False,
) -> Snapshot:
    """The digests of every owner now, compared with each state's, in one transaction (in the snapshot
    ``made`` exported, the new slot's start, then recorded as the copy's position: the chat messages are
    copied anew then, whatever changed). ``pending``: the owners changed are recorded for the next run to
    rebuild (stream.pending_owners), not rebuilt by this one."""
    with pg.transaction():
        _begin(pg, made.snapshot if made else None)
        reads = changes.take(pg, settings.legacy_schema, settings.meta_schema)
        changed = changes.Changes([], [])
        for state in against:
            since = changes.changed_since(pg, settings.meta_schema, state, reads)
            changed = changed | (changes.Changes(since.users, []) if state in users_only else since)
        if changed or made:
            _ensure_copy(pg, settings, require_rows=True)
            metadata.write_user_scope(pg, settings.meta_schema, changed.users, changed.profiles)
            _replace_owners(pg, settings, chat_messages="all")
        if made:
            stream.record(pg, settings, made.slot, made.position, created_now=True)
        if pending:
            stream.pending_owners(pg, settings, changed.users, changed.profiles)
    taken = fingerprint.legacy_fingerprint(pg, settings.snapshot_schema) if with_fingerprint and changed else None
    return Snapshot(reads, taken, changed, source="digests")


def _take_from_stream(
    pg: psycopg.Connection,
    settings: Settings,
    followed: tuple[str, str],
    against: tuple[str, ...],
    with_fingerprint: bool,
) -> Snapshot:
    """The changes since the copy's position, applied to it; the owners they touched (and, against the
    live tables' reads, the users those do not reflect yet: held back, left out) are the ones changed. The
    reads recorded for them name the stream's position (changes.streamed)."""
    slot, position = followed
    read = stream.read(pg, settings, slot, position)
    fault_point("stream:read")
    with pg.transaction():
        _begin(pg)
        users, profiles = [], []
        if read.net or read.decision_users:
            _ensure_copy(pg, settings, require_rows=True)
            users, profiles = stream.apply(pg, settings, read)
        # with those a run killed before the dry-run state recorded them
        changed = changes.Changes(*stream.pending_owners(pg, settings, users, profiles))
        if "live" in against:
            changed = changed | changes.Changes(changes.lagging_users(pg, settings.meta_schema), [])
        reads = changes.streamed(pg, changed, read.position or position)
        if changed:
            _ensure_copy(pg, settings, require_rows=True)
            metadata.write_user_scope(pg, settings.meta_schema, changed.users, changed.profiles)
        if read.position is not None:
            stream.record(pg, settings, slot, read.position)
        fault_point("stream:applied")
    fault_point("stream:committed")
    if read.position is not None:
        stream.advance(pg, slot, read.position)
    taken = fingerprint.legacy_fingerprint(pg, settings.snapshot_schema) if with_fingerprint and changed else None
    retained = stream.retained_bytes(pg, slot)
    return Snapshot(reads, taken, changed, source="wal", retained_bytes=retained, transactions=read.transactions)


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
                sql.SQL("create unlogged table {} with ({}) as select {} from {} with no data").format(
                    target, NO_INSERT_VACUUM, _columns(table), source
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
    "all" compares every chat message with the legacy table and replaces those that differ (no digest covers
    them); "of the owners", those of the owners' context profiles."""
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
        "chat_changed": sql.Identifier("pg_temp", "snapshot_chat_messages_changed"),
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
            # every chat message the copy holds otherwise than the legacy table now (new, gone, changed), with
            # the legacy row and the context profile the copy's named: one comparison, then only those rows
            # replaced (the copy's indexes stay; the counts of their context profiles are counted again)
            "drop table if exists {chat_changed}",
            # the planner expects every message out of the join, so a plan on one core that spares moving them
            # between processes; few differ: a parallel join took 10.2-10.8 s for 11.5M messages, not 13.1-13.7 s
            "set local parallel_tuple_cost = 0",
            'create temporary table {chat_changed} as select c.id as copy_id, c."contextProfileId" as named_before, l.*'
            " from (select {chat_columns} from {legacy_chat_message}) as l full join {chat_message} as c on c.id = l.id"
            " where l.id is null or c.id is null or row(l.*) is distinct from row(c.*)",
            "reset parallel_tuple_cost",
            "delete from {chat_message} as m where m.id in (select copy_id from {chat_changed})",
            "insert into {chat_message} select {chat_columns} from {chat_changed} where id is not null",
        ]
        touched = sql.SQL('select named_before from {} union all select "contextProfileId" from {}').format(
            params["chat_changed"], params["chat_changed"]
        )
    else:
        statements += [
            'delete from {chat_message} as m where m."contextProfileId" in (select id from {old_context_profiles})'
            ' or m."contextProfileId" in (select id from {new_context_profiles})',
            "insert into {chat_message} select {chat_columns} from {legacy_chat_message} as m"
            ' where m."contextProfileId" in (select id from {new_context_profiles})',
        ]
        touched = sql.SQL("select null::text where false")
    for statement in statements:
        pg.execute(sql.SQL(statement).format(**params))
    # the context profiles whose chat-message counts may have changed: the owners' (their user or intents)
    # and, with every message compared, those of the messages that changed
    counts.note(
        pg,
        settings.meta_schema,
        sql.SQL(
            "select id from {old_context_profiles} union all select id from {new_context_profiles} union all {touched}"
        ).format(touched=touched, **params),
    )
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
