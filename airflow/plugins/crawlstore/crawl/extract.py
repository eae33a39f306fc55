"""How one field's value is found: a source's extraction rule, applied to a page or a JSON record.

A rule is a selector string (CSS, `xpath:<expr>`, or for JSON APIs a dotted path) or a mapping
(crawlstore.config.models.Extract) with one way to find the value, then an optional `regex`
(its first group, or the whole match) and a `default` for when nothing is found:

- `css` / `xpath`: on an HTML page; `::text` / `text()` selectors join every matched text node;
- `jsonld`: a dotted path into the page's `<script type="application/ld+json">` objects (the first
  object that has it; `@graph` lists are searched too);
- `script` + `path`: the JSON text of the `<script>` the CSS selector finds, then a dotted path;
- `path`: a dotted path into a JSON API record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from scrapy.http import Response

XPATH_PREFIX = "xpath:"
JSONLD = 'script[type="application/ld+json"]::text'
Rule = str | Mapping[str, Any]


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0`); None where the path leads nowhere."""
    if not path:
        return data
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and step.lstrip("-").isdigit() and -len(data) <= int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data


def select(response: Response, expression: str) -> list[str]:
    """Every match of a CSS selector, or of an XPath one written as `xpath:<expr>`."""
    if expression.startswith(XPATH_PREFIX):
        return response.xpath(expression.removeprefix(XPATH_PREFIX)).getall()
    return response.css(expression).getall()


def first_or_joined(response: Response, expression: str) -> str | None:
    """The text of all matched text nodes joined, or else the first match."""
    matches = select(response, expression)
    if not matches:
        return None
    if expression.rstrip().endswith(("::text", "text()")):
        return "".join(matches)
    return matches[0]


def _json_blocks(texts: list[str]) -> Iterator[Any]:
    for text in texts:
        try:
            data = json.loads(text)
        except ValueError:
            continue  # a broken block is the site's problem; the field then has no value
        for obj in data if isinstance(data, list) else [data]:
            yield obj
            if isinstance(obj, dict) and isinstance(obj.get("@graph"), list):
                yield from obj["@graph"]


def _found(response: Response, rule: Mapping[str, Any]) -> Any:
    if "css" in rule:
        return first_or_joined(response, rule["css"])
    if "xpath" in rule:
        return first_or_joined(response, XPATH_PREFIX + rule["xpath"])
    if "jsonld" in rule:
        for obj in _json_blocks(response.css(JSONLD).getall()):
            value = dig(obj, rule["jsonld"])
            if value is not None:
                return value
        return None
    if "script" in rule:
        for obj in _json_blocks(select(response, rule["script"])):
            value = dig(obj, rule.get("path", ""))
            if value is not None:
                return value
    return None


@lru_cache(maxsize=256)
def _pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def refine(value: Any, rule: Rule) -> Any:
    """The rule's regex and default applied to a found value."""
    if isinstance(rule, str):
        return value
    regex = rule.get("regex")
    if regex is not None and value is not None:
        match = _pattern(regex).search(str(value))
        value = (match.group(1) if match.re.groups else match.group(0)) if match else None
    if value is None or value == "":
        return rule.get("default")
    return value


def from_page(response: Response, rule: Rule) -> Any:
    """A field's value on an HTML page."""
    found = first_or_joined(response, rule) if isinstance(rule, str) else _found(response, rule)
    return refine(found, rule)


def from_record(record: Any, rule: Rule) -> Any:
    """A field's value in a JSON API record."""
    return refine(dig(record, rule if isinstance(rule, str) else rule.get("path", "")), rule)


def api_records(
    data: Any, fields: Mapping[str, Rule], records_path: str = ""
) -> tuple[list[dict[str, Any]], int]:
    """Each JSON API record's raw field values, and how many entries were not objects.

    ValueError when `records_path` does not lead to a list (the response is not what the
    source declares).
    """
    records = dig(data, records_path)
    if not isinstance(records, list):
        raise ValueError(f"has no list of records at {records_path or 'the top level'}")
    found = [
        {name: from_record(r, rule) for name, rule in fields.items()} for r in records if isinstance(r, dict)
    ]
    return found, len(records) - len(found)
