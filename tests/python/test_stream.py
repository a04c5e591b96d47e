"""The change stream (orchestrator/stream.py; spec §10, issue 25): rounds read the legacy tables' changes
from the write-ahead log instead of digesting every owner, and keep the copy of the legacy rows equal to
the legacy data at the stream's position.

On a real server (the embedded one runs with wal_level = logical): the parser against what test_decoding
prints, the first round making the slot and the next ones reading it, an unchanged TOASTed value, a slot
dropped or invalidated, a TRUNCATE, the setting, the privilege, and a round killed at each new point.
"""

from __future__ import annotations

import secrets
import signal

import psycopg
import pytest
from helpers import EVERYTHING, lock_holders, no_prompt, run_cli, wait_for
from psycopg import sql
from test_live_sync import differences, promoted  # noqa: F401  (promoted: a fixture)

from orchestrator import decoding, stream, sync
from orchestrator.errors import OrchestratorError

LEGACY = "legacy_fixtures"
COPY_COLUMNS = {"ChatMessage": 'id, "contextProfileId", role, "createdAt"'}


def execute(conn, statement, params=None) -> None:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        pg.execute(statement, params)


def query(conn, statement, params=None) -> list[tuple]:
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        return pg.execute(statement, params).fetchall()


def copy_differences(conn, settings) -> dict[str, int]:
    """Rows in the legacy tables and not in the copy, or the other way round, per table (only the
    differing tables)."""
    found = {}
    for table in stream.LEGACY:
        columns = sql.SQL(COPY_COLUMNS.get(table, "*"))
        legacy, copy = sql.Identifier(settings.legacy_schema, table), sql.Identifier(settings.snapshot_schema, table)
        count = query(
            conn,
            sql.SQL(
                "select count(*) from ((select {c} from {a} except all select {c} from {b})"
                " union all (select {c} from {b} except all select {c} from {a})) as d"
            ).format(c=columns, a=legacy, b=copy),
        )[0][0]
        if count:
            found[table] = count
    return found


def round_(settings, conn):
    return sync.sync_round(settings, conn, max_conflict_rate=EVERYTHING, confirm=no_prompt)


def slot_of(settings, conn) -> str:
    with psycopg.connect(**conn.kwargs()) as pg:
        return stream.slot_name(pg, settings)


# -- what test_decoding prints -----------------------------------------------------------------------------


def test_the_parser_reads_every_shape_test_decoding_prints():
    old, new = decoding.parse_tuple(
        "id[text]:'p''1' \"contextProfileId\"[text]:null data[jsonb]:'{\"a]: b\": \"it''s null\"}'"
        " n[integer]:-5 f[double precision]:NaN ok[boolean]:true tags[text[]]:'{\"x y\",z}'"
        ' "we""ird"[character varying(3)]:\'a b\' big[text]:unchanged-toast-datum'
    )
    assert old is None
    assert new == {
        "id": "p'1",
        "contextProfileId": None,
        "data": '{"a]: b": "it\'s null"}',
        "n": "-5",
        "f": "NaN",
        "ok": "true",
        "tags": '{"x y",z}',
        'we"ird': "a b",
        "big": decoding.UNCHANGED,
    }
    old, new = decoding.parse_tuple("old-key: id[text]:'a' new-tuple: id[text]:'b' v[text]:'x'")
    assert old == {"id": "a"} and new == {"id": "b", "v": "x"}
    assert decoding.parse_tuple("(no-tuple-data)") == (None, None)


