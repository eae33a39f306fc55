"""The native stack's Kafka UI on 127.0.0.1:8088: kaskade (a Kafka terminal UI) in the browser.

Runs in its own virtualenv (.stack/kafka-ui, stack/kafka-ui/requirements.txt), under supervisord.
textual-serve starts one kaskade process per browser tab:

    /                 `kaskade admin`: topics, partitions, consumer groups with their lag
    /topic/<topic>    `kaskade consumer --earliest`: the topic's records with every header

Neither joins a consumer group (admin uses the admin API only; the consumer assigns partitions
itself, auto-commit off): the pipeline's groups and their offsets are never touched.

What this adds to textual-serve 1.1.3, which leaks processes: kaskade is exec'ed (no shell) in
its own process group with PR_SET_PDEATHSIG, so it dies with the server even on SIGKILL; closing
a tab (or the websocket's heartbeat noticing a vanished browser) asks it to quit, then SIGTERMs
and SIGKILLs its group; stopping the server stops every session at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shlex
import signal
import sys
from pathlib import Path

import aiohttp_jinja2
from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

log = logging.getLogger("kafka-ui")

TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")  # Kafka's topic alphabet: never more than one argument
PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL(None, use_errno=True)


class Session(AppService):  # type: ignore[misc]
    """One kaskade process of one browser tab, which never outlives the tab or the server."""

    QUIT_GRACE_S = 3.0
    KILL_GRACE_S = 3.0

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        environment = self._build_environment(width=width, height=height)
        server = os.getpid()

        def in_child() -> None:
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != server:  # the server died before prctl took effect
                os._exit(1)

        self._process = process = await asyncio.create_subprocess_exec(
            *shlex.split(self.command),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            start_new_session=True,
            preexec_fn=in_child,
        )
        self._stdin = process.stdin
        return process

    def _signal_group(self, sig: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, sig)

    async def stop(self) -> None:
        task, self._task = self._task, None
        process = self._process
        if task is None or process is None:
            return
        await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        await self.send_meta({"type": "quit"})
        for sig, grace in ((signal.SIGTERM, self.QUIT_GRACE_S), (signal.SIGKILL, self.KILL_GRACE_S)):
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), grace)
                break
            except TimeoutError:
                log.warning("kaskade pid %d did not quit: %s to its group", process.pid, sig.name)
                self._signal_group(sig)
        self._signal_group(signal.SIGKILL)  # whatever it started goes with it
        if not task.done():
            try:
                await asyncio.wait_for(task, 2)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()


class KafkaUi(Server):  # type: ignore[misc]
    def __init__(self, kaskade: str, bootstrap: str, host: str, port: int, heartbeat_s: float) -> None:
        self.kaskade, self.bootstrap, self.heartbeat_s = kaskade, bootstrap, heartbeat_s
        super().__init__(self.admin_command(), host=host, port=port, title="crawlstore Kafka UI")
        self.sessions: set[tuple[web.WebSocketResponse, Session]] = set()

    def admin_command(self) -> str:
        return shlex.join([self.kaskade, "admin", "-b", self.bootstrap])

    def topic_command(self, topic: str) -> str:
        return shlex.join([self.kaskade, "consumer", "-b", self.bootstrap, "-t", topic, "--earliest"])

    async def _make_app(self) -> web.Application:
        app: web.Application = await super()._make_app()
        app.add_routes(
            [
                web.get("/topic/{topic}", self.handle_topic_index, name="topic"),
                web.get("/ws/topic/{topic}", self.handle_topic_websocket, name="topic_websocket"),
            ]
        )
        return app

    @staticmethod
    def _topic(request: web.Request) -> str:
        topic = request.match_info["topic"]
        if not TOPIC.fullmatch(topic):
            raise web.HTTPBadRequest(text=f"not a topic name: {topic[:80]!r}")
        return topic

    async def handle_topic_index(self, request: web.Request) -> web.Response:
        topic = self._topic(request)
        router = request.app.router
        ws = router["topic_websocket"].url_for(topic=topic)
        static = f"{self.public_url}{router['static'].url_for(filename='/')}".rstrip("/") + "/"
        context = {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"ws:{self.public_url.split(':', 1)[1]}{ws}",
            "config": {"static": {"url": static}},
            "application": {"name": f"{topic}: crawlstore Kafka UI"},
        }
        response: web.Response = aiohttp_jinja2.render_template("app_index.html", request, context)
        return response

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        return await self._session(request, self.admin_command())

    async def handle_topic_websocket(self, request: web.Request) -> web.WebSocketResponse:
        return await self._session(request, self.topic_command(self._topic(request)))

    async def _session(self, request: web.Request, command: str) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=self.heartbeat_s)
        session: Session | None = None
        entry = None
        try:
            await websocket.prepare(request)
            session = Session(
                command,
                write_bytes=websocket.send_bytes,
                write_str=websocket.send_str,
                close=websocket.close,
                download_manager=self.download_manager,
                debug=self.debug,
            )
            await session.start(
                to_int(request.query.get("width", "80"), 80), to_int(request.query.get("height", "24"), 24)
            )
            entry = (websocket, session)
            self.sessions.add(entry)
            log.info("session started: %s (%d open)", command, len(self.sessions))
            await self._process_messages(websocket, session)
        except asyncio.CancelledError:
            await websocket.close()
        except Exception:
            log.exception("session failed: %s", command)
        finally:
            if entry is not None:
                self.sessions.discard(entry)
            if session is not None:
                await asyncio.shield(session.stop())
                log.info("session ended: %s (%d open)", command, len(self.sessions))
        return websocket

    async def on_shutdown(self, app: web.Application) -> None:
        sessions = list(self.sessions)
        await asyncio.gather(*(s.stop() for _, s in sessions), return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws, _ in sessions), return_exceptions=True)

    async def on_startup(self, app: web.Application) -> None:
        log.info("Kafka UI on %s (Kafka %s)", self.public_url, self.bootstrap)

    def initialize_logging(self) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument(
        "--heartbeat-s", type=float, default=10.0, help="a vanished browser is noticed after ~1.5x"
    )
    args = parser.parse_args(argv)
    kaskade = str(Path(sys.executable).parent / "kaskade")
    KafkaUi(kaskade, args.bootstrap_servers, args.host, args.port, args.heartbeat_s).serve()


if __name__ == "__main__":
    main()
