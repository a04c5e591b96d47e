"""What test_decoding prints of a change, read (orchestrator/stream.py reads the stream; this module only
parses and folds, without a database).

test_decoding prints each change as ``table <schema>.<table>: INSERT|UPDATE|DELETE: <columns>``, each
column ``name[type]:value``: the name as quote_identifier prints it, the value as its type's output
function prints it (quoted with ``'`` doubled inside for all but numbers and booleans), ``null``, or
``unchanged-toast-datum`` for an update's out-of-line value it did not change. An update that changed the
key (or any update under REPLICA IDENTITY FULL) prints ``old-key: ... new-tuple: ...``; a delete prints
the key (or the whole old row). A TRUNCATE, and a delete without a key, cannot say what changed.
"""

from __future__ import annotations

import dataclasses

from orchestrator import decision_store

DECISIONS = decision_store.TABLE
UNCHANGED = object()  # an update's TOASTed value it did not change: the copy's stays
DELETED = None


class StreamGap(Exception):
    """The stream cannot say what changed (a TRUNCATE, a delete naming no key): compare the digests."""


@dataclasses.dataclass
class Row:
    values: dict[str, str | None]  # column -> its text, as the server printed it
    keep: set[str]  # columns whose value stays the copy's (an unchanged TOASTed value)
    keep_from: str  # the key of the copy's row they come from


def fold(net: dict, decision_users: set[str], names: dict[str, str], line: str) -> None:
    """One line of test_decoding (``table <name>: <ACTION>: <columns>``) folded into ``net``, each row's net
    change so far ((table, key) -> Row, or DELETED), or into ``decision_users`` for a reviewer decision's
    row. ``names``: how test_decoding prints each table we follow -> its name. StreamGap when the line
    cannot say what changed."""
    try:
        _fold(net, decision_users, names, line)
    except ValueError:  # the parser met something it does not know: never guess
        raise StreamGap(f"unreadable test_decoding output: {line[:120]!r}") from None


def _fold(net: dict, decision_users: set[str], names: dict[str, str], line: str) -> None:
    head, _, rest = line.partition(": ")
    table = names[head[len("table ") :]]
    action, _, rest = rest.partition(": ")
    if action == "TRUNCATE":
        raise StreamGap(f"{table!r} was truncated")
    old, new = parse_tuple(rest)
    if action == "DELETE":  # its key (or, under REPLICA IDENTITY FULL, its whole row) is its only tuple
        old, new = old or new, None
    if table == DECISIONS:
        decision_users.update(t["user_id"] for t in (old, new) if t and isinstance(t.get("user_id"), str))
        return
    if action == "DELETE":
        if not old or not isinstance(old.get("id"), str):
            raise StreamGap(f"a row deleted in {table!r} named no key")
        net[(table, old["id"])] = DELETED
        return
    if new is None or not isinstance(new.get("id"), str):
        raise StreamGap(f"a change of {table!r} named no key")
    key = new["id"]
    old_key = old["id"] if old and isinstance(old.get("id"), str) else key
    previous = net.get((table, old_key))
    if old_key != key:
        net[(table, old_key)] = DELETED
    if action == "INSERT":
        net[(table, key)] = Row({c: v for c, v in new.items() if v is not UNCHANGED}, set(), key)
        return
    values = {c: v for c, v in new.items() if v is not UNCHANGED}
    keep: set[str] = set()
    keep_from = old_key
    for column in (c for c, v in new.items() if v is UNCHANGED):
        if previous is not None and column in previous.values:
            values[column] = previous.values[column]
        else:
            keep.add(column)
    if previous is not None:
        keep_from = previous.keep_from
        keep |= {c for c in previous.keep if c not in values}
    net[(table, key)] = Row(values, keep, keep_from)


def parse_tuple(text: str) -> tuple[dict | None, dict | None]:
    """test_decoding's columns: ``name[type]:value ...``, with ``old-key:`` / ``new-tuple:`` parts on an
    update that changed its key (or under REPLICA IDENTITY FULL): (old, new), old None without them."""
    old: dict | None = None
    current: dict = {}
    i, n = 0, len(text)
    if text.startswith("(no-tuple-data)"):
        return None, None
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text.startswith("old-key: ", i):
            i += len("old-key: ")
            continue
        if text.startswith("new-tuple: ", i):
            old, current = current, {}
            i += len("new-tuple: ")
            continue
        if text[i] == '"':
            column, i = _quoted(text, i)
        else:
            k = text.index("[", i)
            column, i = text[i:k], k
        if text[i] != "[":
            raise ValueError(f"unexpected test_decoding output near {text[i : i + 40]!r}")
        i = text.index("]:", i) + 2
        if text.startswith("null", i) and (i + 4 == n or text[i + 4] == " "):
            value, i = None, i + 4
        elif text.startswith("unchanged-toast-datum", i):
            value, i = UNCHANGED, i + len("unchanged-toast-datum")
        elif text[i] == "'":
            value, i = _quoted(text, i)
        else:
            k = text.find(" ", i)
            k = n if k < 0 else k
            value, i = text[i:k], k
        current[column] = value
    return old, current


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The string quoted at ``start`` (by the character there, doubled inside: a quoted identifier or a
    literal), and the index just past its closing quote. ValueError when it is not closed."""
    quote, parts, j = text[start], [], start + 1
    while True:
        k = text.index(quote, j)
        parts.append(text[j:k])
        if not text.startswith(quote * 2, k):
            return "".join(parts), k + 1
        parts.append(quote)
        j = k + 2
