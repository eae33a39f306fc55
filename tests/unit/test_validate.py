"""Validation of crawled items: every broken kind gets a reason, hostile-but-valid text passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crawlstore.validate import InvalidItem, validate_file

pytestmark = pytest.mark.unit

GOOD = {
    "source": "demo_shop",
    "crawled_at": "2026-11-23T10:00:00+00:00",
    "product_id": "P-00001",
    "name": "Walnut lamp",
    "brand": "Lumen",
    "category": "Lighting",
    "price": "19.99",
    "sale_price": None,
    "currency": "EUR",
    "url": "http://127.0.0.1:8000/catalogue/product/P-00001.html",
    "image_url": None,
    "rating": 4.5,
    "review_count": 12,
}


def write_lines(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def variant(**changes: object) -> bytes:
    item = {**GOOD, **changes}
    item = {k: v for k, v in item.items() if v is not ...}
    return json.dumps(item, ensure_ascii=False).encode()


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (variant(name=...), "name:missing"),
        (variant(price="abc"), "price:decimal_parsing"),
        (variant(price="-3.00"), "price:greater_than_equal"),
        (variant(review_count="many"), "review_count:int_parsing"),
        (variant(rating=7), "rating:less_than_equal"),
        (variant(currency="euro"), "currency:string_pattern_mismatch"),
        (variant(product_id="../../etc/passwd"), "product_id:string_pattern_mismatch"),
        (variant(name="x" * 100_000), "name:string_too_long"),
        (variant(sale_price="25.00"), "item:value_error"),
        (variant(crawled_at="2026-11-23T10:00:00"), "crawled_at:timezone_aware"),
        (variant(unexpected="field"), "unexpected:extra_forbidden"),
        (b'{"product_id": "P-1", "name": ', "item:invalid_json"),
        (b'{"product_id": "P-\xff\xfe"}', "item:invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "item:invalid_json"),
    ],
)
def test_each_broken_kind_is_rejected_with_its_reason(tmp_path: Path, line: bytes, kind: str) -> None:
    valid, invalid, report = validate_file(write_lines(tmp_path, [variant(), line]), "product")
    assert [v.key for v in valid] == ["P-00001"]
    assert len(invalid) == 1
    assert kind in invalid[0].kinds
    assert invalid[0].raw == line  # the original bytes go to the DLQ, not a re-serialisation
    assert report.total == 2 and report.valid == 1 and report.invalid == 1
    assert report.errors[kind] == 1


@pytest.mark.parametrize(
    "name",
    [
        "Robert'); DROP TABLE products;--",
        "<script>alert(1)</script>",
        "호두나무 스탠드 🌰",
        "../../../etc/passwd",
        'tab\tand \\ backslash and "quotes"',
    ],
)
def test_hostile_but_valid_text_passes_verbatim(tmp_path: Path, name: str) -> None:
    valid, invalid, _ = validate_file(write_lines(tmp_path, [variant(name=name, category=name)]), "product")
    assert invalid == []
    assert valid[0].name == name  # type: ignore[attr-defined]
    assert valid[0].category == name  # type: ignore[attr-defined]


def test_invalid_item_keeps_its_key_when_it_has_one(tmp_path: Path) -> None:
    _, invalid, _ = validate_file(
        write_lines(tmp_path, [variant(price="abc"), variant(product_id=42)]), "product"
    )
    assert [i.key for i in invalid] == [b"P-00001", None]
    assert all(isinstance(i, InvalidItem) and i.message for i in invalid)


def test_report_counts_by_error_kind(tmp_path: Path) -> None:
    lines = [
        variant(),
        variant(price="abc", product_id="A"),
        variant(price="x", product_id="B"),
        variant(name=..., product_id="C"),
    ]
    _, _, report = validate_file(write_lines(tmp_path, lines), "product")
    assert report.errors == {"price:decimal_parsing": 2, "name:missing": 1}
    assert report.lines()[0] == "validated 4 item(s): 1 valid, 3 invalid, 0 repeated key(s)"


def test_reading_items_validate_too(tmp_path: Path) -> None:
    good = {
        "source": "demo_sensors",
        "crawled_at": "2026-11-23T10:00:00+00:00",
        "reading_id": "1:20261123T100000",
        "device_id": "1",
        "sensor1": 20.5,
        "motor1": 1200.0,
        "is_fail": False,
        "measured_at": "2026-11-23T10:00:00+00:00",
    }
    bad = {**good, "reading_id": "1:x", "is_fail": "maybe", "sensor2": "NaN"}
    valid, invalid, _ = validate_file(
        write_lines(tmp_path, [json.dumps(good).encode(), json.dumps(bad).encode()]), "reading"
    )
    assert [v.key for v in valid] == ["1:20261123T100000"]
    assert {"is_fail:bool_parsing", "sensor2:finite_number"} <= set(invalid[0].kinds)
