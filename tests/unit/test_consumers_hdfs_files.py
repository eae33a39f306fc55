"""HDFS file names, recovery from names, contiguous runs and path safety."""

from __future__ import annotations

import itertools
from datetime import date

import pytest

from consumers.hdfs_files import (
    CommittedFile,
    Layout,
    Overlap,
    UnsafePath,
    next_offset,
    overlaps,
    parse_file_name,
    safe_root,
    safe_segment,
    split_runs,
    temp_dir,
)

pytestmark = pytest.mark.unit
D1, D2, D3 = date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)


def test_file_name_round_trip() -> None:
    f = CommittedFile("crawl.products", 2, 100, 199)
    assert f.name == "crawl.products+2+0000000100+0000000199.jsonl"
    assert parse_file_name(f.name) == f
    assert parse_file_name("crawl.products+2+12345678901+12345678999.jsonl") == CommittedFile(
        "crawl.products", 2, 12345678901, 12345678999
    )


@pytest.mark.parametrize(
    "name",
    [
        "crawl.products+2+100+99.jsonl",  # last before first
        "crawl.products+2+100.jsonl",
        "crawl.products+x+1+2.jsonl",
        "crawl.products+2+1+2.jsonl.tmp",
        "../etc+1+1+2.jsonl",
        "a/b+1+1+2.jsonl",
        "_SUCCESS",
        "",
    ],
)
def test_foreign_names_are_ignored(name: str) -> None:
    assert parse_file_name(name) is None


def test_next_offset_is_after_the_newest_file_of_that_partition() -> None:
    files = [
        CommittedFile("t", 0, 0, 99),
        CommittedFile("t", 0, 100, 149),
        CommittedFile("t", 1, 0, 999),
        CommittedFile("u", 0, 0, 5000),
    ]
    assert next_offset(files, "t", 0) == 150
    assert next_offset(files, "t", 1) == 1000
    assert next_offset(files, "t", 2) is None


def test_paths() -> None:
    f = CommittedFile("crawl.products", 1, 7, 9)
    layout = Layout.of("{root}/{topic}/dt={date}", "/crawlstore/topics", "crawl.products", "crawl.products")
    assert layout.final_path(D1, f) == (
        "/crawlstore/topics/crawl.products/dt=2026-01-01/crawl.products+1+0000000007+0000000009.jsonl"
    )
    assert layout.is_day_dir("dt=2026-01-01") and not layout.is_day_dir("2026-01-01")
    assert temp_dir("/crawlstore/topics", "crawl.products", 1) == "/crawlstore/topics/+tmp/crawl.products/1"


def test_a_family_layout_puts_the_topic_name_and_the_day_where_it_says() -> None:
    layout = Layout.of("/raw/{name}/{date}", "/crawlstore/topics", "coin.raw.ticker", "ticker", "parquet")
    f = CommittedFile("coin.raw.ticker", 0, 0, 4, "parquet")
    assert layout.base == "/raw/ticker"
    name = "coin.raw.ticker+0+0000000000+0000000004.parquet"
    assert layout.final_path(D1, f) == f"/raw/ticker/2026-01-01/{name}"
    assert layout.is_day_dir("2026-01-01")
    assert not any(layout.is_day_dir(s) for s in ("dt=2026-01-01", "2026-01-01x", "..", "2026-1-1"))
    assert parse_file_name(f.name) == f


@pytest.mark.parametrize("name", ["..", "a/b", ""])
def test_a_layout_refuses_a_name_that_is_not_one_segment(name: str) -> None:
    with pytest.raises(UnsafePath):
        Layout.of("/raw/{name}/{date}", "/r", "coin.raw.x", name)


@pytest.mark.parametrize(
    "segment",
    ["..", ".", "", "../x", "a/b", "a\\b", "x\x00", "dt=1", "a b", "%2e%2e", "é", "x" * 250, "~root"],
)
def test_unsafe_segments_are_refused(segment: str) -> None:
    with pytest.raises(UnsafePath):
        safe_segment(segment)


@pytest.mark.parametrize("topic", ["crawl.products", "test.0a1b", "a-b_c", "..x"])
def test_kafka_topic_names_are_safe_segments(topic: str) -> None:
    assert safe_segment(topic) == topic


