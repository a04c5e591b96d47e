"""The original plan's per-user migration design, faithfully, as a baseline to measure ours against.

ORIGINAL_PLAN.md ("Performance Considerations", "Migration Script Structure"): load the users, then
in batches of 100 users, ``Promise.all(batch.map(user => migrateUser(user)))`` with a Prisma client
(a pool of 4 connections here: 4 worker threads, one connection each); for each user, the queries
Prisma issues for ``findUnique`` + ``include`` (the user; its context profiles; their profiles — one
query each), the merge in application code, and one transaction per user writing that user's
Profile and ContextIntents. Like the plan's script, it writes only those two tables (conflicts and
unmapped fields are collected in memory, as its console log would be).

The merge below is this baseline's own, small and per user: the plan's rules with the spec's
normalisation (trim, numbers/booleans as text, exact dedupe, first present value wins). It is a
speed baseline, not a second implementation of the contract (tests/python/spec_model.py is that).

Run on a sample of users (the first ``sample`` by id, which are random-looking ids) and extrapolated
to all users: the per-user cost does not depend on the sample, only on the table sizes.

Usage (PG* variables name the server):
    python benchmarks/naive_baseline.py --schema legacy_generated --sample 2000
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import threading
import time
import uuid

import psycopg
from psycopg import sql

BATCH_SIZE = 100
WORKERS = 4
OUTPUT_SCHEMA = "naive_baseline_out"
TRIM = " \t\n\r\f\v"

SHARED = {
    "coreValues": "array",
    "constraints": "array",
    "beliefs": "object",
    "interactionStyle": "object",
    "lifestyle": "object",
    "location": "scalar",
    "ageRange": "scalar",
    "name": "scalar",
}
INTENT = {
    "romantic": ["relationshipTimeline", "exclusivityExpectation", "familyIntentions", "attractionImportance"],
    "friendship": ["friendshipDepth", "groupActivityPreference", "emotionalSupportExpectation"],
    "professional": ["partnershipType", "commitmentHorizon", "complementarySkills", "equityOrRevShare"],
    "creative": ["creativeType", "roleNeeded", "processStyle", "egoBalance", "compensationExpectation"],
    "service": ["serviceType", "budgetRange", "timelineNeeded", "credentialsRequired"],
}
INTENT_FIELDS = [field for fields in INTENT.values() for field in fields]
REQUIRED_SHARED = ["coreValues", "beliefs", "interactionStyle", "lifestyle", "constraints", "location", "ageRange"]


# -- the per-user merge -------------------------------------------------------------------------------


def _atom(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return value.strip(TRIM) or None
    return None


def normalise(value, kind: str):
    """(normalised value or None, type mismatch?)"""
    if value is None:
        return None, False
    if kind == "scalar":
        return (None, True) if isinstance(value, (dict, list)) else (_atom(value), False)
    if kind == "array":
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict) or any(isinstance(item, (dict, list)) for item in items):
            return None, True
        texts = list(dict.fromkeys(t for t in (_atom(item) for item in items if item is not None) if t))
        return texts or None, False
    if not isinstance(value, dict):
        return None, True
    kept = {key: item for key, item in value.items() if item is not None}
    return kept or None, False


@dataclasses.dataclass
class Merged:
    profile: dict
    intents: dict[str, dict]
    conflicts: list[dict]
    unmapped: list[dict]


def merge_user(user_id: str, context_profiles: list[tuple], profiles: list[tuple]) -> Merged:
    """context_profiles: (id, contextType, createdAt); profiles: (id, contextProfileId, data, createdAt)."""
    by_cp: dict[str, list[tuple]] = {}
    for profile in profiles:
        by_cp.setdefault(profile[1], []).append(profile)
    ordered = []  # (context type, legacy profile id, data), in context order
    for cp_id, context_type, _created in sorted(context_profiles, key=lambda cp: (cp[2], cp[0].encode())):
        for profile in sorted(by_cp.get(cp_id, []), key=lambda p: (p[3], p[0].encode())):
            ordered.append((context_type, profile[0], profile[2]))

    shared: dict[str, list] = {field: [] for field in SHARED}
    intents: dict[str, dict[str, list]] = {}
    unmapped = []
    for context_type, legacy_id, data in ordered:
        intent_values = intents.setdefault(context_type, {field: [] for field in INTENT[context_type]})
        if data is None:
            continue
        if not isinstance(data, dict):
            unmapped.append({"profile": legacy_id, "key": None, "reason": "not_an_object"})
            continue
        for key, value in data.items():
            if key in SHARED:
                kind = SHARED[key]
                target = shared[key]
            elif key in intent_values:
                kind = "array" if key == "complementarySkills" else "scalar"
                target = intent_values[key]
            else:
                reason = "wrong_context" if key in INTENT_FIELDS else "unknown_key"
                unmapped.append({"profile": legacy_id, "key": key, "value": value, "reason": reason})
                continue
            normalised, mismatch = normalise(value, kind)
            if mismatch:
                unmapped.append({"profile": legacy_id, "key": key, "value": value, "reason": "type_mismatch"})
            elif normalised is not None:
                target.append(normalised)

    conflicts = []

    def first(field: str, values: list, context_type: str | None):
        distinct = list(dict.fromkeys(values))
        if len(distinct) > 1:
            conflicts.append({"user": user_id, "context": context_type, "field": field, "values": distinct})
        return distinct[0] if distinct else None

    def union(values: list) -> list:
        return list(dict.fromkeys(item for array in values for item in array))

    def merge_objects(field: str, values: list) -> dict:
        merged: dict = {}
        for key in dict.fromkeys(k for obj in values for k in obj):
            merged[key] = first(
                f"{field}.{key}", [json.dumps(o[key], sort_keys=True) for o in values if key in o], None
            )
            merged[key] = json.loads(merged[key])
        return merged

    profile = {}
    for field, kind in SHARED.items():
        values = shared[field]
        if kind == "scalar":
            profile[field] = first(field, values, None)
        elif kind == "array":
            profile[field] = union(values)
        else:
            profile[field] = merge_objects(field, values)
    filled = sum(1 for field in REQUIRED_SHARED if profile[field])
    profile["completeness"] = round(100 * filled / len(REQUIRED_SHARED))
    profile["missing"] = [field for field in REQUIRED_SHARED if not profile[field]]

    merged_intents = {}
    for context_type, values in intents.items():
        intent = {}
        for field in INTENT[context_type]:
            if field == "complementarySkills":
                intent[field] = union(values[field]) or None
            else:
                intent[field] = first(field, values[field], context_type)
        filled = sum(1 for field in INTENT[context_type] if intent[field])
        intent["completeness"] = round(100 * filled / len(INTENT[context_type]))
        intent["missing"] = [field for field in INTENT[context_type] if not intent[field]]
        merged_intents[context_type] = intent
    return Merged(profile, merged_intents, conflicts, unmapped)


# -- the plan's loop ----------------------------------------------------------------------------------


def _id(text: str) -> str:
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


PROFILE_COLUMNS = [
    "id",
    "userId",
    "coreValues",
    "beliefs",
    "interactionStyle",
    "lifestyle",
    "constraints",
    "location",
    "ageRange",
    "name",
    "completeness",
    "missing",
    "updatedAt",
]
INTENT_COLUMNS = ["id", "userId", "contextType", *INTENT_FIELDS, "completeness", "missing", "updatedAt"]


def _insert(table: str, columns: list[str], casts: dict[str, str]) -> sql.Composed:
    return sql.SQL("insert into {} ({}) values ({}) returning {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.SQL("%s" + casts.get(c, "")) for c in columns),
        sql.Identifier("id"),
    )


INSERT_PROFILE = _insert("UserProfile", PROFILE_COLUMNS, {c: "::jsonb" for c in PROFILE_COLUMNS[2:7]})
INSERT_INTENT = _insert(
    "ContextIntent",
    INTENT_COLUMNS,
    {"contextType": '::"RelationshipContextType"', "complementarySkills": "::jsonb"},
)


@dataclasses.dataclass
class NaiveResult:
    users: int
    seconds: float
    queries: int
    conflicts: int
    unmapped: int
    workers: int
    batch_size: int
    stopped_early: bool

    @property
    def users_per_second(self) -> float:
        return self.users / self.seconds if self.seconds else 0.0


class _Migrator:
    def __init__(self, conninfo: dict, legacy_schema: str, output_schema: str):
        self.conninfo, self.legacy_schema, self.output_schema = conninfo, legacy_schema, output_schema
        self.local = threading.local()
        self.lock = threading.Lock()
        self.connections: list[psycopg.Connection] = []
        self.queries = self.conflicts = self.unmapped = 0

    def _pg(self) -> psycopg.Connection:
        pg = getattr(self.local, "pg", None)
        if pg is None:
            pg = psycopg.connect(**self.conninfo, autocommit=True, application_name="naive baseline")
            pg.execute(
                sql.SQL("set search_path to {}, {}").format(
                    sql.Identifier(self.output_schema), sql.Identifier(self.legacy_schema)
                )
            )
            self.local.pg = pg
            with self.lock:
                self.connections.append(pg)
        return pg

    def migrate_user(self, user_id: str) -> None:
        pg = self._pg()
        user = pg.execute(
            'select "id", "email", "name", "createdAt", "updatedAt" from "User" where "id" = %s', [user_id]
        )
        user.fetchone()
        cps = pg.execute(
            'select "id", "contextType"::text, "createdAt" from "ContextProfile" where "userId" = %s', [user_id]
        ).fetchall()
        profiles = []
        if cps:
            profiles = pg.execute(
                'select "id", "contextProfileId", "data", "createdAt" from "Profile"'
                ' where "contextProfileId" = any(%s)',
                [[cp[0] for cp in cps]],
            ).fetchall()
        merged = merge_user(user_id, cps, profiles)
        queries = 3 if cps else 2
        with pg.transaction():
            p = merged.profile
            pg.execute(
                INSERT_PROFILE,
                [
                    _id("UserProfile/" + user_id),
                    user_id,
                    json.dumps(p["coreValues"]),
                    json.dumps(p["beliefs"]),
                    json.dumps(p["interactionStyle"]),
                    json.dumps(p["lifestyle"]),
                    json.dumps(p["constraints"]),
                    p["location"],
                    p["ageRange"],
                    p["name"],
                    p["completeness"],
                    p["missing"],
                    "now",
                ],
            )
            for context_type, intent in merged.intents.items():
                skills = intent.get("complementarySkills")
                pg.execute(
                    INSERT_INTENT,
                    [
                        _id(f"ContextIntent/{user_id}/{context_type}"),
                        user_id,
                        context_type,
                        *[
                            json.dumps(skills) if f == "complementarySkills" and skills else intent.get(f)
                            for f in INTENT_FIELDS
                        ],
                        intent["completeness"],
                        intent["missing"],
                        "now",
                    ],
                )
            queries += 3 + len(merged.intents)  # begin, profile, intents, commit
        with self.lock:
            self.queries += queries
            self.conflicts += len(merged.conflicts)
            self.unmapped += len(merged.unmapped)

    def close(self) -> None:
        for pg in self.connections:
            pg.close()


def prepare_output(conninfo: dict, legacy_schema: str, output_schema: str = OUTPUT_SCHEMA) -> None:
    """Empty Prisma-shaped output tables (the live DDL, with its foreign keys to the legacy "User")."""
    from orchestrator import db

    with psycopg.connect(**conninfo, autocommit=True) as pg, pg.transaction():
        pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(output_schema)))
        pg.execute(sql.SQL("create schema {}").format(sql.Identifier(output_schema)))
        pg.execute(
            sql.SQL("set local search_path to {}, {}").format(*map(sql.Identifier, (output_schema, legacy_schema)))
        )
        pg.execute(db.packaged_sql("unified_profile_migration.sql"))


def drop_output(conninfo: dict, output_schema: str = OUTPUT_SCHEMA) -> None:
    with psycopg.connect(**conninfo, autocommit=True) as pg:
        pg.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(output_schema)))


def run(
    conninfo: dict,
    legacy_schema: str,
    *,
    sample: int = 2000,
    workers: int = WORKERS,
    batch_size: int = BATCH_SIZE,
    budget_seconds: float | None = None,
    output_schema: str = OUTPUT_SCHEMA,
) -> NaiveResult:
    """Migrate the first ``sample`` users (by id) the plan's way; stop after the batch that exceeds the budget."""
    prepare_output(conninfo, legacy_schema, output_schema)
    migrator = _Migrator(conninfo, legacy_schema, output_schema)
    started = time.monotonic()
    done = 0
    stopped_early = False
    try:
        with psycopg.connect(**conninfo) as pg:
            users = [
                row[0]
                for row in pg.execute(
                    sql.SQL('select "id" from {} order by "id" limit %s').format(sql.Identifier(legacy_schema, "User")),
                    [sample],
                ).fetchall()
            ]
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(users), batch_size):
                batch = users[start : start + batch_size]
                list(pool.map(migrator.migrate_user, batch))  # Promise.all: the batch finishes before the next
                done += len(batch)
                if budget_seconds is not None and time.monotonic() - started > budget_seconds and done < len(users):
                    stopped_early = True
                    break
        seconds = time.monotonic() - started
    finally:
        migrator.close()
    return NaiveResult(
        users=done,
        seconds=seconds,
        queries=migrator.queries,
        conflicts=migrator.conflicts,
        unmapped=migrator.unmapped,
        workers=workers,
        batch_size=batch_size,
        stopped_early=stopped_early,
    )


