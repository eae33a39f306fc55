"""Light normalisation of extracted values into item dicts.

Strip text, read "€1,299.00" as "1299.00", timestamps as ISO 8601 in UTC. A value that cannot
be read is kept as it was, so validation rejects the item with a reason: nothing broken is
dropped or quietly repaired here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from crawlstore.config.models import TEMPLATE_PART, KeyTemplate
from crawlstore.items import item_type, render_key

# A currency symbol (€, £, $, ₩ ...) or ISO code before or after the amount, a sign either side
# of a leading symbol, thousands separators only in their proper places.
_MARK = r"(?:[^\w\s.,+\-\u2212]{1,3}|[A-Z]{3})"
_MONEY = re.compile(
    rf"(?P<sign1>[-\u2212])?\s*{_MARK}?\s*(?P<sign2>[-\u2212])?\s*"
    rf"(?P<whole>\d{{1,3}}(?:,\d{{3}})+|\d+)(?P<fraction>\.\d+)?\s*{_MARK}?"
)
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_COUNT = re.compile(r"\d{1,3}(?:,\d{3})+|\d+")


def text(value: Any) -> Any:
    """Stripped text; empty text counts as absent."""
    if isinstance(value, str):
        return value.strip() or None
    return value


def identifier(value: Any) -> Any:
    """Ids: JSON numbers become text ("1"), text is stripped."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(value)


def money(value: Any) -> Any:
    """A decimal amount as text ("19.99"), exact: never through a float."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    value = text(value)
    if not isinstance(value, str) or not (match := _MONEY.fullmatch(value)):
        return value
    if match["sign1"] and match["sign2"]:
        return value
    sign = "-" if match["sign1"] or match["sign2"] else ""
    return f"{sign}{match['whole'].replace(',', '')}{match['fraction'] or ''}"


def number(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    value = text(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    return value


def count(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    value = text(value)
    if isinstance(value, str) and _COUNT.fullmatch(value):
        return int(value.replace(",", ""))
    return value


def boolean(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def parse_moment(value: Any) -> datetime | None:
    """The datetime in `value` (ISO 8601 text or epoch seconds), naive if it names no zone."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return moment.astimezone(UTC) if moment.tzinfo else moment
    return None


def timestamp(value: Any) -> Any:
    """ISO 8601 in UTC; a time without a zone stays as it was (UTC would be a guess)."""
    moment = parse_moment(value)
    if moment is None or moment.tzinfo is None:
        return text(value)
    return moment.isoformat()


def json_value(value: Any) -> Any:
    """Text that holds a JSON object is read as one; anything else stays as it was."""
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def text_list(value: Any) -> Any:
    """One text is a one-element list; each element stripped, empty ones left out."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [v for v in (text(v) for v in value) if v is not None]
    return value


Parser = Callable[[Any], Any]
# How an extracted value of each declared field type is read (url: joined with the page's URL).
PARSERS: dict[str, Parser] = {
    "identifier": identifier,
    "text": text,
    "url": text,
    "integer": count,
    "decimal": money,
    "float": number,
    "boolean": boolean,
    "timestamp": timestamp,
    "date": text,
    "enum": text,
    "list[text]": text_list,
    "json": json_value,
}


def _templated_key(
    template: str, raw: Mapping[str, Any], values: Mapping[str, Any], types: Mapping[str, str]
) -> str | None:
    """The key from its template; times from the raw value, so one without a zone still gets its key."""
    parts: dict[str, Any] = {}
    for name in TEMPLATE_PART.findall(template):
        value = parse_moment(raw.get(name)) if types[name] == "timestamp" else values.get(name)
        if value is None or value == "" or (types[name] != "timestamp" and not isinstance(value, str | int)):
            return None
        parts[name] = value
    return render_key(template, parts)


def normalise(
    kind: str, raw: Mapping[str, Any], *, page_url: str, source: str, crawled_at: datetime
) -> dict[str, Any]:
    """The item dict of `kind` made from extracted values; keys in the item model's field order."""
    spec = item_type(kind).spec
    types = {name: f.type for name, f in spec.fields.items()}
    values: dict[str, Any] = {"source": source, "crawled_at": crawled_at.isoformat()}
    for name, value in raw.items():
        if types.get(name) == "url":
            link = text(value)
            values[name] = urljoin(page_url, link) if isinstance(link, str) else link
        else:
            values[name] = PARSERS[types.get(name, "text")](value)
    if "url" in types and "url" not in raw:
        values["url"] = page_url
    if isinstance(spec.key, KeyTemplate) and spec.key.field not in raw:
        values[spec.key.field] = _templated_key(spec.key.template, raw, values, types)
    fields = item_type(kind).model_fields
    return {name: values[name] for name in fields if name in values}