def test_changes_fold_into_each_rows_net_change():
    names = {'s."Profile"': "Profile", "s.conflict_decisions": decoding.DECISIONS}
    net, users = {}, set()

    def fold(line):
        decoding.fold(net, users, names, line)

    fold("table s.\"Profile\": INSERT: id[text]:'p1' data[jsonb]:'{}' n[integer]:1")
    fold("table s.\"Profile\": UPDATE: id[text]:'p1' data[jsonb]:unchanged-toast-datum n[integer]:2")
    assert net[("Profile", "p1")] == decoding.Row({"id": "p1", "data": "{}", "n": "2"}, set(), "p1")
    fold("table s.\"Profile\": UPDATE: id[text]:'p2' data[jsonb]:unchanged-toast-datum n[integer]:3")
    assert net[("Profile", "p2")] == decoding.Row({"id": "p2", "n": "3"}, {"data"}, "p2")  # the copy's data stays
    fold(
        "table s.\"Profile\": UPDATE: old-key: id[text]:'p2' new-tuple: id[text]:'p3' data[jsonb]:unchanged-toast-datum"
        " n[integer]:3"
    )
    assert net[("Profile", "p2")] is decoding.DELETED
    assert net[("Profile", "p3")] == decoding.Row({"id": "p3", "n": "3"}, {"data"}, "p2")  # from the copy's p2
    fold("table s.\"Profile\": DELETE: id[text]:'p1'")
    assert net[("Profile", "p1")] is decoding.DELETED
    fold("table s.conflict_decisions: DELETE: user_id[text]:'u9' field[text]:'name'")
    assert users == {"u9"}
    with pytest.raises(decoding.StreamGap):
        fold('table s."Profile": TRUNCATE: (no-flags)')
    with pytest.raises(decoding.StreamGap):
        fold('table s."Profile": DELETE: (no-tuple-data)')
    with pytest.raises(decoding.StreamGap):  # never a guess: the digests instead
        fold("table s.\"Profile\": UPDATE: id[text]:'p1 data[jsonb]:'{}'")


def test_sync_warns_when_the_slot_holds_back_too_much_wal(capsys):
    from orchestrator import console

    console.slot_warning({"slot_retained_bytes": 3 << 30, "slot_warn_bytes": 1 << 30})
    assert "holds back 3,072 MiB of WAL" in capsys.readouterr().err
    console.slot_warning({"slot_retained_bytes": 10, "slot_warn_bytes": 1 << 30})
    console.slot_warning({"source": "digests", "slot_retained_bytes": None, "slot_warn_bytes": None})
    assert capsys.readouterr().err == ""


# -- on the server -------------------------------------------------------------------------------------------


def test_the_first_round_makes_the_slot_and_the_next_ones_read_the_stream(promoted):  # noqa: F811
    settings, conn = promoted
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    first = round_(settings, conn)
    assert first.change_source["source"] == "digests" and "made the change stream's slot" in first.change_source["note"]
    assert first.changed.users == ["u02"]
    # a write, a move between users, an orphan made, a user deleted (its rows by the cascade)
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Oslo"}}' where id = 'p02r'""")
    execute(conn, f"""update {LEGACY}."ContextProfile" set "userId" = 'u06' where id = 'cp09p'""")
    execute(conn, f"""delete from {LEGACY}."User" where id = 'u03'""")
    second = round_(settings, conn)
    assert second.change_source["source"] == "wal" and second.change_source["transactions_read"] == 3
    assert {"u02", "u06", "u09", "u03"} <= set(second.changed.users), second.as_dict()
    assert copy_differences(conn, settings) == {}
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    third = round_(settings, conn)
    assert third.run_id is None and not third.changed and third.change_source["source"] == "wal"
    assert third.change_source["slot_warn_bytes"] == stream.DEFAULT_WARN_BYTES


def test_an_unchanged_toasted_value_stays_the_copys(promoted):  # noqa: F811
    settings, conn = promoted
    round_(settings, conn)  # makes the slot
    big = secrets.token_hex(40_000)  # stored out of line, uncompressed: an update of another column leaves it
    execute(
        conn, f"""update {LEGACY}."Profile" set data = jsonb_build_object('name', %s::text) where id = 'p02r'""", [big]
    )
    assert round_(settings, conn).change_source["source"] == "wal"
    execute(conn, f"""update {LEGACY}."Profile" set "updatedAt" = '2030-01-01' where id = 'p02r'""")
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        stream._flush(pg, settings)  # the test server commits asynchronously; decoding reads flushed WAL only
        printed = pg.execute(
            "select data from pg_logical_slot_peek_changes(%s, null, null) where data like '%%unchanged-toast-datum%%'",
            [stream.slot_name(pg, settings)],
        ).fetchall()
    assert printed, "the update did not leave the TOASTed value out: this test tests nothing"
    assert round_(settings, conn).changed.users == ["u02"]
    assert copy_differences(conn, settings) == {}
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []


