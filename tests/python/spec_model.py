"""An independent, pure-Python model of MIGRATION_SPEC.md §2–§7 and §11 (the dry-run tables, with the
reviewers' decisions).

Written from the spec and docs/decisions.md only, never from the dbt models, so that the
differential test (test_differential.py) can compare two independent readings of the contract.
Small and slow on purpose: a reader should be able to check each rule against the spec by eye.

Representation:
- Inputs are lists of dicts keyed by the legacy column names (``"id"``, ``"userId"``,
  ``"contextType"``, ``"createdAt"`` as ``datetime``, ...). ``Profile["data"]`` is the parsed JSON
  (``json.loads(text, parse_float=Decimal)``: objects are dicts, numbers are ``int``/``Decimal``,
  JSON ``null`` is ``None``), or ``SQL_NULL`` when the column is SQL NULL.
- Outputs are row dicts keyed by the column names of docs/decisions.md ("Output shapes"). Text
  columns hold ``str`` or ``None`` (SQL NULL); ``text[]`` columns hold ``list[str]``; jsonb
  columns hold a JSON value as above, with ``None`` meaning JSON ``null`` and ``SQL_NULL`` meaning
  SQL NULL; timestamps are ``datetime``; numeric columns hold ``Decimal`` and boolean columns
  ``bool``, or ``None`` (SQL NULL).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
import uuid
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

LOOKUP_SEEDS = Path(__file__).resolve().parents[2] / "seeds" / "lookup"


class _SqlNull:
    """SQL NULL, as opposed to JSON ``null`` (``None``)."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SQL_NULL"

    def __reduce__(self):
        return (_SqlNull, ())


SQL_NULL = _SqlNull()

TRIMMED = " \t\n\r\f\v"  # §3: exactly these six; NOT U+00A0 and other unicode whitespace
ABSENT = "<absent>"  # §3 outcomes of normalising one value
TYPE_MISMATCH = "<type_mismatch>"


# ---------------------------------------------------------------------------------------------
# The seeds (§2 field map, §6 required fields)


@dataclasses.dataclass(frozen=True)
class MapRow:
    priority: int
    legacy_key: str
    target: str  # 'profile' (shared) or 'context_intent'
    context_type: str | None  # None for shared fields
    field: str  # camelCase target field
    kind: str  # 'scalar' | 'array' | 'object'


def read_field_map(path: Path = LOOKUP_SEEDS / "field_map.csv") -> list[MapRow]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [
            MapRow(int(r["priority"]), r["legacy_key"], r["target"], r["context_type"] or None, r["field"], r["kind"])
            for r in csv.DictReader(handle)
        ]
    return sorted(rows, key=lambda row: row.priority)


def read_required_fields(path: Path = LOOKUP_SEEDS / "required_fields.csv") -> dict[str, list[str]]:
    """``{'profile': [...], 'romantic': [...], ...}``, each list in the §6 order."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: (r["target"], int(r["position"])))
    required: dict[str, list[str]] = {}
    for row in rows:
        required.setdefault(row["target"], []).append(row["field"])
    return required


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def intent_fields(field_map: list[MapRow]) -> list[MapRow]:
    """One row per ContextIntent field, in field-map order (the first row naming each field)."""
    seen: dict[str, MapRow] = {}
    for row in field_map:
        if row.target == "context_intent":
            seen.setdefault(row.field, row)
    return list(seen.values())


def shared_fields(field_map: list[MapRow]) -> list[MapRow]:
    seen: dict[str, MapRow] = {}
    for row in field_map:
        if row.target == "profile":
            seen.setdefault(row.field, row)
    return list(seen.values())


# ---------------------------------------------------------------------------------------------
# JSON values as jsonb sees them


def number_text(number: int | Decimal) -> str:
    """A JSON number's text as PostgreSQL's jsonb prints it (numeric_out): plain notation, the
    input's scale kept (``1.50`` → ``1.50``, ``1e2`` → ``100``, ``1.50e1`` → ``15.0``), no ``-0``."""
    value = Decimal(number)
    text = format(value, "f")
    return text.lstrip("-") if value.is_zero() else text