@pytest.mark.parametrize("root", ["relative", "/a/../b", "/a/./b", "/", "/a//b", "/a/b/", "/a b"])
def test_unsafe_roots_are_refused(root: str) -> None:
    with pytest.raises(UnsafePath):
        safe_root(root)


def test_a_topic_cannot_escape_through_a_committed_file() -> None:
    with pytest.raises(UnsafePath):
        CommittedFile("../../etc", 0, 0, 1)


def test_runs_of_one_day_cover_the_whole_consumed_range() -> None:
    entries = [(11, D1, b"b"), (10, D1, b"a"), (14, D2, b"d"), (15, D2, b"e")]
    runs = split_runs(entries, span_first=9, span_last=17)  # 9, 12, 13, 16, 17 were dead-lettered
    assert [(r.day, r.first, r.last, r.lines) for r in runs] == [
        (D1, 9, 13, [b"a", b"b"]),
        (D2, 14, 17, [b"d", b"e"]),
    ]


def test_interleaved_days_make_contiguous_runs_in_offset_order() -> None:
    entries = [(0, D1, b"0"), (1, D2, b"1"), (2, D1, b"2"), (3, D3, b"3")]
    runs = split_runs(entries, 0, 3)
    assert [(r.day, r.first, r.last) for r in runs] == [(D1, 0, 0), (D2, 1, 1), (D1, 2, 2), (D3, 3, 3)]
    # contiguous: every file starts right after the previous one
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(runs))


def test_a_batch_of_dead_letters_only_makes_no_file() -> None:
    assert split_runs([], 0, 10) == []


def _files(*ranges: tuple[int, int]) -> dict[str, CommittedFile]:
    files = [CommittedFile("t", 0, a, b) for a, b in ranges]
    return {f"/r/t/dt=2026-01-0{1 + i % 3}/{f.name}": f for i, f in enumerate(files)}


def _covered(files: dict[str, CommittedFile], fixes: list[Overlap]) -> list[tuple[int, int]]:
    """The ranges after the fixes are applied."""
    after = dict(files)
    for fix in fixes:
        del after[fix.path]
        if fix.keep_from is not None:
            after[fix.trimmed_path()] = CommittedFile("t", 0, fix.keep_from, fix.file.last)
    return sorted((f.first, f.last) for f in after.values())


def test_contiguous_files_have_no_overlap() -> None:
    assert overlaps(_files((0, 99), (100, 149), (150, 400))) == []


@pytest.mark.parametrize(
    ("ranges", "after"),
    [
        # a frozen owner's file beside the new owner's: cut to what it adds
        ([(0, 99), (50, 149)], [(0, 99), (100, 149)]),
        # within an earlier file: deleted
        ([(0, 199), (50, 149)], [(0, 199)]),
        # the same range twice (two day folders): one kept
        ([(0, 99), (0, 99)], [(0, 99)]),
        # same first offset: the shorter is kept, the longer cut
        ([(0, 99), (0, 199), (200, 250)], [(0, 99), (100, 199), (200, 250)]),
        # a chain: each cut after everything before it
        ([(0, 99), (90, 120), (110, 300), (301, 310)], [(0, 99), (100, 120), (121, 300), (301, 310)]),
        # a cut that an interrupted resolution already wrote: the original is deleted, the cut kept
        ([(0, 99), (50, 149), (100, 149)], [(0, 99), (100, 149)]),
    ],
)
def test_overlaps_leave_each_offset_in_one_file(
    ranges: list[tuple[int, int]], after: list[tuple[int, int]]
) -> None:
    files = _files(*ranges)
    fixes = overlaps(files)
    assert _covered(files, fixes) == after
    # Resolving again finds nothing: the result is stable.
    resolved = {f"/r/{a}-{b}": CommittedFile("t", 0, a, b) for a, b in after}
    assert overlaps(resolved) == []


def test_a_cut_file_keeps_its_folder_and_says_its_new_range() -> None:
    files = _files((0, 99), (50, 149))
    (fix,) = overlaps(files)
    assert fix.keep_from == 100
    assert fix.trimmed_path() == "/r/t/dt=2026-01-02/t+0+0000000100+0000000149.jsonl"
