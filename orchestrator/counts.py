"""The verification's figures kept up to date by difference (spec §7's summary; spec §10's rounds).

A full dry run counts every figure once: per owner (migration_counts_by_owner: a user id, or an orphan
legacy Profile) and per context profile id named by chat messages (migration_chat_message_counts);
migration_counts sums the two. A catch-up or sync round then costs what changed, not what the dry run
holds:
- the per-owner rows are the rebuilt owners' rows of that table, put in place of theirs by the splice,
  like every other table with a user_id (orchestrator/dry_run.py);
- the chat-message rows are counted again for the context profile ids of this module's scope table
  only (an incremental model: their rows deleted, then appended counted again). The application writes
  chat messages without changing any owner, so they are not owners' rows. Every change to the copy of
  the legacy rows notes the context profiles whose messages it touched: the stream's changed messages
  and context profiles, before and after; the messages a comparison of every message found changed
  (the digests, a new slot), and the owners' context profiles. The splice notes those of the users it
  rebuilt (their user or intents may have changed), and the summary's build empties the table once it
  has counted them. One killed before that is counted again by the next summary: never a missed one.
A full dry run copies every chat message and counts them all: it empties the table.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

SCOPE_TABLE = "context_profile_scope"  # read by the summary's build (the source migration_meta.context_profile_scope)


def scope_table(meta_schema: str) -> sql.Identifier:
    return sql.Identifier(meta_schema, SCOPE_TABLE)


def _ensure(pg: psycopg.Connection, meta_schema: str) -> sql.Identifier:
    table = scope_table(meta_schema)
    pg.execute(sql.SQL("create table if not exists {} (context_profile_id text)").format(table))
    return table


def note(pg: psycopg.Connection, meta_schema: str, context_profile_ids: sql.Composable) -> None:
    """Inside the transaction that changed them: the context profiles of the query ``context_profile_ids``
    (one text column) are counted again by the next summary."""
    pg.execute(
        sql.SQL(
            "insert into {} (context_profile_id) select distinct id from ({}) as noted (id) where id is not null"
        ).format(_ensure(pg, meta_schema), context_profile_ids)
    )


def forget(pg: psycopg.Connection, meta_schema: str) -> None:
    """Inside the transaction that made the copy anew for a full dry run, which counts everything."""
    pg.execute(sql.SQL("truncate {}").format(_ensure(pg, meta_schema)))


def counted(pg: psycopg.Connection, meta_schema: str) -> None:
    """After the summary's build that counted them (the caller holds the dry-run lock, so nothing was
    noted meanwhile): nothing is left to count again."""
    pg.execute(sql.SQL("truncate {}").format(_ensure(pg, meta_schema)))
