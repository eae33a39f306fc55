"""Installing what the native stack runs: Debian packages, the JVM services' jars (Maven Central),
the project's virtualenv (uv) and supervisord's own virtualenv."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from native.base import (
    CHROMIUM,
    CONF,
    DATA,
    KAFKA_UI_VENV,
    LIB,
    LOGS,
    PY,
    ROOT,
    RUN,
    STACK,
    SUPERVISOR,
    VENV,
    StackError,
    file_digest,
    pg_bin,
    run,
    say,
)
from native.supervision import SUPERVISOR_VERSION

UV_VERSION = "0.13.9"


def install_system() -> None:
    missing = []
    if pg_bin() is None:
        missing.append("postgresql")
    if shutil.which("docker-compose") is None:
        missing.append("docker-compose")
    if shutil.which("kcat") is None:
        missing.append("kcat")
    jdk17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
    if not jdk17.exists() and not os.environ.get("STACK_JAVA_HOME"):
        missing.append("openjdk-17-jdk-headless")  # Hadoop 3.4 needs 17, not a newer JDK
    if shutil.which("mvn") is None:
        missing.append("maven")
    if not Path(CHROMIUM).exists():
        missing.append("chromium")  # the browser tests drive it (Playwright, no browser download)
    if not missing:
        return
    if os.geteuid() != 0:
        raise StackError(
            f"missing system packages {missing}: install them (apt-get install {' '.join(missing)})"
        )
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], LOGS / "install.log", env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], LOGS / "install.log", env=env)


def install_jars() -> None:
    """Each JVM service gets its own lib/ from its own pom: their dependency trees clash."""
    for svc in ("kafka", "opensearch", "hdfs"):
        pom = STACK / "maven" / svc / "pom.xml"
        target = LIB / svc
        stamp = target / ".pom.sha256"
        if stamp.exists() and stamp.read_text() == file_digest(pom):
            continue
        say(f"fetching {svc} jars from Maven Central (cached in ~/.m2) ...")
        shutil.rmtree(target, ignore_errors=True)
        t0 = time.monotonic()
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom),
                "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={target}",
            ],
            LOGS / "install.log",
        )
        stamp.write_text(file_digest(pom))
        say(f"  {svc}: {len(list(target.glob('*.jar')))} jars in {time.monotonic() - t0:.0f}s")


def uv() -> str:
    found = shutil.which("uv")
    if found is None:
        say(f"installing uv {UV_VERSION} (fast resolver) ...")
        run([sys.executable, "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], LOGS / "install.log")
        found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    return found


def install_python() -> None:
    """The project's virtualenv: pinned requirements under the lock's constraints, project editable."""
    req, dev, lock = ROOT / "requirements.txt", ROOT / "requirements-dev.txt", ROOT / "constraints.txt"
    stamp = VENV / ".requirements.sha256"
    digest = file_digest(req, dev, lock, ROOT / "pyproject.toml")
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing Python packages into .venv (requirements-dev.txt under constraints.txt) ...")
    t0 = time.monotonic()
    if not PY.exists():
        run([uv(), "venv", "-q", "-p", "3.11", str(VENV)], LOGS / "install.log")
    run(
        [uv(), "pip", "install", "-q", "-p", str(PY), "-r", str(dev), "-c", str(lock), "-e", str(ROOT)],
        LOGS / "install.log",
    )
    stamp.write_text(digest)
    say(f"  python packages ready in {time.monotonic() - t0:.0f}s")


def install_supervisor() -> None:
    """supervisord in a virtualenv of its own: a tool of the stack, not a dependency of the project."""
    if SUPERVISOR.installed():
        return
    say(f"installing supervisord {SUPERVISOR_VERSION} (the stack's process supervisor) ...")
    python = SUPERVISOR.venv / "bin" / "python"
    if not python.exists():
        run([uv(), "venv", "-q", "-p", "3.11", str(SUPERVISOR.venv)], LOGS / "install.log")
    pin = f"supervisor=={SUPERVISOR_VERSION}"
    run([uv(), "pip", "install", "-q", "-p", str(python), pin], LOGS / "install.log")
    SUPERVISOR.mark_installed()


def install_kafka_ui() -> None:
    """kaskade and textual-serve in a virtualenv of their own (the Kafka UI on :8088)."""
    requirements = STACK / "kafka-ui" / "requirements.txt"
    stamp = KAFKA_UI_VENV / ".requirements.sha256"
    if stamp.exists() and stamp.read_text() == file_digest(requirements):
        return
    say("installing the Kafka UI (kaskade, served by textual-serve) into .stack/kafka-ui ...")
    python = KAFKA_UI_VENV / "bin" / "python"
    if not python.exists():
        run([uv(), "venv", "-q", "-p", "3.11", str(KAFKA_UI_VENV)], LOGS / "install.log")
    run([uv(), "pip", "install", "-q", "-p", str(python), "-r", str(requirements)], LOGS / "install.log")
    stamp.write_text(file_digest(requirements))


def install() -> None:
    for d in (LIB, LOGS, RUN, DATA, CONF):
        d.mkdir(parents=True, exist_ok=True)
    install_system()
    install_jars()
    install_python()
    install_supervisor()
    install_kafka_ui()