def test_a_dropped_slot_is_fallen_back_from(promoted):  # noqa: F811
    settings, conn = promoted
    round_(settings, conn)
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    execute(conn, "select pg_drop_replication_slot(%s)", [slot_of(settings, conn)])
    execute(conn, f"""update {LEGACY}."Profile" set data = '{{"name": "Ines"}}' where id = 'p06r'""")
    fallen = round_(settings, conn)
    assert fallen.change_source["source"] == "digests" and "missing" in fallen.change_source["note"]
    assert set(fallen.changed.users) == {"u02", "u06"}
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Porto"}}' where id = 'p02r'""")
    assert round_(settings, conn).change_source["source"] == "wal"
    assert copy_differences(conn, settings) == {}


def test_an_invalidated_slot_is_fallen_back_from(promoted):  # noqa: F811
    settings, conn = promoted
    round_(settings, conn)
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    slot = slot_of(settings, conn)
    execute(conn, "alter system set max_slot_wal_keep_size = '1MB'")
    execute(conn, "select pg_reload_conf()")
    try:
        execute(conn, "create table wal_filler (v text)")
        for _ in range(4):  # past the limit: the next checkpoint invalidates the slot
            execute(conn, "insert into wal_filler select repeat(md5(g::text), 8) from generate_series(1, 20000) as g")
            execute(conn, "select pg_switch_wal()")
            execute(conn, "checkpoint")
        assert query(conn, "select wal_status from pg_replication_slots where slot_name = %s", [slot]) == [("lost",)]
    finally:
        execute(conn, "alter system reset max_slot_wal_keep_size")
        execute(conn, "select pg_reload_conf()")
        execute(conn, "drop table if exists wal_filler")
    fallen = round_(settings, conn)
    assert fallen.change_source["source"] == "digests" and "invalidated" in fallen.change_source["note"]
    assert fallen.changed.users == ["u02"]
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    assert query(conn, "select wal_status from pg_replication_slots where slot_name = %s", [slot]) != [("lost",)]


def test_a_truncate_is_fallen_back_from(promoted):  # noqa: F811
    settings, conn = promoted
    round_(settings, conn)
    execute(conn, f'truncate {LEGACY}."ChatMessage"')
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    fallen = round_(settings, conn)
    assert fallen.change_source["source"] == "digests" and "truncated" in fallen.change_source["note"]
    assert copy_differences(conn, settings) == {}
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []


def test_digests_when_asked_and_the_stream_refused_without_the_privilege(promoted, monkeypatch):  # noqa: F811
    settings, conn = promoted
    round_(settings, conn)
    slot = slot_of(settings, conn)
    monkeypatch.setenv(stream.SOURCE_VAR, "digests")
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    result = round_(settings, conn)
    assert result.change_source == {
        "source": "digests",
        "note": f"{stream.SOURCE_VAR}=digests",
        "slot_retained_bytes": None,
        "slot_warn_bytes": None,
        "transactions_read": 0,
    }
    assert query(conn, "select from pg_replication_slots where slot_name = %s", [slot]) == []  # no WAL held back
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []

    role = f"no_replication_{secrets.token_hex(3)}"
    execute(conn, sql.SQL("create role {} login password 'pw'").format(sql.Identifier(role)))
    try:
        monkeypatch.setenv(stream.SOURCE_VAR, "wal")
        kwargs = {**conn.kwargs(), "user": role, "password": "pw"}
        with psycopg.connect(**kwargs, autocommit=True) as pg, pytest.raises(OrchestratorError, match="REPLICATION"):
            stream.not_offered(pg, settings)
        monkeypatch.setenv(stream.SOURCE_VAR, "sometimes")
        with psycopg.connect(**kwargs, autocommit=True) as pg, pytest.raises(OrchestratorError, match="one of"):
            stream.not_offered(pg, settings)
    finally:
        execute(conn, sql.SQL("drop role {}").format(sql.Identifier(role)))


