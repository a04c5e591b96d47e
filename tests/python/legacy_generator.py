"""A seeded generator of messy legacy data (MIGRATION_SPEC.md §1 tables), and a loader.

``generate(seed, n_users)`` returns ``{"User": [...], "ContextProfile": [...], "Profile": [...],
"ChatMessage": [...]}``: row dicts keyed by the legacy column names, in the representation of
spec_model.py (``Profile["data"]`` is a parsed JSON value with ``Decimal`` numbers, or
``SQL_NULL``). A fixed block of hand-made cases is always included, so every drift case of spec
§1 and §5 appears whatever the seed; random users around it add volume and combinations.

``load(conn_or_cursor, schema, rows)`` (re)creates ``schema`` with the exact legacy DDL and inserts
the rows; it refuses a schema it did not make.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg import sql
from spec_model import SQL_NULL, read_field_map

from orchestrator.db import LEGACY_TABLES, packaged_sql

CONTEXT_TYPES = ("romantic", "friendship", "professional", "creative", "service")
TRIMMED_WHITESPACE = [" ", "\t", "\n", "\r", "\f", "\v"]  # §3: trimmed
UNTRIMMED_WHITESPACE = ["\u00a0", "\u2003", "\u3000", "\u0085", "\u1680", "\ufeff", "\x1c"]  # not trimmed
NUMBERS = [
    0,
    30,
    -7,
    Decimal("1.50"),
    Decimal("1.500"),
    Decimal("1.5"),
    Decimal("1E+2"),  # jsonb prints 100
    Decimal("1.50E+1"),  # jsonb prints 15.0
    Decimal("15.0"),
    Decimal("2.5E-3"),
    Decimal("-0.0"),
    Decimal("1E+30"),
    12345678901234567890123,
    Decimal("-12.340"),
]
NUMBER_LIKE_STRINGS = ["30", " 30 ", "1.50", "100", "true", "false\n"]
BLANKS = ["", " ", "\t\n", "\v\f", "\r", " \t\n\r\f\v "]
WORDS = ["SF", "NYC", "Oslo", "high", "low", "two words", "caf\u00e9", "cafe\u0301"]  # é: NFC and NFD differ
UNKNOWN_KEYS = ["Location", "LOCATION", "location ", " name", "coreValue", "CoreValues", "notes", "", "favouriteColor"]
SUB_KEYS = ["religion", "politics", "diet", "pace", "Religion"]
SUB_VALUES = [
    "x",
    "y",
    " x ",
    "",
    30,
    "30",
    Decimal("1.0"),
    Decimal("1.00"),
    True,
    False,
    None,  # dropped
    {"a": 1, "b": 2},
    {"b": 2, "a": 1},  # = the previous one (jsonb equality)
    {"a": 1, "b": "2"},
    [1, 2],
    [2, 1],
    {"nested": None},  # a nested null is kept verbatim
]

BASE_TIME = datetime(2024, 1, 1, 12, 0, 0)


def to_json(value) -> str:
    """JSON text keeping each ``Decimal``'s digits as written (``1.50`` stays ``1.50``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {to_json(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


