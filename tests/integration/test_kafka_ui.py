"""The Kafka UI on 127.0.0.1:8088, in a real browser (headless Debian chromium, driven by Playwright).

The page is kaskade drawn by xterm.js on a canvas, so the text is read from the terminal's buffer:
an init script keeps the page's terminal object (textual-serve never puts it on `window`).
Screenshots go to .stack/logs/screenshots/ (the `screenshot` fixture, tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient

pytestmark = pytest.mark.integration

UI = "http://127.0.0.1:8088"

KEEP_TERMINAL = """
Object.defineProperty(Object.prototype, 'websocket_url', {
  configurable: true,
  set(v) {
    Object.defineProperty(this, 'websocket_url',
                          {value: v, writable: true, configurable: true, enumerable: true});
    (window.__terminals = window.__terminals || []).push(this);
  },
  get() { return undefined; },
});
"""
SCREEN = """() => {
  const w = (window.__terminals || [])[0];
  if (!w || !w.terminal) return '';
  const b = w.terminal.buffer.active, out = [];
  for (let y = 0; y < w.terminal.rows; y++) {
    const line = b.getLine(b.viewportY + y);
    out.push(line ? line.translateToString(true) : '');
  }
  return out.join('\\n');
}"""


class Terminal:
    """One tab of the Kafka UI: its screen as text, and keys."""

    def __init__(self, page: Any) -> None:
        self.page = page

    def open(self, path: str) -> Terminal:
        self.page.add_init_script(KEEP_TERMINAL)
        self.page.route("**/fonts.googleapis.com/**", lambda route: route.abort())  # no network
        self.page.goto(f"{UI}{path}")
        self.page.wait_for_selector("body.-first-byte", timeout=30_000)
        return self

    def text(self) -> str:
        return str(self.page.evaluate(SCREEN))

    def wait_for(self, *texts: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.text()
            if all(t in screen for t in texts):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts} not on the screen after {timeout_s}s:\n{screen}")
            time.sleep(0.5)

    def press(self, *keys: str) -> None:
        self.page.focus(".xterm-helper-textarea")
        for key in keys:
            self.page.keyboard.press(key)
            time.sleep(0.7)


@pytest.fixture(scope="module", autouse=True)
def kafka_ui_answers(stack_env: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while not _answers(UI):
        if time.monotonic() > deadline:
            pytest.fail(f"the Kafka UI does not answer at {UI}: make up kafka-ui", pytrace=False)
        time.sleep(1)


@pytest.fixture
def terminal(browser: Any) -> Iterator[Terminal]:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    yield Terminal(page)
    page.close()


def test_the_kafka_ui_lists_the_pipeline_topics_with_their_groups(
    terminal: Terminal, make_topic: Any, screenshot: Any
) -> None:
    topic = make_topic()
    screen = terminal.open("/").wait_for("Topics", "crawl.products-dlq", topic)
    screenshot(terminal.page, "kafka-ui-topics")
    assert "crawl.readings" in screen and "Partitions" in screen and "Lag" in screen


def test_a_dead_letter_shows_its_reason_headers(
    terminal: Terminal,
    topic: str,
    producer: Any,
    run_consumer: Any,
    read_topic: Any,
    kit: Any,
    screenshot: Any,
) -> None:
    bad = kit.Sent(b"k-bad", b"{not json", [("crawlstore.schema", b"product/1")], None)
    producer(topic, [bad])
    consumer = run_consumer("postgres", topics=topic)
    kit.eventually("the dead letter in the DLQ", lambda: len(read_topic(f"{topic}-dlq")) == 1)
    consumer.stop()

    key = base64.b64encode(b"k-bad").decode()  # kaskade shows keys as bytes, base64
    terminal.open(f"/topic/{topic}-dlq").wait_for(f"Records [{topic}-dlq]", key)
    terminal.press("Enter", "ArrowRight", "ArrowRight")  # the record, then its Headers tab
    screen = terminal.wait_for("Headers [", "__connect.errors.topic", "__connect.errors.stage")
    screenshot(terminal.page, "kafka-ui-dead-letter")
    assert "__connect.errors.exception" in screen and "crawlstore.dlq.error_kind" in screen


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_the_kafka_ui_joins_no_group_and_leaves_no_process_when_a_browser_dies(
    native_stack: ModuleType,
    playwright: Any,
    chromium_path: str,
    topic: str,
    producer: Any,
    kit: Any,
    tmp_path: Path,
) -> None:
    server = native_stack.base.pid_of("kafka-ui")
    assert server is not None
    producer(topic, [kit.product("k-1", 1)])
    before = set(children_of(server))
    # A browser of our own, so that it can be killed with its tabs open: no goodbye on the websockets.
    port = kit.free_port()
    chromium = subprocess.Popen(
        [
            chromium_path,
            "--headless=new",
            "--no-sandbox",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        devtools = f"http://127.0.0.1:{port}/json/version"
        kit.eventually("chromium listening", lambda: _answers(devtools), 30)
        other = playwright.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
        context = other.contexts[0]
        for path in ("/", f"/topic/{topic}"):
            Terminal(context.new_page()).open(path).wait_for("Kaskade")
        kit.eventually("a kaskade per tab", lambda: len(set(children_of(server)) - before) == 2, 30)
        os.killpg(chromium.pid, signal.SIGKILL)
        chromium.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(chromium.pid, signal.SIGKILL)
    kit.eventually("no kaskade process left", lambda: not set(children_of(server)) - before, 60)

    admin = KafkaAdminClient(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    try:
        groups = [g["group_id"] for g in admin.list_groups()]
    finally:
        admin.close()
    assert not [g for g in groups if g.startswith("kaskade")], groups


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