# CI kills one point on both versions, the others on one (they kill our own process)
@pytest.mark.parametrize(
    "point",
    [
        "stream:read",
        *(
            pytest.param(point, marks=pytest.mark.slow)
            for point in ("stream:applied", "stream:committed", "catch-up:after-splice", "catch-up:counted")
        ),
    ],
)
def test_a_round_killed_at_a_stream_point_loses_no_change(promoted, cli_env, tmp_path, point):  # noqa: F811
    """Killed after reading the stream, before or after committing what it applied (the slot not yet
    advanced), after the dry-run state's splice, or after its summary: the next round finds every change,
    and its summary counts the chat messages written meanwhile (they change no owner)."""
    settings, conn = promoted
    round_(settings, conn)
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    execute(conn, f"""delete from {LEGACY}."ContextProfile" where id = 'cp09p'""")
    execute(conn, f"""insert into {LEGACY}."ChatMessage" (id, "contextProfileId", role, content)"""
            f""" values ('m-new', 'cp03f', 'user', 'hi'), ('m-dangling', 'cp-gone', 'user', 'hi')""")  # fmt: skip
    execute(conn, f"""update {LEGACY}."ChatMessage" set "contextProfileId" = 'cp02r' where id = 'm3'""")
    env = {**cli_env, "MIGRATION_LEGACY_SCHEMA": LEGACY}
    killed = run_cli(["sync", "--yes", "--max-conflict-rate", "1"], env, fault=f"{point}:sigkill", fault_dir=tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    # the killed process's session ends (its locks, its hold on the slot) as the server notices
    wait_for(
        lambda: lock_holders(conn) == 0 and not query(conn, "select from pg_replication_slots where active"),
        10,
        "the killed session to end",
    )
    recovery = round_(settings, conn)
    assert {"u02", "u09"} <= set(recovery.changed.users), recovery.as_dict()
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
    assert copy_differences(conn, settings) == {}
    assert round_(settings, conn).run_id is None


def test_a_user_promote_reads_its_users_from_the_copy_the_stream_keeps(promoted):  # noqa: F811
    """`promote --user` brings the copy to the stream's last commit and reads its users from it; what it
    read of other users waits for the next round, which rebuilds them."""
    from orchestrator import promote as promoting

    settings, conn = promoted
    round_(settings, conn)  # makes the slot
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Porto"}}' where id = 'p03r'""")
    promoting.promote(settings, conn, users=["u02"], max_conflict_rate=EVERYTHING, confirm=no_prompt)
    assert copy_differences(conn, settings) == {}
    live = dict(
        query(conn, f"""select "userId", location from {LEGACY}."UserProfile" where "userId" in ('u02', 'u03')""")
    )
    assert live["u02"] == "Lisbon" and live["u03"] != "Porto"
    after = round_(settings, conn)
    assert after.change_source["source"] == "wal" and "u03" in after.changed.users
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []


def test_a_promote_that_wrote_much_starts_the_stream_after_its_write(promoted, monkeypatch):  # noqa: F811
    """The next round does not decode a large promote's own writes: the slot is made anew after it, and what
    the application changed meanwhile is still found."""
    from orchestrator import promote as promoting

    settings, conn = promoted
    execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Lisbon"}}' where id = 'p02r'""")
    monkeypatch.setattr(promoting, "ANCHOR_MIN_ROWS", 1)  # its one user's rows count as much
    monkeypatch.setattr(promoting, "ANCHOR_SHARE", 10**6)

    def change_meanwhile(_plan) -> None:  # after the gates, before the publish's transaction
        execute(conn, f"""update {LEGACY}."Profile" set data = data || '{{"location": "Porto"}}' where id = 'p03r'""")

    promoting.promote(settings, conn, catch_up=True, max_conflict_rate=EVERYTHING, confirm=change_meanwhile)
    with psycopg.connect(**conn.kwargs(), autocommit=True) as pg:
        stream._flush(pg, settings)
        ours = pg.execute(
            "select count(*) from pg_logical_slot_peek_changes(%s, null, null) where data like %s",
            [stream.slot_name(pg, settings), f'table {LEGACY}."UserProfile"%'],
        ).fetchone()[0]
    assert ours == 0
    after = round_(settings, conn)
    assert "u03" in after.changed.users, after.as_dict()
    assert differences(conn, settings, dry_run_too=True, threshold=EVERYTHING) == []
