"""The items the pipeline carries: one validation model per declared kind (crawlstore.config).

Text fields accept any Unicode (including quotes, SQL-looking fragments and markup: stores get
them parameterised or escaped); what is rejected is what a store or a path could not take
safely: missing fields, wrong types, identifiers outside a strict alphabet (no `../`), oversize
text, non-finite numbers, values outside the declared bounds.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    model_validator,
)

from crawlstore.config import KindSpec, current
from crawlstore.config.models import CHECK, CONDITION, TEMPLATE_PART, Derived, FieldSpec

NATURAL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
URL = r"^https?://[^\s]+$"
MAX_TEXT = 10_000  # a text field without max_length
MAX_URL = 2048
OPERATORS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "<=": (operator.le, "is above"),
    "<": (operator.lt, "is not below"),
    ">=": (operator.ge, "is below"),
    ">": (operator.gt, "is not above"),
    "==": (operator.eq, "differs from"),
    "!=": (operator.ne, "equals"),
}


class Item(BaseModel):
    """Common to every item: where it came from and when it was crawled."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    kind: ClassVar[str]
    schema_version: ClassVar[str]
    key_field: ClassVar[str]
    spec: ClassVar[KindSpec]

    source: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
    crawled_at: AwareDatetime

    @property
    def key(self) -> str:
        """The natural id: the Kafka message key and every store's primary key."""
        return str(getattr(self, self.key_field))


def _number(value: Decimal | None, kind: Callable[[Decimal], Any]) -> Any:
    return None if value is None else kind(value)


def _text(spec: FieldSpec) -> Any:
    return Annotated[
        str,
        StringConstraints(
            min_length=spec.min_length, max_length=spec.max_length or MAX_TEXT, pattern=spec.pattern
        ),
    ]


def _decimal(spec: FieldSpec) -> Any:
    return Annotated[
        Decimal,
        Field(
            ge=spec.min, le=spec.max, max_digits=spec.digits, decimal_places=spec.places, allow_inf_nan=False
        ),
    ]


def _list_of_text(spec: FieldSpec) -> Any:
    text = Annotated[str, StringConstraints(max_length=spec.max_length or MAX_TEXT)]
    return Annotated[list[text], Field(max_length=spec.max_items)]


# The pydantic type of each declared field type (without its optionality).
FIELD_TYPES: dict[str, Callable[[FieldSpec], Any]] = {
    "identifier": lambda f: Annotated[str, StringConstraints(pattern=f.pattern or NATURAL_ID)],
    "text": _text,
    "url": lambda f: Annotated[str, StringConstraints(pattern=URL, max_length=f.max_length or MAX_URL)],
    "decimal": _decimal,
    "float": lambda f: Annotated[
        float, Field(ge=_number(f.min, float), le=_number(f.max, float), allow_inf_nan=False)
    ],
    "integer": lambda f: Annotated[int, Field(ge=_number(f.min, int), le=_number(f.max, int))],
    "enum": lambda f: Literal[tuple(f.values or ())],
    "list[text]": _list_of_text,
    "boolean": lambda f: bool,
    "timestamp": lambda f: AwareDatetime,
    "date": lambda f: date,
    "json": lambda f: dict[str, Any],
}


def field_type(spec: FieldSpec) -> Any:
    return FIELD_TYPES[spec.type](spec)


def _check(rule: str) -> Any:
    match = CHECK.fullmatch(rule)
    assert match is not None  # the config model validated it
    left, op, right = match[1], match[2], match[3]
    holds, fails = OPERATORS[op]

    def check(item: Item) -> Item:
        a, b = getattr(item, left), getattr(item, right)
        if a is not None and b is not None and not holds(a, b):
            raise ValueError(f"{left} {fails} {right}")
        return item

    return model_validator(mode="after")(check)


def _literal(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("'"):
        return text[1:-1]
    return Decimal(text)


def _condition(text: str) -> Callable[[Item], bool]:
    match = CONDITION.fullmatch(text)
    assert match is not None  # the config model validated it
    name = match[1]
    if match[4]:  # `matches`
        pattern = re.compile(match[5])
        return lambda item: isinstance(v := getattr(item, name), str) and pattern.search(v) is not None
    holds, literal = OPERATORS[match[2]][0], _literal(match[3])

    def check(item: Item) -> bool:
        value = getattr(item, name)
        if value is None:
            return False
        if isinstance(literal, Decimal) and not isinstance(value, bool):
            return bool(holds(Decimal(str(value)), literal))
        return bool(holds(value, literal))

    return check


def _deriving(name: str, rule: Derived) -> Any:
    conditions = [_condition(c) for c in rule.when_any]

    def fill(item: Item) -> Item:
        # The item is not seen by anyone yet: set the field on the frozen model before handing it out.
        object.__setattr__(item, name, rule.then if any(c(item) for c in conditions) else rule.otherwise)
        return item

    return model_validator(mode="after")(fill)


def derive(spec: KindSpec) -> type[Item]:
    """The validation model of a kind: common fields, then the declared ones in their order."""
    fields: dict[str, Any] = {
        name: (field_type(f), ...) if f.required else (field_type(f) | None, None)
        for name, f in spec.fields.items()
    }
    validators = {f"check_{i}": _check(rule) for i, rule in enumerate(spec.checks)}
    validators |= {f"derive_{name}": _deriving(name, rule) for name, rule in spec.derived.items()}
    model = create_model(
        f"{spec.kind.title().replace('_', '')}Item", __base__=Item, __validators__=validators, **fields
    )
    model.kind, model.schema_version, model.key_field, model.spec = (
        spec.kind,
        spec.schema_version,
        spec.key_field,
        spec,
    )
    return model


@functools.cache
def item_types() -> dict[str, type[Item]]:
    """The model of every declared kind, by kind (this process's configuration)."""
    return {name: derive(spec) for name, spec in current().kinds.items()}


@functools.cache
def schemas() -> dict[str, type[Item]]:
    """The same models by schema version (the `crawlstore.schema` header)."""
    return {t.schema_version: t for t in item_types().values()}


def item_type(kind: str) -> type[Item]:
    try:
        return item_types()[kind]
    except KeyError:
        raise ValueError(f"unknown item kind {kind!r}; known: {sorted(item_types())}") from None


def to_json_dict(item: Item) -> dict[str, Any]:
    """The JSON form published to Kafka (decimals as strings keep cents exact)."""
    return item.model_dump(mode="json")


def render_key(template: str, values: dict[str, Any]) -> str:
    """A key template filled: timestamps as YYYYmmddTHHMMSS (UTC), dates as YYYYmmdd."""

    def part(match: Any) -> str:
        value = values[match[1]]
        if isinstance(value, datetime):
            return value.strftime("%Y%m%dT%H%M%S")
        if isinstance(value, date):
            return value.strftime("%Y%m%d")
        return str(value)

    return TEMPLATE_PART.sub(part, template)
