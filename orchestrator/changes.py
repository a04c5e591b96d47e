"""What a run read of the legacy tables, per owner, and which owners changed since (spec §10).

Change detection only reads: no trigger, no column, nothing written to a legacy table. An *owner* is
- a user id: its "User" row, every "ContextProfile" whose "userId" is that id (also when no such user
  exists: the orphan context profiles of a dangling id) and every "Profile" those name; or
- an orphan "Profile" (its "contextProfileId" names no context profile), by its own id.

An owner's digest sums a 64-bit hash of each of its rows' table, id and version (``xmin``, the
transaction that wrote that row version). An insert, an update of any column (even to the same
value), a delete, or a row moving to another owner changes the digest of every owner involved. A run
takes the digests in the same transaction, of the same moment, as the copy of the legacy rows it reads
(orchestrator/snapshot.py); the owners whose digests differ later (or appear, or vanish) are the ones
changed since. So whatever a run read is what its digests describe: a row inserted and deleted again
between two reference points is in neither, nor in any output, and a row a run read that is deleted
later changes its owner's digest, which the next catch-up or round rebuilds.
"""

from __future__ import annotations

import dataclasses

import psycopg
from psycopg import sql

from orchestrator import db, decision_store

# the metadata tables of the two reference points: what the dry-run state read, what the live tables reflect
STATES = {"dry_run": "dry_run_reads", "live": "live_reads"}
BACKUPS = "run_read_backups"
LAG, LAG_KNOWN = "reads_lag", "reads_lag_known"  # the users whose live and dry-run reads differ (lagging_users)
NOW = "legacy_reads_now"  # temporary tables of the session: the digests just taken, of every owner
REBUILT = "legacy_reads_rebuilt"  # ... and of the users a partial rebuild reads


@dataclasses.dataclass
class Changes:
    users: list[str]  # user ids (existing or dangling) whose rows changed
    profiles: list[str]  # orphan Profile ids that changed (or stopped or started being orphans)

    def __bool__(self) -> bool:
        return bool(self.users or self.profiles)

    def __or__(self, other: Changes) -> Changes:
        return Changes(
            users=sorted({*self.users, *other.users}, key=str.encode),
            profiles=sorted({*self.profiles, *other.profiles}, key=str.encode),
        )

    def describe(self) -> str:
        return f"{len(self.users)} users" + (f" and {len(self.profiles)} orphan profiles" if self.profiles else "")


def take(
    pg: psycopg.Connection,
    legacy_schema: str,
    meta_schema: str | None,
    users: sql.Composable | None = None,
    *,
    name: str = NOW,
) -> sql.Identifier:
    """The digests of every owner now (or only of the users in table ``users``), into temporary table
    ``name`` (replaced on each call); one statement, so one snapshot of the three tables. A user's
    reviewer decisions (in ``meta_schema``) are its rows too: deciding, re-deciding or clearing one is a
    change of that user, which a catch-up or a sync round then rebuilds with the decision applied."""
    table = sql.Identifier("pg_temp", name)  # never a regular table of that name on the search path
    decisions = sql.SQL("")
    if meta_schema is not None and db.table_exists(pg, meta_schema, decision_store.TABLE):
        decisions = sql.SQL(
            " union all select 'user', d.user_id, hashtextextended('Decision/' || d.user_id || '/'"
            " || coalesce(d.context_type, '') || '/' || d.field || '/' || d.xmin::text, 0) from {} as d"
        ).format(decision_store.table(meta_schema))
    only = (
        sql.SQL("")
        if users is None
        else sql.SQL(" where owner_kind = 'user' and owner_id in (select user_id from {})").format(users)
    )
    _new_reads_table(pg, table)
    pg.execute(
        sql.SQL(
            "insert into {now} (owner_kind, owner_id, digest)"
            " select owner_kind, owner_id, sum(row_hash) from ("
            " select 'user' as owner_kind, u.{id} as owner_id,"
            " hashtextextended('User/' || u.{id} || '/' || u.xmin::text, 0) as row_hash from {users} as u"
            " union all"
            " select 'user', cp.{user_id}, hashtextextended('ContextProfile/' || cp.{id} || '/' || cp.xmin::text, 0)"
            " from {context_profiles} as cp"
            " union all"
            " select case when cp.{id} is null then 'profile' else 'user' end, coalesce(cp.{user_id}, p.{id}),"
            " hashtextextended('Profile/' || p.{id} || '/' || p.xmin::text, 0)"
            " from {profiles} as p left join {context_profiles} as cp on cp.{id} = p.{context_profile_id}"
            "{decisions}) as owned{only} group by owner_kind, owner_id"
        ).format(
            now=table,
            only=only,
            decisions=decisions,
            id=sql.Identifier("id"),
            user_id=sql.Identifier("userId"),
            context_profile_id=sql.Identifier("contextProfileId"),
            users=sql.Identifier(legacy_schema, "User"),
            context_profiles=sql.Identifier(legacy_schema, "ContextProfile"),
            profiles=sql.Identifier(legacy_schema, "Profile"),
        )
    )
    pg.execute(sql.SQL("analyze {}").format(table))
    return table


