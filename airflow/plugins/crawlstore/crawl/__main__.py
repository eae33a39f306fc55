"""`python -m crawlstore.crawl SOURCE --output PATH [--max-pages N]`: crawl one source here.

Logs go to stderr; the last line on stdout is the run's summary as JSON. Exit status 0 when
the crawl succeeded, 3 when it failed (the summary says why), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from crawlstore.crawl.runner import EXIT_FAILED
from crawlstore.sources import Source, get_source, resolve_start_url, with_start_url


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _setting_value(text: str) -> Any:
    try:
        return json.loads(text)  # numbers, booleans, lists...
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crawlstore.crawl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="a source name from crawlstore.sources")
    parser.add_argument("--output", required=True, type=Path, help="the JSON Lines file to write")
    parser.add_argument("--max-pages", type=int, help="stop after this many listing/API pages")
    parser.add_argument(
        "--param",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=VALUE",
        help="fill a {name} placeholder of the start URL (e.g. data_interval_end=...)",
    )
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=VALUE",
        help="override a Scrapy setting (e.g. -s DOWNLOAD_DELAY=2)",
    )
    parser.add_argument("--timeout", type=float, help="close the crawl after this many seconds")
    parser.add_argument("--source-json", help="the source's full definition (run_crawl passes it)")
    args = parser.parse_args(argv)

    source = Source.from_json(args.source_json) if args.source_json else get_source(args.source)
    if source.name != args.source:
        parser.error(f"--source-json defines {source.name!r}, not {args.source!r}")
    try:
        source = with_start_url(source, resolve_start_url(source, dict(args.param)))
    except ValueError as exc:
        print(json.dumps({"ok": False, "reason": "config", "error": str(exc), "source": source.name}))
        return EXIT_FAILED

    from crawlstore.crawl.job import crawl_here  # Scrapy and Twisted only past argument checks

    summary = crawl_here(
        source,
        args.output,
        max_pages=args.max_pages,
        timeout_s=args.timeout,
        overrides={name: _setting_value(v) for name, v in args.set},
    )
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 0 if summary["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