class _Builder:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.rows = {table: [] for table in LEGACY_TABLES}
        self.serial = 0
        field_map = read_field_map()
        self.kinds = {row.legacy_key: row.kind for row in field_map}
        self.shared_keys = [row.legacy_key for row in field_map if row.target == "profile"]
        self.intent_keys = {
            context: [row.legacy_key for row in field_map if row.context_type == context] for context in CONTEXT_TYPES
        }

    # -- ids and times -------------------------------------------------------------------------
    def next_id(self, prefix: str) -> str:
        self.serial += 1
        # mixed-case and non-ASCII first letters: byte order (COLLATE "C") differs from locale order
        return f"{self.rng.choice(['a', 'B', 'c', 'D', 'Z', '_', 'é'])}{prefix}{self.serial}"

    def time(self, base: datetime, choices=(0, 0, 60, 120, 1440)) -> datetime:
        """Few distinct minutes, so timestamps often tie; whole milliseconds (timestamp(3))."""
        return base + timedelta(minutes=self.rng.choice(choices), milliseconds=self.rng.choice([0, 0, 1, 999]))

    # -- rows ----------------------------------------------------------------------------------
    def user(self, user_id: str, created: datetime) -> dict:
        row = {
            "id": user_id,
            "email": f"{user_id.strip()}@example.test" if self.rng.random() < 0.9 else None,
            "name": self.rng.choice(["Ann", "Bo", None]),  # must never leak into profile.name
            "createdAt": created,
            "updatedAt": created + timedelta(days=self.rng.choice([0, 3])),
        }
        self.rows["User"].append(row)
        return row

    def context(self, user_id: str, context_type: str, created: datetime, context_id: str | None = None) -> dict:
        row = {
            "id": context_id or self.next_id("cp"),
            "userId": user_id,
            "contextType": context_type,
            "tonePreference": self.rng.choice(["warm", None]),
            "createdAt": created,
            "updatedAt": created + timedelta(hours=self.rng.choice([0, 5])),
        }
        self.rows["ContextProfile"].append(row)
        return row

    def profile(self, context_id: str, data, created: datetime, profile_id: str | None = None) -> dict:
        row = {
            "id": profile_id or self.next_id("p"),
            "contextProfileId": context_id,
            "data": data,
            "completeness": self.rng.choice([0, 40, 100]),
            "missing": self.rng.choice([None, [], ["location"], ["coreValues", "beliefs"]]),
            "createdAt": created,
            "updatedAt": created + timedelta(hours=self.rng.choice([0, 1, 48])),
        }
        self.rows["Profile"].append(row)
        return row

    def messages(self, context_id: str, created: datetime, count: int) -> None:
        for index in range(count):
            self.rows["ChatMessage"].append(
                {
                    "id": self.next_id("m"),
                    "contextProfileId": context_id,
                    "role": self.rng.choice(["user", "assistant"]),
                    "content": f"message {index}",
                    "createdAt": created + timedelta(minutes=index),
                }
            )

    # -- values --------------------------------------------------------------------------------
    def padded(self, word: str) -> str:
        rng = self.rng
        pad = lambda: "".join(rng.choice(TRIMMED_WHITESPACE) for _ in range(rng.choice([0, 0, 1, 2])))  # noqa: E731
        text = pad() + word + pad()
        if rng.random() < 0.1:  # not trimmed: stays part of the value
            text = (
                rng.choice(UNTRIMMED_WHITESPACE) + text
                if rng.random() < 0.5
                else text + rng.choice(UNTRIMMED_WHITESPACE)
            )
        return text

    def atom(self):
        """A string, number or boolean, as arrays and scalars hold them."""
        roll = self.rng.random()
        if roll < 0.55:
            return self.padded(self.rng.choice(WORDS))
        if roll < 0.75:
            return self.rng.choice(NUMBERS)
        if roll < 0.85:
            return self.rng.choice([True, False])
        if roll < 0.93:
            return self.rng.choice(NUMBER_LIKE_STRINGS)
        return self.rng.choice(BLANKS)

    def scalar_value(self):
        rng, roll = self.rng, self.rng.random()
        if roll < 0.75:
            return self.atom()
        if roll < 0.82:
            return None
        if roll < 0.91:
            return rng.choice([{"city": "SF"}, {}, {"k": None}])  # type_mismatch
        return rng.choice([["SF"], [], [None]])  # type_mismatch

    def array_value(self):
        rng, roll = self.rng, self.rng.random()
        if roll < 0.6:
            items = [self.atom() if rng.random() < 0.85 else None for _ in range(rng.randint(1, 5))]
            if rng.random() < 0.3:
                items += [30, "30"]  # one value after conversion to text
            return items
        if roll < 0.72:
            return self.atom()  # a lone scalar: a one-element array (or absent when blank)
        if roll < 0.8:
            return rng.choice([[], [None, ""], None, [" ", "\t"]])  # absent
        if roll < 0.9:
            return rng.choice([["ok", ["nested"]], [{"a": 1}], [[]], ["x", {}]])  # type_mismatch
        return rng.choice([{"a": "b"}, {}])  # type_mismatch (an object, even empty)

    def object_value(self):
        rng, roll = self.rng, self.rng.random()
        if roll < 0.65:
            keys = rng.sample(SUB_KEYS, rng.randint(1, 3))
            return {key: rng.choice(SUB_VALUES) for key in keys}
        if roll < 0.75:
            return rng.choice([{}, {"religion": None}, None])  # absent
        return rng.choice(["text", "", "  ", 30, Decimal("1.50"), True, ["a"], [], [{"a": 1}]])  # type_mismatch

    def value_for(self, key: str):
        kind = self.kinds.get(key)
        if kind == "array":
            return self.array_value()
        if kind == "object":
            return self.object_value()
        if kind == "scalar":
            return self.scalar_value()
        return self.rng.choice([self.atom(), None, {"x": 1}, [1, "1"]])  # unknown keys: anything

    def blob(self, context_type: str):
        rng, roll = self.rng, self.rng.random()
        if roll < 0.05:
            return SQL_NULL
        if roll < 0.08:
            return None  # JSON null: no keys
        if roll < 0.14:  # not an object
            return rng.choice([["coreValues"], [], "a string", "", 42, Decimal("1.50"), True, False])
        if roll < 0.19:
            return {}
        keys = [key for key in self.shared_keys if rng.random() < 0.5]
        keys += [key for key in self.intent_keys[context_type] if rng.random() < 0.6]
        if rng.random() < 0.2:
            others = [key for context, ks in self.intent_keys.items() if context != context_type for key in ks]
            keys += rng.sample(others, rng.randint(1, 2))  # wrong_context
        if rng.random() < 0.2:
            keys += rng.sample(UNKNOWN_KEYS, rng.randint(1, 2))
        data = {key: self.value_for(key) for key in keys}
        rng.shuffle(keys)  # key order in the blob must not matter
        return {key: data[key] for key in keys}


