"""The legacy tables' changes from the write-ahead log, where the server offers it (spec §10).

A sync round (and a catch-up) must find the users changed since the dry-run state read the legacy
tables. Without a change stream that takes the per-owner digests of every row (orchestrator/changes.py):
a scan of the three tables every round. Where the server offers logical decoding (``wal_level =
logical``, a role that may create a replication slot, legacy tables whose deletes name their primary
key), a logical replication slot with the ``test_decoding`` plugin (shipped with PostgreSQL) gives the
committed changes since a position instead, read over an ordinary connection; nothing is written to a
legacy table.

How it keeps one snapshot per run (orchestrator/snapshot.py):
- The slot is made when first needed (the first catch-up or round after a dry run) over a replication
  connection that exports its snapshot; that run compares the digests in that exported snapshot, so the
  copy of the legacy rows is, exactly, the legacy data at the slot's start.
- Each later run reads the committed changes since the recorded position, in commit order, applies
  them to the copy (a row's new values; an update's unchanged TOASTed value stays the copy's; a delete's
  owner is the copy's), and records the new position, in one transaction: the copy is then the legacy
  data as of that commit, one snapshot again. The owners changed are those of every changed row before
  and after (its user through its context profile, or the orphan Profile itself), and the users of the
  reviewers' decisions that changed. Reading a changed user's rows reads the copy, indexed by user:
  never the legacy tables, which have no index on ``"userId"``.
- The slot is advanced to the position only after that transaction commits; a change read twice (a run
  killed in between) is skipped by its position.
- A slot that is missing or invalidated (``max_slot_wal_keep_size``) makes the next run compare every
  owner's digests again (never a missed change) and make a new slot; so do a TRUNCATE of a legacy table
  and a delete that names no key.
The digests the states record for the owners a stream run rebuilt name the stream's position, and are
never equal to one taken from rows (changes.streamed): whatever a later comparison of digests finds,
those owners differ, and are rebuilt.

``MIGRATION_CHANGE_SOURCE``: ``auto`` (the default: the stream where offered, else the digests), ``wal``
(refuse to run without the stream) or ``digests`` (never the stream).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator

import psycopg
from psycopg import sql

from orchestrator import counts, db, decision_store, decoding
from orchestrator.config import ConnInfo, Settings
from orchestrator.decoding import DELETED, Row, StreamGap
from orchestrator.errors import Busy, OrchestratorError

PLUGIN = "test_decoding"
SOURCE_VAR = "MIGRATION_CHANGE_SOURCE"
SOURCES = ("auto", "wal", "digests")
WARN_VAR = "MIGRATION_SLOT_WARN_BYTES"
DEFAULT_WARN_BYTES = 1 << 30  # `sync` warns when the slot retains more WAL than this
TABLE = "change_stream"  # the metadata table of the slot and the position the copy is at
OWNERS = "stream_owners"  # ... and of the owners changed in the copy that the dry-run state has not rebuilt yet
LEGACY = ("User", "ContextProfile", "Profile", "ChatMessage")  # the copy's tables the stream keeps current


# -- is it offered ----------------------------------------------------------------------------------------


def choice() -> str:
    value = (os.environ.get(SOURCE_VAR) or "auto").strip().lower()
    if value not in SOURCES:
        raise OrchestratorError(f"{SOURCE_VAR} must be one of {', '.join(SOURCES)}, not {value!r}")
    return value


def not_offered(pg: psycopg.Connection, settings: Settings) -> str | None:
    """Why the change stream is not used here (None: it is): the setting, the server, the role or the
    tables. With ``MIGRATION_CHANGE_SOURCE=wal``, a reason is an error instead."""
    wanted = choice()
    if wanted == "digests":
        return f"{SOURCE_VAR}=digests"
    reason = _reason(pg, settings)
    if reason is not None and wanted == "wal":
        raise OrchestratorError(f"{SOURCE_VAR}=wal, but the change stream is not available: {reason}")
    return reason


def _reason(pg: psycopg.Connection, settings: Settings) -> str | None:
    level = pg.execute("show wal_level").fetchone()[0]
    if level != "logical":
        return f"the server's wal_level is {level}, not logical (docs/cutover.md)"
    allowed = pg.execute("select rolsuper or rolreplication from pg_roles where rolname = current_user").fetchone()
    if not (allowed and allowed[0]):
        return "the role may not create a replication slot (it needs the REPLICATION attribute; docs/cutover.md)"
    for table in LEGACY:
        identity = pg.execute(
            "select c.relreplident, exists (select from pg_index as i join pg_attribute as a"
            " on a.attrelid = i.indrelid and a.attnum = any(i.indkey) where i.indrelid = c.oid and i.indisprimary"
            " and i.indnatts = 1 and a.attname = 'id')"
            " from pg_class as c join pg_namespace as n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = %s",
            [settings.legacy_schema, table],
        ).fetchone()
        if identity is None or not (identity[0] == "f" or (identity[0] == "d" and identity[1])):
            return (
                f'the legacy table {settings.legacy_schema}."{table}" has no primary key on "id" (a delete would '
                f"not name its row)"
            )
    return None


def slot_name(pg: psycopg.Connection, settings: Settings) -> str:
    """The slot of this database's metadata schema (slots belong to the whole server)."""
    digest = hashlib.sha256(f"{pg.info.dbname}\0{settings.meta_schema}".encode()).hexdigest()[:24]
    return f"orchestrator_{digest}"


