"""Light normalisation of extracted values into item dicts.

Strip text, read "€1,299.00" as "1299.00", timestamps as ISO 8601 in UTC. A value that cannot
be read is kept as it was, so validation rejects the item with a reason: nothing broken is
dropped or quietly repaired here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from crawlstore.items import item_type, reading_id

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


Parser = Callable[[Any], Any]
_PARSERS: dict[str, dict[str, Parser]] = {
    "product": {
        "product_id": identifier,
        "price": money,
        "sale_price": money,
        "rating": number,
        "review_count": count,
    },
    "reading": {
        "reading_id": identifier,
        "device_id": identifier,
        "sensor1": number,
        "sensor2": number,
        "sensor3": number,
        "motor1": number,
        "motor2": number,
        "motor3": number,
        "is_fail": boolean,
        "measured_at": timestamp,
    },
}
_URL_FIELDS = frozenset({"url", "image_url"})


def _derived_reading_id(raw: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """device:time, from the raw time so a reading without a zone still gets its key."""
    device = values.get("device_id")
    moment = parse_moment(raw.get("measured_at"))
    if not isinstance(device, str) or not device or moment is None:
        return None
    return reading_id(device, moment)


def normalise(
    kind: str, raw: Mapping[str, Any], *, page_url: str, source: str, crawled_at: datetime
) -> dict[str, Any]:
    """The item dict of `kind` made from extracted values; keys in the item model's field order."""
    parsers = _PARSERS.get(kind, {})
    values: dict[str, Any] = {"source": source, "crawled_at": crawled_at.isoformat()}
    for name, value in raw.items():
        if name in _URL_FIELDS:
            link = text(value)
            values[name] = urljoin(page_url, link) if isinstance(link, str) else link
        else:
            values[name] = parsers.get(name, text)(value)
    fields = item_type(kind).model_fields
    if "url" in fields and "url" not in raw:
        values["url"] = page_url
    if kind == "reading" and "reading_id" not in raw:
        values["reading_id"] = _derived_reading_id(raw, values)
    return {name: values[name] for name in fields if name in values}