def _hand_made_cases(b: _Builder) -> None:
    """Cases that must appear whatever the seed (spec §1, §3, §4, §5)."""
    t0 = BASE_TIME - timedelta(days=30)
    # Ties on ContextProfile createdAt broken by id in byte order: 'B' < 'a', 'z' < 'é'.
    tie = b.user("hm-tie", t0)
    for context_id, location in [
        ("cp-hm-a", "second (a)"),
        ("cp-hm-B", "first (B)"),
        ("cp-hm-é", "fourth (é)"),
        ("cp-hm-z", "third (z)"),
    ]:
        cp = b.context(tie["id"], "romantic", t0, context_id)
        b.profile(cp["id"], {"location": location, "relationshipTimeline": location}, t0, f"p-{context_id}")
    # Ties on Profile createdAt under one ContextProfile: 'p-hm-B' before 'p-hm-a'.
    cp = b.context(tie["id"], "friendship", t0, "cp-hm-ties")
    b.profile(cp["id"], {"ageRange": "30-40", "friendshipDepth": "deep"}, t0, "p-hm-a")
    b.profile(cp["id"], {"ageRange": "20-30", "friendshipDepth": "light"}, t0, "p-hm-B")
    b.messages(cp["id"], t0, 2)

    # The spec's own examples: SF vs NYC; 30 and "30" one array value; object sub-values by jsonb equality.
    spec = b.user("hm-spec", t0)
    cp1 = b.context(spec["id"], "professional", t0, "cp-hm-spec-1")
    cp2 = b.context(spec["id"], "professional", t0 + timedelta(hours=1), "cp-hm-spec-2")  # duplicate type
    b.profile(
        cp1["id"],
        {
            "location": " SF\t",
            "coreValues": [30, "30", " honesty ", None, "", Decimal("1.50")],
            "beliefs": {"a": {"a": 1, "b": 2}, "n": 30, "gone": None},
            "complementarySkills": "design",
            "partnershipType": Decimal("1.50"),
        },
        t0,
        "p-hm-spec-1",
    )
    b.profile(
        cp2["id"],
        {
            "location": "NYC",
            "coreValues": ["honesty", "1.50", "x\u00a0"],
            "beliefs": {"a": {"b": 2, "a": 1}, "n": "30"},
            "complementarySkills": ["design", "code"],
            "partnershipType": "1.50",
            "Location": "Paris",  # unknown_key (case-sensitive)
            "friendshipDepth": "deep",  # wrong_context
            "ageRange": {"min": 30},  # type_mismatch
            "roleNeeded": ["x"],  # wrong_context beats type_mismatch
            "name": None,  # mapped, absent
            "lifestyle": {"k": None},  # mapped, absent
        },
        t0,
        "p-hm-spec-2",
    )
    # Every trimmed whitespace character, and untrimmed ones; whitespace-only strings.
    ws = b.user("hm-ws", t0)
    cp = b.context(ws["id"], "service", t0, "cp-hm-ws")
    b.profile(
        cp["id"],
        {
            "serviceType": " \t\n\r\f\vplumbing \t\n\r\f\v",
            "budgetRange": "\u00a0100\u00a0",
            "timelineNeeded": " \t\n\r\f\v",
            "credentialsRequired": True,
            "coreValues": ["\u2003a", "a", "\va\f", "\u3000", "\u0085"],
            "constraints": [False, "false", 0, "0", Decimal("-0.0"), Decimal("1E+2"), "100"],
        },
        t0,
        "p-hm-ws",
    )
    # Real users whose ids differ only by case or whitespace: ids are matched exactly, never folded.
    for user_id in ["hm-twin", "HM-TWIN", "hm-twin "]:
        twin = b.user(user_id, t0)
        cp = b.context(twin["id"], "romantic", t0, f"cp-{user_id}")
        b.profile(cp["id"], {"location": user_id, "familyIntentions": user_id}, t0, f"p-{user_id}")
    # A user without context profiles; a context profile without profiles (intent from CP times).
    b.user("hm-no-contexts", t0)
    lonely = b.user("hm-lonely", t0)
    b.context(lonely["id"], "creative", t0 + timedelta(hours=2), "cp-hm-lonely")
    # A context profile whose profiles hold no keys (still drive created_at / updated_at).
    empty = b.user("hm-empty", t0)
    cp = b.context(empty["id"], "creative", t0, "cp-hm-empty")
    for index, data in enumerate([SQL_NULL, None, {}, "text", [1, 2], 7, False]):
        b.profile(cp["id"], data, t0 + timedelta(minutes=index), f"p-hm-empty-{index}")

    # Orphan context profiles: userId matching no user, incl. case / whitespace variants of real ids.
    for index, user_id in enumerate(["HM-TIE", "hm-tie ", " hm-tie", "hm-tie\t", "ghost-user"]):
        cp = b.context(user_id, CONTEXT_TYPES[index], t0, f"cp-hm-orphan-{index}")
        b.profile(cp["id"], {"location": "Nowhere", "Location": None, "friendshipDepth": 1}, t0, f"p-hm-oc-{index}")
    cp = b.context("ghost-user", "romantic", t0, "cp-hm-orphan-data")
    b.profile(cp["id"], "a string", t0, "p-hm-oc-string")
    b.profile(cp["id"], SQL_NULL, t0, "p-hm-oc-sqlnull")
    b.profile(cp["id"], None, t0, "p-hm-oc-jsonnull")
    b.messages(cp["id"], t0, 1)
    # Orphan profiles: contextProfileId matching no ContextProfile (incl. variants of real ids).
    for index, context_id in enumerate(["CP-HM-WS", "cp-hm-ws ", "ghost-context"]):
        b.profile(context_id, {"location": "Limbo", "unknownThing": [1]}, t0, f"p-hm-op-{index}")
    b.profile("ghost-context", [1, 2], t0, "p-hm-op-array")
    b.profile("ghost-context", SQL_NULL, t0, "p-hm-op-sqlnull")
    b.messages("ghost-context", t0, 1)  # an orphan chat message


