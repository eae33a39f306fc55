"""Which changes to a kind's declaration the stores can apply without loss (one rule for all).

Each store records the declaration it was last prepared from (PostgreSQL in `crawlstore_schema`,
OpenSearch in the index mapping's `_meta`) and compares the current one against it: a new
optional field is added; anything else that changed is refused with the reason.
"""

from __future__ import annotations

from typing import Any

from crawlstore.config.models import KindSpec

ADVICE = (
    "Nothing was changed. Declare a new field as optional (required: false), keep a field's type "
    "and the key, or declare a new kind (new table and index) and replay into it."
)


def declaration(kind: KindSpec) -> dict[str, Any]:
    """What a store is prepared from: the key and, per field, type and required (JSON-ready)."""
    return {
        "key": kind.key_field,
        "fields": {name: {"type": f.type, "required": f.required} for name, f in kind.fields.items()},
    }


def unsafe_changes(recorded: dict[str, Any], wanted: dict[str, Any], rows: int) -> list[str]:
    """Why `wanted` cannot replace `recorded` on a store holding `rows` records (empty: it can)."""
    problems = []
    if recorded["key"] != wanted["key"]:
        problems.append(f"the key changed from {recorded['key']} to {wanted['key']}")
    for name, before in recorded["fields"].items():
        now = wanted["fields"].get(name)
        if now is None:
            problems.append(f"field {name} was removed (its column and values stay; declare it again)")
        elif now["type"] != before["type"]:
            problems.append(f"field {name} changed type from {before['type']} to {now['type']}")
        elif now["required"] and not before["required"]:
            problems.append(f"field {name} became required")
    for name, now in wanted["fields"].items():
        if name not in recorded["fields"] and now["required"] and rows:
            problems.append(f"new field {name} is required but the store holds {rows} record(s)")
    return problems


def added_fields(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [name for name in wanted["fields"] if name not in recorded["fields"]]