FK_INDEXES = {  # what Prisma does not create, and the per-user design needs
    "naive_baseline_cp_user": ("ContextProfile", "userId"),
    "naive_baseline_profile_cp": ("Profile", "contextProfileId"),
}


def create_fk_indexes(conninfo: dict, legacy_schema: str) -> None:
    with psycopg.connect(**conninfo, autocommit=True) as pg:
        for name, (table, column) in FK_INDEXES.items():
            pg.execute(
                sql.SQL("create index {} on {} ({})").format(
                    sql.Identifier(name), sql.Identifier(legacy_schema, table), sql.Identifier(column)
                )
            )


def drop_fk_indexes(conninfo: dict, legacy_schema: str) -> None:
    with psycopg.connect(**conninfo, autocommit=True) as pg:
        for name in FK_INDEXES:
            pg.execute(sql.SQL("drop index if exists {}").format(sql.Identifier(legacy_schema, name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schema", required=True, help="the legacy schema")
    parser.add_argument("--sample", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--budget", type=float, default=None, help="stop after the batch that passes this many s")
    parser.add_argument("--with-fk-indexes", action="store_true", help="index the two foreign keys for the run")
    args = parser.parse_args()
    conninfo: dict = {}  # libpq reads the PG* variables
    if args.with_fk_indexes:
        create_fk_indexes(conninfo, args.schema)
    try:
        result = run(conninfo, args.schema, sample=args.sample, workers=args.workers, budget_seconds=args.budget)
    finally:
        if args.with_fk_indexes:
            drop_fk_indexes(conninfo, args.schema)
        drop_output(conninfo)
    print(json.dumps({**dataclasses.asdict(result), "users_per_second": result.users_per_second}, indent=2))


if __name__ == "__main__":
    main()
