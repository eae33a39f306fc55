"""The items the pipeline carries, and the schema every item is validated against.

Two kinds: products from HTML catalogues and readings from JSON APIs. Text fields accept any
Unicode (including quotes, SQL-looking fragments and markup: stores get them parameterised or
escaped); what is rejected is what a store or a path could not take safely: missing fields,
wrong types, identifiers outside a strict alphabet (no `../`), oversize text, non-finite numbers.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

NaturalId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2048)]
Money = Annotated[
    Decimal, Field(ge=0, le=Decimal("1e9"), max_digits=12, decimal_places=2, allow_inf_nan=False)
]


class Item(BaseModel):
    """Common to every item: where it came from and when it was crawled."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    kind: ClassVar[str]
    schema_version: ClassVar[str]
    key_field: ClassVar[str]

    source: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    crawled_at: AwareDatetime

    @property
    def key(self) -> str:
        """The natural id: the Kafka message key and every store's primary key."""
        return str(getattr(self, self.key_field))


class ProductItem(Item):
    kind = "product"
    schema_version = "crawlstore.product.v1"
    key_field = "product_id"

    product_id: NaturalId
    name: ShortText
    brand: Annotated[str, StringConstraints(max_length=200)] | None = None
    category: Annotated[str, StringConstraints(max_length=200)] | None = None
    price: Money
    sale_price: Money | None = None
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    url: Url
    image_url: Url | None = None
    rating: Annotated[float, Field(ge=0, le=5, allow_inf_nan=False)] | None = None
    review_count: Annotated[int, Field(ge=0, le=10**9)] | None = None

    @model_validator(mode="after")
    def _sale_below_price(self) -> ProductItem:
        if self.sale_price is not None and self.sale_price > self.price:
            raise ValueError("sale_price is above price")
        return self


Measure = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]


class ReadingItem(Item):
    kind = "reading"
    schema_version = "crawlstore.reading.v1"
    key_field = "reading_id"

    reading_id: NaturalId
    device_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    sensor1: Measure | None = None
    sensor2: Measure | None = None
    sensor3: Measure | None = None
    motor1: Measure | None = None
    motor2: Measure | None = None
    motor3: Measure | None = None
    is_fail: bool
    measured_at: AwareDatetime


ITEM_TYPES: dict[str, type[Item]] = {t.kind: t for t in (ProductItem, ReadingItem)}
SCHEMAS: dict[str, type[Item]] = {t.schema_version: t for t in (ProductItem, ReadingItem)}


def reading_id(device_id: str, measured_at: datetime) -> str:
    """One reading per device and measurement time."""
    return f"{device_id}:{measured_at.strftime('%Y%m%dT%H%M%S')}"


def item_type(kind: str) -> type[Item]:
    try:
        return ITEM_TYPES[kind]
    except KeyError:
        raise ValueError(f"unknown item kind {kind!r}; known: {sorted(ITEM_TYPES)}") from None


def to_json_dict(item: Item) -> dict[str, Any]:
    """The JSON form published to Kafka (decimals as strings keep cents exact)."""
    return item.model_dump(mode="json")