def _new_reads_table(pg: psycopg.Connection, table: sql.Identifier) -> None:
    """Temporary table ``table`` of per-owner reads, empty (replaced if there was one)."""
    pg.execute(sql.SQL("drop table if exists {}").format(table))
    pg.execute(sql.SQL("create temporary table {} (owner_kind text, owner_id text, digest numeric)").format(table))


def _state(meta_schema: str, state: str) -> sql.Identifier:
    return sql.Identifier(meta_schema, STATES[state])


def recorded(pg: psycopg.Connection, meta_schema: str, state: str) -> bool:
    """Whether ``state`` holds any reads (a promote or dry run recorded them)."""
    return pg.execute(sql.SQL("select exists (select from {})").format(_state(meta_schema, state))).fetchone()[0]


def changed_since(pg: psycopg.Connection, meta_schema: str, state: str, now: sql.Identifier) -> Changes:
    """The owners whose digest in ``now`` differs from the one ``state`` recorded (new and vanished
    owners included), in id order."""
    rows = pg.execute(
        sql.SQL(
            "select owner_kind, owner_id from (select coalesce(n.owner_kind, r.owner_kind) as owner_kind,"
            " coalesce(n.owner_id, r.owner_id) as owner_id from {now} as n full join {recorded} as r"
            " on r.owner_kind = n.owner_kind and r.owner_id = n.owner_id where n.digest is distinct from r.digest)"
            ' as changed order by owner_kind, owner_id collate "C"'
        ).format(now=now, recorded=_state(meta_schema, state))
    ).fetchall()
    return Changes(
        users=[owner for kind, owner in rows if kind == "user"],
        profiles=[owner for kind, owner in rows if kind == "profile"],
    )


def differing_users(pg: psycopg.Connection, meta_schema: str, state: str, other: str) -> list[str]:
    """The users whose reads in ``state`` differ from ``other``'s, counted: a full join of both states
    (lagging_users keeps the live tables' by difference)."""
    query = sql.SQL('select owner_id from ({}) as differing order by owner_id collate "C"').format(
        _differing(meta_schema, state, other)
    )
    return [row[0] for row in pg.execute(query)]


def _differing(meta_schema: str, state: str, other: str) -> sql.Composable:
    return sql.SQL(
        "select coalesce(a.owner_id, b.owner_id) as owner_id from (select owner_id, digest from {a}"
        " where owner_kind = 'user') as a full join (select owner_id, digest from {b} where owner_kind = 'user')"
        " as b on a.owner_id = b.owner_id where a.digest is distinct from b.digest"
    ).format(a=_state(meta_schema, state), b=_state(meta_schema, other))


def lagging_users(pg: psycopg.Connection, meta_schema: str) -> list[str]:
    """The users the live tables do not reflect yet although the dry-run state does (held back, left out,
    handed over), with a change stream: differing_users(live, dry_run), kept by difference. Every write of
    either state's reads below puts the users it touched right in the lag (_relag); a write of every owner
    (replace, clear) leaves it unknown, and then this counts it once and keeps it."""
    lag, known = sql.Identifier(meta_schema, LAG), sql.Identifier(meta_schema, LAG_KNOWN)
    if not pg.execute(sql.SQL("select exists (select from {})").format(known)).fetchone()[0]:
        pg.execute(sql.SQL("truncate {}").format(lag))
        pg.execute(sql.SQL("insert into {} {}").format(lag, _differing(meta_schema, "live", "dry_run")))
        pg.execute(sql.SQL("insert into {} default values").format(known))
    return [row[0] for row in pg.execute(sql.SQL('select owner_id from {} order by owner_id collate "C"').format(lag))]


def _lag_unknown(pg: psycopg.Connection, meta_schema: str) -> None:
    """Every owner of a state was written: the lag is counted again when next needed (lagging_users)."""
    pg.execute(
        sql.SQL("truncate {}, {}").format(sql.Identifier(meta_schema, LAG), sql.Identifier(meta_schema, LAG_KNOWN))
    )


