"""`python -m crawlstore.config check [DIR]`: load the configuration, print what it declares or
every problem (file, key, what is allowed); exit 1 on problems."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crawlstore.config.loader import ConfigError, config_dir, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawlstore.config", description=__doc__)
    parser.add_argument("command", choices=["check"])
    parser.add_argument(
        "directory", nargs="?", type=Path, help="default: CRAWLSTORE_CONFIG_DIR or the bundled one"
    )
    args = parser.parse_args(argv)
    directory = (args.directory or config_dir()).resolve()
    try:
        config = load(directory)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"configuration {directory}: OK")
    for kind in config.kinds.values():
        print(f"  kind {kind.kind} ({kind.schema_version}): key {kind.key_field}, {len(kind.fields)} fields")
    for source in config.sources.values():
        print(
            f"  source {source.source}: {source.spider} -> {source.topic} ({source.kind}), "
            f"schedule {source.schedule}"
            + (f", polls every {source.poll.every_s:g} s" if source.poll else "")
        )
    for family in config.families.values():
        print(f"  topics {family.topics}: HDFS {family.hdfs.path} as {family.hdfs.format}")
    topics, pattern = config.subscription()
    print(f"  consumers follow {', '.join(topics) if topics else 'the pattern ' + str(pattern)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