# -- the slot and the recorded position ---------------------------------------------------------------------


def _table(settings: Settings) -> sql.Identifier:
    return sql.Identifier(settings.meta_schema, TABLE)


def recorded(pg: psycopg.Connection, settings: Settings) -> tuple[str, str] | None:
    """(slot, position) the copy of the legacy rows is at, if a stream follows it."""
    row = pg.execute(sql.SQL("select slot_name, position::text from {}").format(_table(settings))).fetchone()
    return None if row is None else (row[0], row[1])


def record(pg: psycopg.Connection, settings: Settings, slot: str, position: str, *, created_now: bool = False) -> None:
    """Inside the transaction that brought the copy to ``position``."""
    pg.execute(sql.SQL("delete from {}").format(_table(settings)))
    if created_now:
        # the copy made anew, or a new slot: a comparison of digests (this run's) finds what was pending
        pg.execute(sql.SQL("delete from {}").format(sql.Identifier(settings.meta_schema, OWNERS)))
    pg.execute(
        sql.SQL("insert into {} (slot_name, position) values (%s, %s::pg_lsn)").format(_table(settings)),
        [slot, position],
    )


def pending_owners(pg: psycopg.Connection, settings: Settings, users: list[str], profiles: list[str]) -> tuple:
    """Inside the run's transaction: ``users`` and ``profiles`` (just changed in the copy) join the owners the
    dry-run state has not rebuilt yet; all of those, in id order: (users, orphan Profiles)."""
    table = sql.Identifier(settings.meta_schema, OWNERS)
    pg.execute(
        sql.SQL(
            "insert into {} (owner_kind, owner_id) select kind, unnest(ids) from (values ('user', %s::text[]),"
            " ('profile', %s::text[])) as owned (kind, ids) on conflict do nothing"
        ).format(table),
        [users, profiles],
    )
    rows = pg.execute(
        sql.SQL('select owner_kind, owner_id from {} order by owner_kind, owner_id collate "C"').format(table)
    ).fetchall()
    return [o for k, o in rows if k == "user"], [o for k, o in rows if k == "profile"]


def rebuilt(pg: psycopg.Connection, settings: Settings, users: list[str], profiles: list[str]) -> None:
    """Inside the transaction that records the dry-run state's reads of these owners: no longer pending."""
    if not db.table_exists(pg, settings.meta_schema, OWNERS):
        return
    pg.execute(
        sql.SQL(
            "delete from {} as o using (select 'user' as kind, unnest(%s::text[]) as id union all"
            " select 'profile', unnest(%s::text[])) as done where o.owner_kind = done.kind and o.owner_id = done.id"
        ).format(sql.Identifier(settings.meta_schema, OWNERS)),
        [users, profiles],
    )


def health(pg: psycopg.Connection, slot: str) -> str | None:
    """Why the slot cannot be read (None: it can)."""
    row = pg.execute("select wal_status, active from pg_replication_slots where slot_name = %s", [slot]).fetchone()
    if row is None:
        return f"the replication slot {slot} is missing (dropped)"
    if row[0] == "lost":
        return f"the replication slot {slot} was invalidated (its WAL passed max_slot_wal_keep_size)"
    return None