def _relag(pg: psycopg.Connection, meta_schema: str, users: sql.Composable, params: dict | list | None = None) -> None:
    """The users of query ``users`` (one column: user ids) had their reads written in a state: whether each
    of them lags now (its two digests differ, or one is missing) is put right in the lag."""
    lag = sql.Identifier(meta_schema, LAG)
    pg.execute(sql.SQL("delete from {} where owner_id in ({})").format(lag, users), params)
    pg.execute(
        sql.SQL(
            "insert into {lag} select u.owner_id"
            " from (select distinct owner_id from ({users}) as touched (owner_id)) as u"
            " where (select digest from {live} where owner_kind = 'user' and owner_id = u.owner_id)"
            " is distinct from (select digest from {dry_run} where owner_kind = 'user' and owner_id = u.owner_id)"
        ).format(lag=lag, users=users, live=_state(meta_schema, "live"), dry_run=_state(meta_schema, "dry_run")),
        params,
    )


def streamed(pg: psycopg.Connection, owners: Changes, position: str, *, name: str = NOW) -> sql.Identifier:
    """Temporary table ``name`` of the ``owners`` a change stream found (orchestrator/stream.py), each with
    the digest "as of ``position``" instead of one taken from their rows: the position's byte number plus
    one half. A digest taken from rows is a sum of integers, so any later comparison of digests finds these
    owners changed; two stream runs at the same position read the same copy, so they agree; and a rollback
    that puts an older one back makes the owner differ from the dry-run state's again."""
    table = sql.Identifier("pg_temp", name)
    _new_reads_table(pg, table)
    pg.execute(
        sql.SQL(
            "insert into {} select kind, unnest(ids), (%(position)s::pg_lsn - '0/0'::pg_lsn) + 0.5"
            " from (values ('user', %(users)s::text[]), ('profile', %(profiles)s::text[])) as owned (kind, ids)"
        ).format(table),
        {"position": position, "users": owners.users, "profiles": owners.profiles},
    )
    return table


def replace(pg: psycopg.Connection, meta_schema: str, state: str, source: sql.Composable) -> None:
    """``state`` := every digest of ``source`` (a table of owner_kind, owner_id, digest)."""
    target = _state(meta_schema, state)
    pg.execute(sql.SQL("truncate {}").format(target))
    _lag_unknown(pg, meta_schema)
    pg.execute(
        sql.SQL("insert into {} (owner_kind, owner_id, digest) select owner_kind, owner_id, digest from {}").format(
            target, source
        )
    )


def update(
    pg: psycopg.Connection,
    meta_schema: str,
    state: str,
    now: sql.Identifier,
    changes: Changes,
    *,
    backup_run_id: str | None = None,
) -> None:
    """``state`` := ``now`` for the owners in ``changes``; with ``backup_run_id``, their previous digests
    are kept for the rollback of that run."""
    target = _state(meta_schema, state)
    owners = sql.SQL(
        "(select 'user' as owner_kind, unnest(%(users)s::text[]) as owner_id"
        " union all select 'profile', unnest(%(profiles)s::text[]))"
    )
    params = {"users": changes.users, "profiles": changes.profiles, "run_id": backup_run_id}
    if backup_run_id is not None:
        pg.execute(
            sql.SQL(
                "insert into {backups} (run_id, owner_kind, owner_id, digest)"
                " select %(run_id)s, o.owner_kind, o.owner_id, r.digest from {owners} as o"
                " left join {target} as r on r.owner_kind = o.owner_kind and r.owner_id = o.owner_id"
                " on conflict do nothing"
            ).format(backups=sql.Identifier(meta_schema, BACKUPS), owners=owners, target=target),
            params,
        )
    pg.execute(
        sql.SQL(
            "delete from {target} as r using {owners} as o"
            " where r.owner_kind = o.owner_kind and r.owner_id = o.owner_id"
        ).format(target=target, owners=owners),
        params,
    )
    pg.execute(
        sql.SQL(
            "insert into {target} (owner_kind, owner_id, digest) select n.owner_kind, n.owner_id, n.digest"
            " from {now} as n join {owners} as o on o.owner_kind = n.owner_kind and o.owner_id = n.owner_id"
        ).format(target=target, now=now, owners=owners),
        params,
    )
    _relag(pg, meta_schema, sql.SQL("select unnest(%(users)s::text[])"), params)


