"""What a replay run did (or, dry, would do), for the log and the DAG task's XCom."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from consumers.replay.letters import OUTCOMES, WOULD, Letter


@dataclass
class ReplaySummary:
    """What a run did (or, dry, would do): totals, skips by reason, counts by sink and error class."""

    run_id: str
    group: str | None
    dry_run: bool
    target: str
    scope: str
    scanned: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    by_sink: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_error_class: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    committed: dict[str, int] = field(default_factory=dict)
    restamped: int = 0
    seconds: float = 0.0

    def count(self, letter: Letter, outcome: str) -> None:
        outcome = WOULD[outcome] if self.dry_run else outcome
        self.outcomes[outcome] += 1
        self.by_sink[letter.connector][outcome] += 1
        self.by_error_class[letter.error_class][outcome] += 1

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())

    def totals(self) -> dict[str, int]:
        names = WOULD.values() if self.dry_run else OUTCOMES
        return {name: self.outcomes[name] for name in names} | {"skipped": sum(self.skipped.values())}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the DAG task's XCom)."""
        return {
            "run_id": self.run_id,
            "group": self.group,
            "dry_run": self.dry_run,
            "target": self.target,
            "scope": self.scope,
            "scanned": self.scanned,
            **self.totals(),
            "skipped_by_reason": dict(self.skipped),
            "by_sink": {k: dict(v) for k, v in sorted(self.by_sink.items())},
            "by_error_class": {k: dict(v) for k, v in sorted(self.by_error_class.items())},
            "committed": dict(self.committed),
            "restamped": self.restamped,
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        totals = " ".join(f"{k}={v}" for k, v in self.totals().items())
        head = (
            f"replay summary{' (DRY RUN, nothing changed)' if self.dry_run else ''}: {totals} "
            f"(scanned {self.scanned} DLQ records in {self.seconds:.1f}s; run {self.run_id})"
        )
        out = [head]
        if self.skipped:
            out.append("  skipped: " + ", ".join(f"{k}={v}" for k, v in self.skipped.most_common()))
        for label, table in (("sink", self.by_sink), ("error class", self.by_error_class)):
            for name, counts in sorted(table.items()):
                out.append(
                    f"  by {label} {name}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
                )
        if self.restamped:
            out.append(
                f"  {self.restamped} re-published record(s) older than the topic's retention "
                "got the replay time as timestamp"
            )
        if self.committed:
            out.append(
                f"  group {self.group} committed " + ", ".join(f"{k}@{v}" for k, v in self.committed.items())
            )
        return out
