"""The demo sensor API's readings, shaped like the FMS API (DeviceId 1..5, sensor1..3,
motor1..3, isFail, time).

A reading is a pure function of its device and minute, so any time window returns the same
records on every run. Edge cases sit at fixed minutes of every hour (1..14), so every
one-hour window holds each of them exactly once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from crawlstore.items import item_type, render_key


def reading_id(device_id: str, measured_at: datetime) -> str:
    """The key the crawl gives a reading (the reading kind's key template)."""
    key = item_type("reading").spec.key
    assert not isinstance(key, str)
    return render_key(key.template, {"device_id": device_id, "measured_at": measured_at})


SEED = 20240614
DEVICES = (1, 2, 3, 4, 5)
STEP = timedelta(minutes=1)
MAX_WINDOW = timedelta(days=1)
# The window the manifest describes unless told otherwise: one hour, 300 readings.
DEMO_SINCE = datetime(2025, 6, 14, 7, 0, tzinfo=UTC)
DEMO_UNTIL = datetime(2025, 6, 14, 8, 0, tzinfo=UTC)

_MEASURES = ("sensor1", "sensor2", "sensor3", "motor1", "motor2", "motor3")
_KST = timezone(timedelta(hours=9))


@dataclass(frozen=True)
class DemoReading:
    """One API record and the item a faithful crawler makes of it (no source/crawled_at)."""

    device: int
    slot: datetime
    record: dict[str, Any]
    expected: dict[str, Any]
    invalid: frozenset[str] = field(default_factory=frozenset)
    note: str = ""

    @property
    def label(self) -> str:
        return label_of_reading(self.expected)


def label_of_reading(item: dict[str, Any]) -> str:
    """A reading's natural id, or `device@time` (raw values) when no id could be built."""
    rid = item.get("reading_id")
    if isinstance(rid, str) and rid:
        return rid
    return f"{item.get('device_id')}@{item.get('measured_at')}"


def _iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ordinary(device: int, slot: datetime) -> DemoReading:
    # A string seed is hashed with SHA-512, so values don't depend on PYTHONHASHSEED.
    rng = random.Random(f"{SEED}:{device}:{int(slot.timestamp())}")  # noqa: S311 (demo data)
    sensors = [round(rng.gauss(85, 8), 2) for _ in range(3)]
    motors = [round(rng.uniform(800, 1600), 2) for _ in range(3)]
    is_fail = sensors[0] > 100 or rng.random() < 0.02
    values = dict(zip(_MEASURES, sensors + motors, strict=True))
    record: dict[str, Any] = {"time": _iso_z(slot), "DeviceId": device, **values, "isFail": is_fail}
    expected: dict[str, Any] = {
        "reading_id": reading_id(str(device), slot),
        "device_id": str(device),
        **values,
        "is_fail": is_fail,
        "measured_at": slot.isoformat(),
    }
    return DemoReading(device, slot, record, expected)


_Edit = Callable[[DemoReading], DemoReading]


def _edge(record: dict[str, Any], expected: dict[str, Any], invalid: set[str], note: str) -> _Edit:
    """A change to an ordinary reading: keys mapped to `...` are removed from the record."""

    def apply(base: DemoReading) -> DemoReading:
        rec = {k: v for k, v in {**base.record, **record}.items() if v is not ...}
        return DemoReading(
            base.device, base.slot, rec, {**base.expected, **expected}, frozenset(invalid), note
        )

    return apply


def _edges(slot: datetime) -> dict[tuple[int, int], _Edit]:
    """Edge cases by (minute of the hour, device)."""
    naive = slot.strftime("%Y-%m-%dT%H:%M:%S")
    day_first = slot.strftime("%d/%m/%Y %H:%M:%S")
    traversal = "../../etc/passwd"
    return {
        (1, 1): _edge({"isFail": ...}, {"is_fail": None}, {"is_fail"}, "isFail missing"),
        (2, 2): _edge({"sensor1": "n/a"}, {"sensor1": "n/a"}, {"sensor1"}, "sensor1 is text"),
        (3, 3): _edge({"sensor2": None}, {"sensor2": None}, set(), "sensor2 null: valid"),
        (4, 4): _edge({"motor2": 1e13}, {"motor2": 1e13}, {"motor2"}, "motor2 out of range"),
        (5, 5): _edge({"time": naive}, {"measured_at": naive}, {"measured_at"}, "time without a timezone"),
        (6, 1): _edge(
            {"time": day_first},
            {"measured_at": day_first, "reading_id": None},
            {"measured_at", "reading_id"},
            "time not ISO 8601, so no reading id either",
        ),
        (7, 2): _edge(
            {"DeviceId": traversal},
            {"device_id": traversal, "reading_id": reading_id(traversal, slot)},
            {"device_id", "reading_id"},
            "device id with ../ pieces",
        ),
        (8, 3): _edge({"isFail": "maybe"}, {"is_fail": "maybe"}, {"is_fail"}, "isFail not a boolean"),
        (9, 4): _edge(
            {"DeviceId": ...},
            {"device_id": None, "reading_id": None},
            {"device_id", "reading_id"},
            "DeviceId missing",
        ),
        (10, 5): _edge(
            {"sensor1": -12.5, "motor3": -3.0, "isFail": True},
            {"sensor1": -12.5, "motor3": -3.0, "is_fail": True},
            set(),
            "negative measures and a failure: valid",
        ),
        (11, 1): _edge(
            {"time": slot.astimezone(_KST).isoformat()},
            {},
            set(),
            "time in +09:00: valid, normalised to UTC",
        ),
        (12, 2): _edge({"DeviceId": "2"}, {}, set(), "DeviceId as a string: valid"),
        (13, 3): _edge({"sensor3": "91.5"}, {"sensor3": 91.5}, set(), "sensor3 as numeric text: valid"),
        (14, 4): _edge({"firmware": "v2.1.0"}, {}, set(), "an extra field the source doesn't map: valid"),
    }


def reading_at(device: int, slot: datetime) -> DemoReading:
    """The reading of `device` for the minute `slot` (UTC, whole minute)."""
    base = _ordinary(device, slot)
    edit = _edges(slot).get((slot.minute, device))
    return edit(base) if edit else base


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + STEP


def minute_slots(since: datetime, until: datetime) -> Iterator[datetime]:
    """The whole minutes in [since, until) (UTC): the demo APIs measure once a minute."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until need a timezone")
    if until - since > MAX_WINDOW:
        raise ValueError(f"window longer than {MAX_WINDOW}")
    slot = _ceil_minute(since.astimezone(UTC))
    while slot < until:
        yield slot
        slot += STEP


def readings(since: datetime, until: datetime) -> Iterator[DemoReading]:
    """Readings measured in [since, until), by minute then device."""
    for slot in minute_slots(since, until):
        for device in DEVICES:
            yield reading_at(device, slot)