def generate(seed: int, n_users: int) -> dict[str, list[dict]]:
    b = _Builder(seed)
    _hand_made_cases(b)
    rng = b.rng
    real_users = []
    for index in range(n_users):
        user_id = f"{rng.choice(['u', 'U', 'ü'])}{seed}-{index}"
        real_users.append(b.user(user_id, b.time(BASE_TIME + timedelta(days=index))))
    user_ids = {user["id"] for user in b.rows["User"]}

    for user in real_users:
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
            context_type = rng.choice(CONTEXT_TYPES[:3]) if rng.random() < 0.5 else rng.choice(CONTEXT_TYPES)
            cp = b.context(user["id"], context_type, b.time(user["createdAt"]))
            b.messages(cp["id"], cp["createdAt"], rng.choice([0, 0, 1, 3]))
            for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):  # several legacy profiles, or none
                b.profile(cp["id"], b.blob(context_type), b.time(cp["createdAt"]))

    contexts = list(b.rows["ContextProfile"])
    context_ids = {cp["id"] for cp in contexts}
    # Orphan context profiles (a dangling userId) with profiles.
    for index in range(max(2, n_users // 20)):
        real = rng.choice(real_users)["id"]
        dangling = rng.choice([real.upper(), real.swapcase(), f"{real} ", f" {real}", f"ghost-{seed}-{index}"])
        if dangling in user_ids:
            continue
        context_type = rng.choice(CONTEXT_TYPES)
        cp = b.context(dangling, context_type, b.time(BASE_TIME))
        context_ids.add(cp["id"])
        for _ in range(rng.choice([0, 1, 2])):
            b.profile(cp["id"], b.blob(context_type), b.time(BASE_TIME))
    # Orphan profiles (a dangling contextProfileId).
    for index in range(max(2, n_users // 20)):
        real = rng.choice(contexts)["id"]
        dangling = rng.choice([real.upper(), real.swapcase(), f"{real} ", f"ghost-cp-{seed}-{index}"])
        if dangling in context_ids:
            continue
        b.profile(dangling, b.blob(rng.choice(CONTEXT_TYPES)), b.time(BASE_TIME))
        if rng.random() < 0.3:
            b.messages(dangling, BASE_TIME, 1)
    return b.rows


# ---------------------------------------------------------------------------------------------
# Loading

MARKER = "legacy_generator: generated legacy-shaped test data, safe to drop"

COLUMNS = {
    "User": ["id", "email", "name", "createdAt", "updatedAt"],
    "ContextProfile": ["id", "userId", "contextType", "tonePreference", "createdAt", "updatedAt"],
    "Profile": ["id", "contextProfileId", "data", "completeness", "missing", "createdAt", "updatedAt"],
    "ChatMessage": ["id", "contextProfileId", "role", "content", "createdAt"],
}


def load(conn_or_cursor, schema: str, rows: dict[str, list[dict]]) -> dict[str, int]:
    """(Re)create ``schema`` with the legacy DDL and insert ``rows``; returns row counts per table."""
    conn = conn_or_cursor.connection if isinstance(conn_or_cursor, psycopg.Cursor) else conn_or_cursor
    schema_id = sql.Identifier(schema)
    # no server-side prepared statements: a reload drops the enum type they would refer to
    threshold, conn.prepare_threshold = conn.prepare_threshold, None
    try:
        return _load(conn, schema, schema_id, rows)
    finally:
        conn.prepare_threshold = threshold


def _load(conn, schema: str, schema_id: sql.Identifier, rows: dict[str, list[dict]]) -> dict[str, int]:
    with conn.transaction(), conn.cursor() as cur:
        found = cur.execute(
            "select obj_description(n.oid, 'pg_namespace'),"
            " (select count(*) from pg_class as c where c.relnamespace = n.oid)"
            " from pg_namespace as n where n.nspname = %s",
            [schema],
        ).fetchone()
        if found is not None and found[0] != MARKER and found[1]:
            raise RuntimeError(f"schema {schema!r} exists and was not made by legacy_generator: refusing to drop it")
        cur.execute(sql.SQL("drop schema if exists {} cascade").format(schema_id))
        cur.execute(sql.SQL("create schema {}").format(schema_id))
        cur.execute(sql.SQL("comment on schema {} is {}").format(schema_id, sql.Literal(MARKER)))
        previous_path = cur.execute("select current_setting('search_path')").fetchone()[0]
        cur.execute(sql.SQL("set local search_path to {}").format(schema_id))
        cur.execute(packaged_sql("legacy_schema.sql"))
        cur.execute("select set_config('search_path', %s, true)", [previous_path])

        for table, columns in COLUMNS.items():
            placeholders = []
            for column in columns:
                if column == "data":
                    placeholders.append(sql.SQL("%s::jsonb"))
                elif column == "contextType":
                    placeholders.append(sql.SQL("%s::{}").format(sql.Identifier(schema, "RelationshipContextType")))
                else:
                    placeholders.append(sql.SQL("%s"))
            insert = sql.SQL("insert into {} ({}) values ({})").format(
                sql.Identifier(schema, table),
                sql.SQL(", ").join(sql.Identifier(column) for column in columns),
                sql.SQL(", ").join(placeholders),
            )
            params = [[_parameter(column, row[column]) for column in columns] for row in rows.get(table, [])]
            if params:
                cur.executemany(insert, params)
        counts = {
            table: cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))).fetchone()[0]
            for table in LEGACY_TABLES
        }
    return counts


def _parameter(column: str, value):
    if column == "data":
        return None if value is SQL_NULL else to_json(value)  # JSON null is the text 'null'
    return value
