"""A real ``lantern hub serve --http`` process for end-to-end tests, with an admin."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

import httpx

from tests.edge.mqtt_helpers import free_port, unique_id, wait_until
from tests.hub.test_serve import PASSWORD, SECRET, hub_env, lantern


class ServedHub:
    """Starts the hub on SQLite under ``tmp_path / "data"`` against a broker port,
    creates the admin ``ops`` and logs in; ``http`` is a client with its token."""

    def __init__(self, tmp_path: Path, broker_port: int) -> None:
        self.data_dir = tmp_path / "data"
        self.db_url = f"sqlite:///{self.data_dir / 'lantern.db'}"
        self.port = free_port()
        self.log_path = tmp_path / "hub.log"
        self.broker_port = broker_port
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30.0)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def __enter__(self) -> ServedHub:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                lantern(
                    "-v", "hub", "serve", "--data-dir", str(self.data_dir),
                    "--http", f"127.0.0.1:{self.port}",
                    "--mqtt", f"mqtt://127.0.0.1:{self.broker_port}",
                    "--client-id", unique_id("hub"),
                ),
                env=hub_env(SECRET),
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.output()
            try:
                return self.http.get("/api/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(healthy, 30.0, step=0.1), self.output()
        created = subprocess.run(
            lantern(
                "users", "create", "--username", "ops", "--role", "admin",
                "--password-stdin", "--database-url", self.db_url,
            ),
            input=f"{PASSWORD}\n".encode(),
            env=hub_env(None),
            capture_output=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr.decode()
        login = self.http.post("/api/v1/auth/token", data={"username": "ops", "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.token = login.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return self

    def feed_url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/feed?access_token={self.token}{query}"

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=20)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