def retained_bytes(pg: psycopg.Connection, slot: str) -> int | None:
    row = pg.execute(
        "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint from pg_replication_slots"
        " where slot_name = %s",
        [slot],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def warn_bytes() -> int:
    value = os.environ.get(WARN_VAR)
    if not value:
        return DEFAULT_WARN_BYTES
    try:
        return int(value)
    except ValueError:
        raise OrchestratorError(f"{WARN_VAR} must be a number of bytes, not {value!r}") from None


def drop(pg: psycopg.Connection, settings: Settings) -> str | None:
    """Drop this metadata schema's slot (and forget its position): the name dropped, None if there was none."""
    name = slot_name(pg, settings)
    if db.table_exists(pg, settings.meta_schema, TABLE):
        pg.execute(sql.SQL("delete from {}").format(_table(settings)))
        pg.execute(sql.SQL("delete from {}").format(sql.Identifier(settings.meta_schema, OWNERS)))
    if pg.execute("select from pg_replication_slots where slot_name = %s", [name]).fetchone() is None:
        return None
    try:
        pg.execute("select pg_drop_replication_slot(%s)", [name])
    except psycopg.errors.ObjectInUse:
        raise Busy(f"the replication slot {name} is in use by another session: try again") from None
    return name


@dataclasses.dataclass(frozen=True)
class Created:
    slot: str
    position: str  # the slot's consistent point: the exported snapshot sees every commit before it
    snapshot: str  # the exported snapshot's name, valid while the block runs


@contextlib.contextmanager
def created(pg: psycopg.Connection, conn: ConnInfo, settings: Settings) -> Iterator[Created]:
    """A new slot (the old one dropped), and its exported snapshot for the block to import first thing
    (``set transaction snapshot``). Raises StreamGap when the server refuses a replication connection."""
    drop(pg, settings)
    name = slot_name(pg, settings)
    try:
        replication = psycopg.connect(
            **conn.kwargs(), autocommit=True, replication="database", application_name="orchestrator slot"
        )
    except psycopg.OperationalError as exc:
        raise StreamGap(f"the server refused a replication connection ({' '.join(str(exc).split())[:200]})") from None
    with replication:
        syntax = "(SNAPSHOT 'export')" if replication.info.server_version >= 150000 else "EXPORT_SNAPSHOT"
        # a replication command takes the simple query protocol only (libpq's PQexec); the name is ours
        # (slot_name: letters, digits and "_"), never a user's
        result = replication.pgconn.exec_(f"CREATE_REPLICATION_SLOT {name} LOGICAL {PLUGIN} {syntax}".encode())
        if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            raise StreamGap(f"could not create the replication slot: {result.error_message.decode().strip()}")
        yield Created(name, result.get_value(0, 1).decode(), result.get_value(0, 2).decode())


def advance(pg: psycopg.Connection, slot: str, position: str) -> None:
    """After the transaction that recorded ``position`` committed: the slot may free the WAL before it."""
    with contextlib.suppress(psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
        pg.execute("select pg_replication_slot_advance(%s, %s::pg_lsn)", [slot, position])


# -- reading and applying the changes -----------------------------------------------------------------------


@dataclasses.dataclass
class Read:
    position: str | None  # the last commit read (None: nothing new)
    net: dict[tuple[str, str], Row | None]  # (table, key) -> the row now, or DELETED
    decision_users: set[str]
    transactions: int


def read(pg: psycopg.Connection, settings: Settings, slot: str, after: str) -> Read:
    """The committed changes of the legacy tables (and of the reviewers' decisions) since ``after``, folded
    into each row's net change, in commit order. Peeked, not consumed: see advance()."""
    names = {_printed(pg, settings.legacy_schema, table): table for table in LEGACY} | {
        _printed(pg, settings.meta_schema, decision_store.TABLE): decision_store.TABLE
    }
    prefixes = [f"table {name}: " for name in names]
    _flush(pg, settings)
    try:
        return _read(pg, slot, after, names, prefixes)
    except psycopg.errors.ObjectInUse:
        raise Busy(f"the replication slot {slot} is in use by another session: try again") from None


def _read(pg: psycopg.Connection, slot: str, after: str, names: dict[str, str], prefixes: list[str]) -> Read:
    net: dict[tuple[str, str], Row | None] = {}
    decision_users: set[str] = set()
    pending: list[tuple[str, str]] = []
    position, transactions = None, 0
    with pg.transaction(), pg.cursor(name="orchestrator_stream") as cursor:
        cursor.itersize = 2000
        cursor.execute(
            "select lsn::text, lsn > %s::pg_lsn, data from pg_logical_slot_peek_changes(%s, null, null,"
            " 'skip-empty-xacts', '1', 'include-xids', '0')"
            " where data = 'COMMIT' or exists (select from unnest(%s::text[]) as p where starts_with(data, p))",
            [after, slot, prefixes],
        )
        for lsn, new, data in cursor:
            if data != "COMMIT":
                pending.append((lsn, data))
                continue
            if new and pending:
                for _, line in pending:
                    decoding.fold(net, decision_users, names, line)
                transactions += 1
            if new:
                position = lsn
            pending = []
    return Read(position, net, decision_users, transactions)


def _flush(pg: psycopg.Connection, settings: Settings) -> None:
    """Flush the WAL written so far: decoding reads only flushed WAL, and a transaction committed with
    ``synchronous_commit = off`` is visible before its commit is flushed. A transaction that wrote, committed
    synchronously, flushes everything before its commit record (one that only took an id writes no WAL)."""
    with pg.transaction():
        pg.execute("set local synchronous_commit = on")
        pg.execute(sql.SQL("update {} set updated_at = clock_timestamp()").format(_table(settings)))


def _printed(pg: psycopg.Connection, schema: str, table: str) -> str:
    """How test_decoding names a table: quote_identifier of each part."""
    return pg.execute("select quote_ident(%s) || '.' || quote_ident(%s)", [schema, table]).fetchone()[0]


def apply(pg: psycopg.Connection, settings: Settings, changes_read: Read) -> tuple[list[str], list[str]]:
    """Inside the run's transaction: the net changes put in the copy of the legacy rows; the owners they
    touched, before and after: (user ids, orphan Profile ids)."""
    owners = sql.Identifier("pg_temp", "stream_owners")
    net_table = sql.Identifier("pg_temp", "stream_net")
    pg.execute(sql.SQL("drop table if exists {}, {}").format(owners, net_table))
    pg.execute(sql.SQL("create temporary table {} (owner_kind text, owner_id text)").format(owners))
    pg.execute(
        sql.SQL(
            "create temporary table {} (table_name text, key text, deleted boolean, row_values jsonb,"
            " keep text[], keep_from text)"
        ).format(net_table)
    )
    with pg.cursor().copy(
        sql.SQL("copy {} (table_name, key, deleted, row_values, keep, keep_from) from stdin").format(net_table)
    ) as copy:
        for (table, key), row in changes_read.net.items():
            if row is DELETED:
                copy.write_row([table, key, True, None, None, None])
            else:
                copy.write_row([table, key, False, json.dumps(row.values), sorted(row.keep), row.keep_from])
    pg.execute(sql.SQL("analyze {}").format(net_table))
    _owners(pg, settings, net_table, owners)  # before
    _note_context_profiles(pg, settings, net_table)
    for table in LEGACY:
        _apply_table(pg, settings, net_table, table)
    _owners(pg, settings, net_table, owners)  # after
    _note_context_profiles(pg, settings, net_table)
    pg.execute(
        sql.SQL("insert into {} select 'user', unnest(%s::text[])").format(owners),
        [sorted(changes_read.decision_users)],
    )
    rows = pg.execute(
        sql.SQL(
            "select owner_kind, owner_id from {} where owner_id is not null"
            ' group by owner_kind, owner_id order by owner_kind, owner_id collate "C"'
        ).format(owners)
    ).fetchall()
    return [o for k, o in rows if k == "user"], [o for k, o in rows if k == "profile"]


def _owners(pg: psycopg.Connection, settings: Settings, net_table: sql.Identifier, owners: sql.Identifier) -> None:
    """The owners of the copy's rows the changes touch, as the copy holds them now: changed users; a
    changed or moved context profile's user, and its Profiles' (which may become, or stop being, orphans);
    a changed Profile's user, or the Profile itself when it is an orphan."""
    copy = {table: sql.Identifier(settings.snapshot_schema, table) for table in LEGACY}
    pg.execute(
        sql.SQL(
            "insert into {owners} (owner_kind, owner_id)"
            " select 'user', u.id from {user} as u join {net} as n on n.table_name = 'User' and u.id = n.key"
            " union all"
            " select 'user', cp.\"userId\" from {context_profile} as cp join {net} as n"
            " on n.table_name = 'ContextProfile' and cp.id in (n.key, n.keep_from)"
            " union all"
            " select case when cp.id is null then 'profile' else 'user' end, coalesce(cp.\"userId\", p.id)"
            " from (select p.* from {profile} as p join {net} as n"
            " on n.table_name = 'Profile' and p.id in (n.key, n.keep_from)"
            " union select p.* from {profile} as p join {net} as n on n.table_name = 'ContextProfile'"
            ' and p."contextProfileId" in (n.key, n.keep_from)) as p'
            ' left join {context_profile} as cp on cp.id = p."contextProfileId"'
        ).format(
            owners=owners,
            net=net_table,
            user=copy["User"],
            context_profile=copy["ContextProfile"],
            profile=copy["Profile"],
        )
    )


def _note_context_profiles(pg: psycopg.Connection, settings: Settings, net_table: sql.Identifier) -> None:
    """The context profiles whose chat-message counts the changes touch, as the copy holds them now: those
    the changed chat messages name, and the changed context profiles that messages name (one no message
    names has no count to change; orchestrator/counts.py)."""
    counts.note(
        pg,
        settings.meta_schema,
        sql.SQL(
            'select m."contextProfileId" from {chat_message} as m join {net} as n'
            " on n.table_name = 'ChatMessage' and m.id in (n.key, n.keep_from)"
            ' union all select m."contextProfileId" from {chat_message} as m where m."contextProfileId" in'
            " (select unnest(array[n.key, n.keep_from]) from {net} as n where n.table_name = 'ContextProfile')"
        ).format(chat_message=sql.Identifier(settings.snapshot_schema, "ChatMessage"), net=net_table),
    )


def _apply_table(pg: psycopg.Connection, settings: Settings, net_table: sql.Identifier, table: str) -> None:
    target = sql.Identifier(settings.snapshot_schema, table)
    columns = pg.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute as a"
        " join pg_class as c on c.oid = a.attrelid join pg_namespace as n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped order by a.attnum",
        [settings.snapshot_schema, table],
    ).fetchall()
    types = dict(columns)
    key_type = sql.SQL(types["id"])  # the server's own spelling of the type (format_type), never user input
    values = sql.SQL(", ").join(
        sql.SQL(
            "case when {name} = any(n.keep) then o.{column}"
            " else cast(n.row_values ->> {name} as {type}) end as {column}"
        ).format(name=sql.Literal(name), column=sql.Identifier(name), type=sql.SQL(type_))
        for name, type_ in columns
    )
    new_rows = sql.Identifier("pg_temp", "stream_rows")
    pg.execute(sql.SQL("drop table if exists {}").format(new_rows))
    pg.execute(
        sql.SQL(
            "create temporary table {new_rows} as select {values} from {net} as n"
            " left join {target} as o on o.id = cast(n.keep_from as {key_type})"
            " where n.table_name = {table} and not n.deleted"
        ).format(
            new_rows=new_rows, values=values, net=net_table, target=target, key_type=key_type, table=sql.Literal(table)
        )
    )
    pg.execute(
        sql.SQL(
            "delete from {target} as t using {net} as n"
            " where n.table_name = {table} and t.id = cast(n.key as {key_type})"
        ).format(target=target, net=net_table, table=sql.Literal(table), key_type=key_type)
    )
    pg.execute(sql.SQL("insert into {} select * from {}").format(target, new_rows))


def key_index(table: str) -> str:
    return f"{table}_stream_id"


# the copy's chat messages by context profile: a round counts a few context profiles' messages again
# (orchestrator/counts.py); built with the key indexes, after the messages are copied
CHAT_MESSAGE_INDEX = "ChatMessage_stream_context_profile"


def prepare_copy(pg: psycopg.Connection, settings: Settings) -> None:
    """The copy's rows reached by key (the stream names rows by id) as well as by owner, and its chat
    messages by context profile."""
    for table in LEGACY:
        pg.execute(
            sql.SQL("create index if not exists {} on {} (id)").format(
                sql.Identifier(key_index(table)), sql.Identifier(settings.snapshot_schema, table)
            )
        )
    pg.execute(
        sql.SQL('create index if not exists {} on {} ("contextProfileId")').format(
            sql.Identifier(CHAT_MESSAGE_INDEX), sql.Identifier(settings.snapshot_schema, "ChatMessage")
        )
    )
