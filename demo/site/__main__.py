"""`python -m demo.site serve --host 127.0.0.1 --port 8000`, or `render PATH` to print
one response body (how tests/fixtures/pages/ were saved)."""

from __future__ import annotations

import argparse
import logging
import sys

from demo.site.pages import render
from demo.site.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.site", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the demo site until interrupted")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8000)
    serve_cmd.add_argument("--log-level", default="INFO")
    render_cmd = commands.add_parser("render", help="print the body served for a path")
    render_cmd.add_argument(
        "path", help="e.g. /catalogue/page/1.html, /coins/news/page/1.html or '/api/readings?since=...'"
    )
    args = parser.parse_args(argv)

    if args.command == "render":
        page = render(args.path)
        sys.stdout.buffer.write(page.body)
        return 0 if page.status < 400 else 1
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