def replace_live(pg: psycopg.Connection, meta_schema: str, run_id: str, replacement: sql.Composable) -> None:
    """A full promote: ``live`` := every digest of ``replacement``, by difference: only the owners whose
    digest differs are replaced (a promote of the state the live tables already reflect rewrites none),
    and their live digests are kept for its rollback (NULL digest: the owner had none)."""
    differing = sql.Identifier("pg_temp", "live_reads_differing")
    live, backups = _state(meta_schema, "live"), sql.Identifier(meta_schema, BACKUPS)
    pg.execute(sql.SQL("drop table if exists {}").format(differing))
    pg.execute(
        sql.SQL(
            "create temporary table {differing} as select coalesce(r.owner_kind, n.owner_kind) as owner_kind,"
            " coalesce(r.owner_id, n.owner_id) as owner_id, r.digest from {live} as r full join {replacement} as n"
            " on n.owner_kind = r.owner_kind and n.owner_id = r.owner_id where r.digest is distinct from n.digest"
        ).format(differing=differing, live=live, replacement=replacement)
    )
    pg.execute(sql.SQL("analyze {}").format(differing))
    pg.execute(
        sql.SQL(
            "insert into {backups} (run_id, owner_kind, owner_id, digest) select %s, owner_kind, owner_id, digest"
            " from {differing}"
        ).format(backups=backups, differing=differing),
        [run_id],
    )
    pg.execute(
        sql.SQL(
            "delete from {live} as r using {differing} as d"
            " where r.owner_kind = d.owner_kind and r.owner_id = d.owner_id"
        ).format(live=live, differing=differing)
    )
    pg.execute(
        sql.SQL(
            "insert into {live} (owner_kind, owner_id, digest) select n.owner_kind, n.owner_id, n.digest"
            " from {replacement} as n join {differing} as d on d.owner_kind = n.owner_kind and d.owner_id = n.owner_id"
        ).format(live=live, replacement=replacement, differing=differing)
    )
    _relag(pg, meta_schema, sql.SQL("select owner_id from {} where owner_kind = 'user'").format(differing))


def restore(pg: psycopg.Connection, meta_schema: str, run_id: str) -> None:
    """Undo one run's change to the live reads (its rollback)."""
    live, backups = _state(meta_schema, "live"), sql.Identifier(meta_schema, BACKUPS)
    pg.execute(
        sql.SQL(
            "delete from {live} as r using {backups} as b where b.run_id = %s"
            " and r.owner_kind = b.owner_kind and r.owner_id = b.owner_id"
        ).format(live=live, backups=backups),
        [run_id],
    )
    pg.execute(
        sql.SQL(
            "insert into {live} (owner_kind, owner_id, digest) select owner_kind, owner_id, digest from {backups}"
            " where run_id = %s and digest is not null"
        ).format(live=live, backups=backups),
        [run_id],
    )
    _relag(
        pg,
        meta_schema,
        sql.SQL("select owner_id from {} where run_id = %s and owner_kind = 'user'").format(backups),
        [run_id],
    )


def forget(pg: psycopg.Connection, meta_schema: str, run_ids: list[str]) -> None:
    pg.execute(sql.SQL("delete from {} where run_id = any(%s)").format(sql.Identifier(meta_schema, BACKUPS)), [run_ids])


def clear(pg: psycopg.Connection, meta_schema: str, state: str) -> None:
    pg.execute(sql.SQL("truncate {}").format(_state(meta_schema, state)))
    _lag_unknown(pg, meta_schema)


@dataclasses.dataclass(frozen=True)
class Reads:
    """What a promote or sync round records as the live tables' reads once it has written them: all of
    the dry-run state's (a full promote), or the digests of the owners it wrote (a session table)."""

    source: str  # "dry_run": the dry-run state's reads; else the name of a temporary table of the session
    changes: Changes | None = None  # the owners to update (None: replace every owner)

    @classmethod
    def whole(cls, state: str) -> Reads:
        return cls(state)

    @classmethod
    def users(cls, users: list[str], table: str) -> Reads:
        return cls(table, Changes(users=list(users), profiles=[]))

    @classmethod
    def owners(cls, changed: Changes, table: str) -> Reads:
        return cls(table, changed)

    def record(
        self, pg: psycopg.Connection, meta_schema: str, run_id: str, *, created: bool, retry: list[str] = ()
    ) -> None:
        """Inside the run's transaction: the live reads become these (the ones replaced kept for rollback,
        unless the run created the live tables: its rollback drops them), but for the users in ``retry``
        (not written this time): they have none, so the next round takes them as changed."""
        self._record(pg, meta_schema, run_id, created=created)
        if retry:
            pg.execute(
                sql.SQL("delete from {} where owner_kind = 'user' and owner_id = any(%s)").format(
                    _state(meta_schema, "live")
                ),
                [list(retry)],
            )
            _relag(pg, meta_schema, sql.SQL("select unnest(%s::text[])"), [list(retry)])

    def _record(self, pg: psycopg.Connection, meta_schema: str, run_id: str, *, created: bool) -> None:
        if self.changes is None:
            source = _state(meta_schema, self.source)
            if created:
                replace(pg, meta_schema, "live", source)
            else:
                replace_live(pg, meta_schema, run_id, source)
            return
        update(
            pg,
            meta_schema,
            "live",
            sql.Identifier(self.source),
            self.changes,
            backup_run_id=None if created else run_id,
        )
