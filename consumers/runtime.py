"""`python -m consumers <sink>` as a process: /health and /metrics, signals, the store and Kafka
connections (retried until they answer), the sink loop, a clean shutdown and the exit code.

The loop itself (poll, batch, write, commit, rebalances): consumers.loop and consumers.flushing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from consumers.endpoint import MetricsEndpoint
from consumers.errors import CircuitOpen, FatalError
from consumers.kafka_config import consumer_config
from consumers.loop import SinkLoop
from consumers.retry import RetryStopped, retry

log = logging.getLogger(__name__)

# 1-3 are decisions (the supervisor leaves the consumer stopped); 4 is a crash (it is restarted).
EXIT_OK, EXIT_CONFIG, EXIT_FATAL, EXIT_CIRCUIT_OPEN, EXIT_CRASHED = 0, 1, 2, 3, 4


class ConsumerRuntime(SinkLoop):
    """Runs one sink: `run()` returns the process exit code."""

    def run(self) -> int:
        try:
            endpoint = MetricsEndpoint(self.config.metrics_host, self.config.metrics_port, self.metrics)
        except OSError as exc:
            log.error(
                "cannot serve /health and /metrics on %s:%d: %s",
                self.config.metrics_host,
                self.config.metrics_port,
                exc,
            )
            return EXIT_CONFIG
        endpoint.start()
        self._install_signal_handlers()
        code = EXIT_OK
        try:
            self._start_sink()
            self._connect()
            self._subscribe()
            self._loop()
            self._drain()
        except RetryStopped:
            log.info("%s consumer: stopped before it started consuming", self.sink.name)
        except CircuitOpen as exc:
            log.error(
                "CIRCUIT BREAKER OPEN, %s consumer stops: %s. Nothing of the current batch was "
                "committed; fix the cause, then restart (or replay the DLQ).",
                self.sink.name,
                exc,
            )
            code = EXIT_CIRCUIT_OPEN
        except FatalError as exc:
            log.error("%s consumer stops: %s", self.sink.name, exc)
            code = EXIT_FATAL
        except Exception:
            log.exception("%s consumer crashed", self.sink.name)
            code = EXIT_CRASHED
        finally:
            self._shutdown(code)
            endpoint.stop()
        return code

    def _install_signal_handlers(self) -> None:
        first_at = 0.0

        def handler(signum: int, frame: FrameType | None) -> None:
            nonlocal first_at
            name = signal.Signals(signum).name
            now = time.monotonic()
            if not self.stop_requested:
                first_at = now
                self.request_stop(f"{name} received")
            # A signal sent to the process and to its group arrives twice at once: that is not
            # an operator insisting. A second one later means "now".
            elif now - first_at > 1.0:
                log.warning("%s received again: exiting now without flushing", name)
                os._exit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _sleep(self, seconds: float) -> bool:
        """Sleep before there is a group to stay in; wakes up early on stop (returns False then)."""
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return not self.stop_requested

    def _start_sink(self) -> None:
        def on_error(exc: Exception, delay: float) -> None:
            log.warning("%s store not available yet, retry in %.1fs: %s", self.sink.name, delay, exc)
            self.metrics.set_state("starting", f"store unavailable: {exc}")

        retry(self.sink.start, backoff=self._backoff(), wait=self._sleep, on_error=on_error)

    def _connect(self) -> None:
        def on_error(exc: Exception, delay: float) -> None:
            log.warning(
                "Kafka %s not reachable, retry in %.1fs: %r", self.kafka.bootstrap_servers, delay, exc
            )
            self.metrics.set_state("starting", f"Kafka unreachable: {exc!r}")

        def connect() -> KafkaConsumer:
            return KafkaConsumer(**consumer_config(self.kafka, self.config))

        self.consumer = retry(
            connect, backoff=self._backoff(), wait=self._sleep, on_error=on_error, errors=(KafkaError,)
        )

    def _shutdown(self, code: int) -> None:
        self._closing = True
        self._close_writer()
        if self.consumer is not None:
            # Closing cancels the client's pending metadata refresh, which it logs as an ERROR.
            logging.getLogger("kafka.cluster").setLevel(logging.CRITICAL)
            try:
                # Leaving the group (rather than timing out of it) hands partitions over at once.
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception:
                log.exception("closing the Kafka consumer failed")
        try:
            self.dlq.close()
        except Exception:
            log.exception("closing the DLQ producer failed")
        try:
            self.sink.stop()
        except Exception:
            log.exception("stopping the %s sink failed", self.sink.name)
        self.metrics.set_partitions(0, {})
        self.metrics.set_state("stopped" if code == EXIT_OK else "failed")
        m = self.metrics
        log.info(
            "%s consumer stopped (exit %d): consumed=%d written=%d dead_lettered=%d retries=%d",
            self.sink.name,
            code,
            m.consumed,
            m.written,
            m.dead_lettered,
            m.retries,
        )
