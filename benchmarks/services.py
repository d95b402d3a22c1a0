"""Services the end-to-end benchmarks start for themselves: a private Mosquitto on a
free port, a throw-away PostgreSQL database on the local server, and ``lantern hub
serve`` as a child process with its log in a file."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "LANTERN_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host``:``port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(check: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``check`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


@contextlib.contextmanager
def mosquitto(folder: Path) -> Iterator[int]:
    """A private Mosquitto on a free port: no persistence, no in-flight cap, a deep
    queue (the hub's production settings are in hub/broker.py); yields the port."""
    if shutil.which("mosquitto") is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "max_queued_messages 1000000",
        "max_inflight_messages 0",
        f"log_dest file {folder / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not wait(lambda: listening(port), 10.0):
            raise RuntimeError("private mosquitto did not start")
        yield port
    finally:
        _stop(proc)


@contextlib.contextmanager
def postgres_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``admin_url``, dropped on
    exit; yields its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from hub.db.engine import normalise_url

    admin = normalise_url(admin_url)
    name = f"lantern_bench_{secrets.token_hex(4)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def serve_command(
    data_dir: Path,
    database_url: str,
    broker_port: int,
    *,
    workers: int,
    client_id: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """``lantern hub serve`` (verbose, so it logs "hub serving") with this interpreter."""
    return [
        sys.executable,
        "-m",
        "devices.cli",
        "-v",
        "hub",
        "serve",
        "--data-dir",
        str(data_dir),
        "--database-url",
        database_url,
        "--mqtt",
        f"mqtt://127.0.0.1:{broker_port}",
        "--workers",
        str(workers),
        "--client-id",
        client_id,
        *extra,
    ]


class HubProcess:
    """``lantern hub serve`` (ingest, supervision, alerts) as a child process."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        broker_port: int,
        *,
        workers: int = 4,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.log_path = data_dir / "hub.log"
        self.command = serve_command(
            data_dir,
            database_url,
            broker_port,
            workers=workers,
            client_id=f"bench-hub-{secrets.token_hex(3)}",
            extra=extra,
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 300.0) -> None:
        """Start it and wait for its "hub serving" line (loading many supervised
        people takes a while)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
        env["LANTERN_JWT_SECRET"] = "bench-" + secrets.token_urlsafe(48)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with self.log_path.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

        def serving() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.tail()}")
            return b"hub serving" in self.log_path.read_bytes()

        try:
            started = wait(serving, timeout, step=0.2)
        except BaseException:
            self.stop()
            raise
        if not started:
            self.stop()
            raise RuntimeError(f"hub did not start within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it does not end."""
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def tail(self, chars: int = 3000) -> str:
        """The end of its log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        logger.warning("process %d ignored SIGTERM; killing it", proc.pid)
        proc.kill()
        proc.wait(timeout=10)