def jsonb_equal_key(value):
    """A hashable key equal for two JSON values exactly when jsonb ``=`` holds: numbers by value
    (``1.0`` = ``1.00``), objects by key set regardless of order, ``30`` ≠ ``"30"``, ``true`` ≠ ``1``."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):  # before int: bool is an int in Python
        return ("boolean", value)
    if isinstance(value, (int, Decimal)):
        return ("number", Decimal(value))  # Decimal equality and hash are by value
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(jsonb_equal_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, jsonb_equal_key(item)) for key, item in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def jsonb_exact_key(value):
    """Like ``jsonb_equal_key`` but numbers by their printed text (``1.5`` ≠ ``1.50``): what a
    test needs to say two jsonb values print the same."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return ("number", number_text(value))
    if isinstance(value, list):
        return ("array", tuple(jsonb_exact_key(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((key, jsonb_exact_key(item)) for key, item in value.items()))
    return jsonb_equal_key(value)


def is_number(value) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def atom_text(value) -> str | None:
    """§3 for one string/number/boolean: trimmed string or jsonb text; None when empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return number_text(value)
    text = value.strip(TRIMMED)
    return text or None


# ---------------------------------------------------------------------------------------------
# §3 Normalising one value


def normalise(value, kind: str):
    """ABSENT, TYPE_MISMATCH, or the normalised value: scalar → str, array → list[str], object → dict."""
    if value is None:  # JSON null counts as absent, whatever the kind
        return ABSENT
    if kind == "scalar":
        if isinstance(value, (dict, list)):
            return TYPE_MISMATCH
        return atom_text(value) or ABSENT
    if kind == "array":
        if isinstance(value, dict):
            return TYPE_MISMATCH
        items = value if isinstance(value, list) else [value]  # a lone scalar is a one-element array
        if any(isinstance(item, (dict, list)) for item in items):
            return TYPE_MISMATCH
        texts = [atom_text(item) for item in items if item is not None]
        result = dedupe([text for text in texts if text is not None])
        return result or ABSENT
    if kind == "object":
        if not isinstance(value, dict):
            return TYPE_MISMATCH
        kept = {key: item for key, item in value.items() if item is not None}
        return kept or ABSENT
    raise ValueError(f"unknown kind {kind!r} in the field map")


def dedupe(values: list, key=lambda value: value) -> list:
    """Distinct values, first occurrence kept, order kept."""
    seen, result = set(), []
    for value in values:
        if key(value) not in seen:
            seen.add(key(value))
            result.append(value)
    return result


# ---------------------------------------------------------------------------------------------
# §2 + §5: classify every top-level key of every legacy Profile


@dataclasses.dataclass
class KeyOutcome:
    """One accounting line of §5: a top-level key (or ``key=None`` for a non-object blob)."""

    profile: dict
    context_profile: dict | None
    key: str | None
    value: object  # the original JSON value
    reason: str | None  # None = mapped
    map_row: MapRow | None = None
    normalised: object = ABSENT


def classify(users, context_profiles, profiles, field_map) -> list[KeyOutcome]:
    user_ids = {user["id"] for user in users}
    context_by_id = {cp["id"]: cp for cp in context_profiles}
    rows_by_key: dict[str, list[MapRow]] = {}
    for row in field_map:
        rows_by_key.setdefault(row.legacy_key, []).append(row)

    outcomes = []
    for profile in profiles:
        context = context_by_id.get(profile["contextProfileId"])  # ids match exactly (§4)
        if context is None:
            orphan = "orphan_profile"
        elif context["userId"] not in user_ids:
            orphan = "orphan_context_profile"
        else:
            orphan = None
        data = profile["data"]
        if data is SQL_NULL or data is None:  # holds no keys (§5)
            continue
        if not isinstance(data, dict):
            outcomes.append(KeyOutcome(profile, context, None, data, orphan or "not_an_object"))
            continue
        for key, value in data.items():
            if orphan:  # an orphan reason beats every other
                outcomes.append(KeyOutcome(profile, context, key, value, orphan))
                continue
            candidates = rows_by_key.get(key, [])  # case-sensitive, exact
            here = [row for row in candidates if row.target == "profile" or row.context_type == context["contextType"]]
            if not candidates:
                outcomes.append(KeyOutcome(profile, context, key, value, "unknown_key"))
            elif not here:  # wrong_context beats type_mismatch
                outcomes.append(KeyOutcome(profile, context, key, value, "wrong_context"))
            else:
                row = here[0]  # (the seed maps a key at most once per context)
                normalised = normalise(value, row.kind)
                reason = "type_mismatch" if normalised is TYPE_MISMATCH else None
                outcomes.append(KeyOutcome(profile, context, key, value, reason, row, normalised))
    return outcomes


def unmapped_row(outcome: KeyOutcome) -> dict:
    context = outcome.context_profile
    orphan_profile = outcome.reason == "orphan_profile"
    return {
        "user_id": None if orphan_profile else context["userId"],
        "context_type": None if orphan_profile else context["contextType"],
        "context_profile_id": outcome.profile["contextProfileId"],
        "legacy_profile_id": outcome.profile["id"],
        "key": outcome.key,
        "value": outcome.value,  # verbatim; JSON null stays JSON null (None), never SQL_NULL
        "reason": outcome.reason,
    }


# ---------------------------------------------------------------------------------------------
# §4 merging, §6 completeness, §7 rows


def context_order(context: dict, profile: dict, priority: int = 0) -> tuple:
    """§4: ContextProfile createdAt, id (bytes), Profile createdAt, id (bytes); then, for aliases
    found in one blob, the field map's priority."""
    return (
        context["createdAt"],
        context["id"].encode(),
        profile["createdAt"],
        profile["id"].encode(),
        priority,
    )


def merge_field(
    user_id: str, context_type: str | None, row: MapRow, values: list, conflicts: list, decisions: dict | None = None
):
    """§4: merge one field's present values (given in context order), logging conflicts; ABSENT if none.
    §11: a conflict's migrated value is the one a decision (``decisions``, by conflict) names, if any."""
    decisions = decisions or {}
    if not values:
        return ABSENT
    if row.kind == "array":  # union, exact dedupe; arrays never conflict
        return dedupe([item for value in values for item in value])
    if row.kind == "scalar":
        distinct = dedupe(values)
        if len(distinct) > 1:
            conflict = conflict_row(user_id, context_type, row.field, distinct, decisions)
            conflicts.append(conflict)
            return conflict["chosen"]
        return distinct[0]
    merged = {}  # object: union of sub-keys, each the first present value (or the decided one)
    sub_keys = dedupe([sub_key for value in values for sub_key in value])
    for sub_key in sub_keys:
        sub_values = [value[sub_key] for value in values if sub_key in value]
        distinct = dedupe(sub_values, key=jsonb_equal_key)
        merged[sub_key] = sub_values[0]
        if len(distinct) > 1:
            conflict = conflict_row(user_id, context_type, f"{row.field}.{sub_key}", distinct, decisions)
            conflicts.append(conflict)
            merged[sub_key] = conflict["chosen"]
    return merged


def conflict_row(user_id, context_type, field, distinct: list, decisions: dict | None = None) -> dict:
    """§4's log row; §11: a decision naming one of the values (JSON-equal: a scalar's values are strings,
    equal when identical; object sub-values by jsonb equality) makes that value, as the conflict holds
    it, the chosen one."""
    decision = (decisions or {}).get((user_id, context_type, field))
    chosen, decided_by = distinct[0], "first_value"
    if decision is not None:
        named = [value for value in distinct if jsonb_equal_key(value) == jsonb_equal_key(decision["value"])]
        if named:
            chosen, decided_by = named[0], "reviewer"
    return {
        "user_id": user_id,
        "context_type": context_type,
        "field": field,
        "values": distinct,
        "chosen": chosen,
        "decided_by": decided_by,
    }


def decision_rows(decisions: list[dict], conflicts: list[dict]) -> list[dict]:
    """§11: each decision applied (it chose its conflict's value) or stale (no such conflict, or its value
    is not among the conflict's values)."""
    by_key = {(c["user_id"], c["context_type"], c["field"]): c for c in conflicts}
    rows = []
    for decision in decisions:
        conflict = by_key.get((decision["user_id"], decision["context_type"], decision["field"]))
        if conflict is None:
            status, reason = "stale", "no_conflict"
        elif conflict["decided_by"] == "reviewer":  # one decision per conflict: this one
            status, reason = "applied", None
        else:
            status, reason = "stale", "value_not_among_values"
        rows.append(
            {
                "user_id": decision["user_id"],
                "context_type": decision["context_type"],
                "field": decision["field"],
                "decided_value": decision["value"],
                "status": status,
                "stale_reason": reason,
            }
        )
    return rows


def completeness(merged: dict, required: list[str]) -> tuple[int, list[str]]:
    """§6: round(100 × filled ÷ required), half away from zero; missing in the required order."""
    missing = [field for field in required if merged.get(field, ABSENT) is ABSENT]
    filled = len(required) - len(missing)
    return (200 * filled + len(required)) // (2 * len(required)), missing


def md5_uuid(text: str) -> str:
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def migrate(
    users, context_profiles, profiles, field_map=None, required_fields=None, decisions: list[dict] | None = None
) -> dict[str, list[dict]]:
    """The dry-run tables; ``decisions`` (§11): dicts of ``user_id``, ``context_type`` (None for a shared
    field), ``field`` (as the conflict log names it) and ``value`` (a JSON value), one per conflict."""
    decisions = decisions or []
    decided = {(d["user_id"], d["context_type"], d["field"]): d for d in decisions}
    field_map = read_field_map() if field_map is None else field_map
    required_fields = read_required_fields() if required_fields is None else required_fields
    outcomes = classify(users, context_profiles, profiles, field_map)

    # Present values per (user, context type or None for shared, field), in context order.
    contributions: dict[tuple, list] = {}
    for outcome in sorted(
        (o for o in outcomes if o.reason is None and o.normalised is not ABSENT),
        key=lambda o: context_order(o.context_profile, o.profile, o.map_row.priority),
    ):
        row, context = outcome.map_row, outcome.context_profile
        scope = None if row.target == "profile" else context["contextType"]
        contributions.setdefault((context["userId"], scope, row.field), []).append(outcome.normalised)

    # §7 timestamps: every legacy Profile attached to the row's ContextProfiles, whatever its content.
    profiles_by_context: dict[str, list[dict]] = {}
    for profile in profiles:
        profiles_by_context.setdefault(profile["contextProfileId"], []).append(profile)

    conflicts: list[dict] = []

    def merged_fields(user_id, scope, rows):
        merged = {}
        for row in rows:
            merged[row.field] = merge_field(
                user_id, scope, row, contributions.get((user_id, scope, row.field), []), conflicts, decided
            )
        return merged

    profile_rows = []
    for user in users:
        user_id = user["id"]
        merged = merged_fields(user_id, None, shared_fields(field_map))
        attached = [
            p for cp in context_profiles if cp["userId"] == user_id for p in profiles_by_context.get(cp["id"], [])
        ]
        score, missing = completeness(merged, required_fields["profile"])
        row = {"id": md5_uuid("UserProfile/" + user_id), "user_id": user_id}
        for field in shared_fields(field_map):
            value = merged[field.field]
            if field.kind == "array":
                row[snake_case(field.field)] = [] if value is ABSENT else value
            elif field.kind == "object":
                row[snake_case(field.field)] = {} if value is ABSENT else value
            else:
                row[snake_case(field.field)] = None if value is ABSENT else value
        row |= {
            "completeness": score,
            "missing": missing,
            "created_at": min((p["createdAt"] for p in attached), default=user["createdAt"]),
            "updated_at": max((p["updatedAt"] for p in attached), default=user["updatedAt"]),
        }
        profile_rows.append(row)

    user_ids = {user["id"] for user in users}
    intent_rows = []
    pairs = dedupe([(cp["userId"], cp["contextType"]) for cp in context_profiles if cp["userId"] in user_ids])
    for user_id, context_type in pairs:
        contexts = [cp for cp in context_profiles if (cp["userId"], cp["contextType"]) == (user_id, context_type)]
        own_fields = [f for f in intent_fields(field_map) if f.context_type == context_type]
        merged = merged_fields(user_id, context_type, own_fields)
        attached = [p for cp in contexts for p in profiles_by_context.get(cp["id"], [])]
        score, missing = completeness(merged, required_fields[context_type])
        row = {
            "id": md5_uuid(f"ContextIntent/{user_id}/{context_type}"),
            "user_id": user_id,
            "context_type": context_type,
        }
        for field in intent_fields(field_map):
            value = merged.get(field.field, ABSENT)
            if value is ABSENT:
                row[snake_case(field.field)] = SQL_NULL if field.kind == "array" else None
            else:
                row[snake_case(field.field)] = value
        row |= {
            "completeness": score,
            "missing": missing,
            "created_at": min(p["createdAt"] for p in attached) if attached else min(c["createdAt"] for c in contexts),
            "updated_at": max(p["updatedAt"] for p in attached) if attached else max(c["updatedAt"] for c in contexts),
        }
        intent_rows.append(row)

    return {
        "profile": profile_rows,
        "context_intent": intent_rows,
        "migration_conflicts": conflicts,
        "migration_unmapped_fields": [unmapped_row(o) for o in outcomes if o.reason is not None],
        "migration_decisions": decision_rows(decisions, conflicts),
    }


def key_accounting(users, context_profiles, profiles, field_map=None) -> dict[str, int]:
    """§5 totals: keys seen (top-level keys of object blobs) = keys mapped + keys unmapped; non-object blobs apart."""
    field_map = read_field_map() if field_map is None else field_map
    outcomes = classify(users, context_profiles, profiles, field_map)
    keyed = [o for o in outcomes if o.key is not None]
    return {
        "keys_seen": sum(len(p["data"]) for p in profiles if isinstance(p["data"], dict)),
        "keys_mapped": sum(1 for o in keyed if o.reason is None),
        "keys_unmapped": sum(1 for o in keyed if o.reason is not None),
        "non_object_blobs": sum(1 for o in outcomes if o.key is None),
    }


# ---------------------------------------------------------------------------------------------
# §7 migration_summary: every figure and check of docs/decisions.md ("Verification summary metrics")

DEFAULT_MAX_CONFLICT_RATE = Decimal("0.05")  # the dbt var max_conflict_rate's default (decisions.md)


def numeric_division(dividend: int, divisor: int) -> Decimal:
    """``dividend::numeric / divisor`` exactly as PostgreSQL computes it for two integers >= 0
    (numeric.c, select_div_scale + div_var): the result scale gives at least 16 significant digits
    (``NUMERIC_MIN_SIG_DIGITS``), estimated from the base-10000 weights and first base-10000 digits of
    the operands (scale 0 here), and the last digit is rounded half away from zero. So ``3/11`` is
    ``0.27272727272727272727`` (20 places), ``12/11`` is ``1.0909090909090909`` (16), ``1/1`` is
    ``1.00000000000000000000``. test_differential checks this against the server."""
    if dividend < 0 or divisor <= 0:
        raise ValueError("only integers >= 0 over integers > 0")

    def weight_and_first_digit(n: int) -> tuple[int, int]:  # in base 10000 (NBASE); 0 for zero
        if n == 0:
            return 0, 0
        weight = (len(str(n)) - 1) // 4
        return weight, n // 10000**weight

    weight1, first1 = weight_and_first_digit(dividend)
    weight2, first2 = weight_and_first_digit(divisor)
    quotient_weight = weight1 - weight2 - (1 if first1 <= first2 else 0)
    scale = min(max(16 - 4 * quotient_weight, 0), 1000)  # NUMERIC_MIN/MAX_DISPLAY_SCALE: 0, 1000
    scaled = Fraction(dividend, divisor) * 10**scale
    return Decimal(math.floor(scaled + Fraction(1, 2))).scaleb(-scale)


def summary(
    users,
    context_profiles,
    profiles,
    chat_messages,
    outputs: dict[str, list[dict]] | None = None,
    max_conflict_rate: Decimal = DEFAULT_MAX_CONFLICT_RATE,
    field_map=None,
) -> list[dict]:
    """The ``migration_summary`` rows: ``metric``, ``value``, ``expected`` and ``passed`` (``None`` = SQL
    NULL for informational figures). Counted from the legacy rows and the spec, and from this model's
    own outputs (``migrate``'s, computed here when not given), never from the dry run's tables."""
    field_map = read_field_map() if field_map is None else field_map
    outputs = migrate(users, context_profiles, profiles, field_map) if outputs is None else outputs
    user_ids = {user["id"] for user in users}
    context_by_id = {cp["id"]: cp for cp in context_profiles}
    migrated_contexts = [cp for cp in context_profiles if cp["userId"] in user_ids]
    intent_pairs = {(cp["userId"], cp["contextType"]) for cp in migrated_contexts}  # §7: the check's expected

    def orphan_reason(profile) -> str | None:  # §5, as classify() decides it
        context = context_by_id.get(profile["contextProfileId"])
        if context is None:
            return "orphan_profile"
        return None if context["userId"] in user_ids else "orphan_context_profile"

    def blob_kind(data) -> str:
        if data is SQL_NULL or data is None:
            return "null"  # SQL NULL or JSON null: no keys
        return "object" if isinstance(data, dict) else "non_object"

    accounting = key_accounting(users, context_profiles, profiles, field_map)
    conflicts = outputs["migration_conflicts"]
    users_with_conflicts = len({conflict["user_id"] for conflict in conflicts})
    profile_rows_per_user: dict[str, int] = {}
    for row in outputs["profile"]:
        profile_rows_per_user[row["user_id"]] = profile_rows_per_user.get(row["user_id"], 0) + 1
    intents_per_pair: dict[tuple, int] = {}
    for row in outputs["context_intent"]:
        pair = (row["user_id"], row["context_type"])
        intents_per_pair[pair] = intents_per_pair.get(pair, 0) + 1
    scored = outputs["profile"] + outputs["context_intent"]

    def message_link(message) -> str:
        context = context_by_id.get(message["contextProfileId"])  # ids match exactly
        if context is None:
            return "no_context_profile"
        if context["userId"] not in user_ids:
            return "orphan_context_profile"
        one = intents_per_pair.get((context["userId"], context["contextType"])) == 1
        return "one_intent" if one else "not_one_intent"

    links = [message_link(message) for message in chat_messages]
    count = {
        "users": len(users),
        "context_profiles_migrated": len(migrated_contexts),
        "intent_pairs": len(intent_pairs),
        "non_object_blob_rows": sum(1 for row in outputs["migration_unmapped_fields"] if row["key"] is None),
        "non_object_blobs": sum(1 for p in profiles if blob_kind(p["data"]) == "non_object"),
        "messages_of_migrated_context_profiles": sum(1 for link in links if link in ("one_intent", "not_one_intent")),
    }

    rows = []

    def figure(metric: str, value) -> None:
        rows.append({"metric": metric, "value": Decimal(value), "expected": None, "passed": None})

    def check(metric: str, value, expected, at_most: bool = False) -> None:
        value, expected = Decimal(value), Decimal(expected)
        passed = value <= expected if at_most else value == expected
        rows.append({"metric": metric, "value": value, "expected": expected, "passed": passed})

    figure("users", count["users"])
    check("profiles", len(outputs["profile"]), count["users"])
    check("users_with_one_profile", sum(1 for u in users if profile_rows_per_user.get(u["id"]) == 1), count["users"])
    figure("context_profiles", len(context_profiles))
    figure("context_profiles_migrated", count["context_profiles_migrated"])
    figure("orphan_context_profiles", len(context_profiles) - count["context_profiles_migrated"])
    check("context_intents", len(outputs["context_intent"]), count["intent_pairs"])
    figure("duplicate_context_profiles", count["context_profiles_migrated"] - count["intent_pairs"])
    figure("legacy_profiles", len(profiles))
    figure("legacy_profiles_migrated", sum(1 for p in profiles if orphan_reason(p) is None))
    figure(
        "legacy_profiles_of_orphan_context_profiles",
        sum(1 for p in profiles if orphan_reason(p) == "orphan_context_profile"),
    )
    figure("orphan_legacy_profiles", sum(1 for p in profiles if orphan_reason(p) == "orphan_profile"))
    figure("object_blobs", sum(1 for p in profiles if blob_kind(p["data"]) == "object"))
    figure("null_blobs", sum(1 for p in profiles if blob_kind(p["data"]) == "null"))
    check("non_object_blobs", count["non_object_blob_rows"], count["non_object_blobs"])
    figure("keys_seen", accounting["keys_seen"])
    figure("keys_mapped", accounting["keys_mapped"])
    figure("keys_unmapped", accounting["keys_unmapped"])
    check("keys_accounted", accounting["keys_mapped"] + accounting["keys_unmapped"], accounting["keys_seen"])
    figure("conflicts", len(conflicts))
    figure("users_with_conflicts", users_with_conflicts)
    # §4: users with at least one conflict ÷ ALL "User" rows (0 when there are none), a fraction
    rate = numeric_division(users_with_conflicts, count["users"]) if count["users"] else Decimal(0)
    check("conflict_rate", rate, max_conflict_rate, at_most=True)
    # §11: decisions that chose a conflict's value, and decisions that no longer apply (expected none)
    figure("conflicts_decided", sum(1 for conflict in conflicts if conflict["decided_by"] == "reviewer"))
    check("decisions_stale", sum(1 for row in outputs.get("migration_decisions", []) if row["status"] == "stale"), 0)
    check("completeness_out_of_range", sum(1 for row in scored if not 0 <= row["completeness"] <= 100), 0)
    figure("chat_messages", len(chat_messages))
    check(
        "chat_messages_mapped_to_one_intent",
        sum(1 for link in links if link == "one_intent"),
        count["messages_of_migrated_context_profiles"],
    )
    figure("chat_messages_of_orphan_context_profiles", sum(1 for link in links if link == "orphan_context_profile"))
    figure("chat_messages_without_context_profile", sum(1 for link in links if link == "no_context_profile"))
    return rows
