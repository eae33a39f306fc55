"""Validate crawled items against the item schema and report counts by error kind."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crawlstore.items import Item, item_type
from crawlstore.messages import describe_validation_error

log = logging.getLogger(__name__)
MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class InvalidItem:
    line_no: int
    raw: bytes
    key: bytes | None
    crawled_at: datetime | None
    kinds: tuple[str, ...]
    message: str


@dataclass
class ValidationReport:
    total: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def lines(self) -> list[str]:
        out = [
            f"validated {self.total} item(s): {self.valid} valid, {self.invalid} invalid, "
            f"{self.duplicates} repeated key(s)"
        ]
        out += [f"  {count:6d}  {kind}" for kind, count in self.errors.most_common()]
        return out


def error_kinds(exc: ValidationError) -> tuple[str, ...]:
    """`field:error_type` per error, e.g. `price:decimal_parsing`, `name:missing`."""
    return tuple(sorted({f"{'.'.join(map(str, e['loc'])) or 'item'}:{e['type']}" for e in exc.errors()}))


def _raw_key(data: Any, key_field: str) -> bytes | None:
    value = data.get(key_field) if isinstance(data, dict) else None
    return value.encode()[:MAX_KEY_BYTES] if isinstance(value, str) and value else None


def _crawled_at(data: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(data["crawled_at"]).astimezone(UTC)
    except (TypeError, KeyError, ValueError):
        return None


def validate_lines(path: Path, kind: str) -> Iterator[Item | InvalidItem]:
    """Each line of a crawl's JSON Lines file as a valid Item or an InvalidItem with the reason."""
    model = item_type(kind)
    with path.open("rb") as lines:
        for line_no, line in enumerate(lines, 1):
            raw = line.rstrip(b"\n")
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # invalid UTF-8, bad syntax, hostile nesting
                reason = f"not JSON: {exc!r}"[:500]
                yield InvalidItem(line_no, raw, None, None, ("item:invalid_json",), reason)
                continue
            try:
                yield model.model_validate(data)
            except ValidationError as exc:
                yield InvalidItem(
                    line_no,
                    raw,
                    _raw_key(data, model.key_field),
                    _crawled_at(data),
                    error_kinds(exc),
                    describe_validation_error(exc),
                )


def validate_file(path: Path, kind: str) -> tuple[list[Item], list[InvalidItem], ValidationReport]:
    report = ValidationReport()
    valid: list[Item] = []
    invalid: list[InvalidItem] = []
    seen: set[str] = set()
    for result in validate_lines(path, kind):
        report.total += 1
        if isinstance(result, InvalidItem):
            invalid.append(result)
            report.errors.update(result.kinds)
        elif result.key in seen:  # the same entity twice in one crawl: the later one wins in every store
            log.warning("duplicate %s key %s in %s", kind, result.key, path)
            report.duplicates += 1
            valid.append(result)
        else:
            seen.add(result.key)
            valid.append(result)
    report.valid, report.invalid = len(valid), len(invalid)
    return valid, invalid, report
