"""`python -m consumers.replay --run-id ID [options]`: the DAG's replay from a shell (same ledger,
same rules). The options are generated from ReplayRequest, like the DAG's params."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from typing import Any

from consumers.replay.request import PARAMS, RequestParam, request_from_values

log = logging.getLogger("consumers.replay")
EXIT_STOPPED = 3


def _option(p: RequestParam) -> dict[str, Any]:
    """argparse keywords for one param; unset options stay None, so the request's default applies."""
    if p.kind is bool:
        return {"action": "store_true", "default": None, "help": p.description}
    option: dict[str, Any] = {"help": p.description + (f" (default {p.default})" if p.default else "")}
    if p.kind is tuple:
        option.update(action="append", help=p.description + " (repeatable)")
    elif p.kind is datetime:
        option.update(type=datetime.fromisoformat, metavar="ISO-TIME")
    elif p.kind in (int, float):
        option.update(type=p.kind)
    choices = [c for c in p.schema.get("enum", []) if c is not None]
    if choices:
        option.update(choices=choices)
    return option


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="python -m consumers.replay",
        description="Replay dead letters into the sink they failed in, or onto their original topic.",
    )
    out.add_argument("--run-id", required=True, help="names the run; a rerun with the same id resumes it")
    for p in PARAMS:
        out.add_argument("--" + p.name.replace("_", "-"), dest=p.name, **_option(p))
    return out


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for chatty in ("kafka", "opensearch", "urllib3"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        request = request_from_values(args, run_id=args["run_id"])
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    from consumers.replay.run import ReplayStopped, replay, stop_on_sigterm

    with stop_on_sigterm() as stop:
        try:
            summary = replay(request, stop=stop)
        except ReplayStopped as exc:
            log.warning("%s", exc)
            return EXIT_STOPPED
    # One line, last on stdout: the Airflow hook routes logging to stdout once it is imported.
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
