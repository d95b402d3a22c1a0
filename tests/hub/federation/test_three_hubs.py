"""Three real hubs (``lantern hub serve --http``) on loopback ports, each with its own
SQLite data directory, keys and federation file, plus a peer that is down.

Hub C enrols a found person from real photos (LFW, Colin Powell 1-3); hub B holds no
one; hub A sends a missing-person match request with photo 4 to B, C and D (a closed
port). A's request shows C answered with the person ranked first, B answered with no
candidates, D in error, without waiting on D; both audit chains verify and the audit
rows on A and C carry the same request id.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.edge.mqtt_helpers import PrivateBroker, free_port, unique_id, wait_until
from tests.hub.federation.helpers import make_keys, write_federation
from tests.hub.test_serve import PASSWORD, SECRET, hub_env, lantern

pytestmark = pytest.mark.federation

PERSON = "Colin_Powell"
TIMEOUT_S = 20.0


def _photo(faces_dir: Path, n: int) -> Path:
    path = faces_dir / "lfw_dev" / PERSON / f"{PERSON}_{n:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


class FederatedHub:
    """``lantern hub serve --http`` with ``LANTERN_FEDERATION_FILE``, and a user."""

    secret = SECRET
    """The hub's JWT signing key (a subclass may give each hub its own)."""

    def __init__(self, folder: Path, hub_id: str, broker_port: int) -> None:
        self.hub_id = hub_id
        self.folder = folder
        self.data_dir = folder / "data"
        self.db_url = f"sqlite:///{self.data_dir / 'lantern.db'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key_file, self.public_key = make_keys(folder / "keys", "hub")
        self.federation_file = folder / "federation.yaml"
        self.broker_port = broker_port
        self.log_path = folder / "hub.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=60.0)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def start(self) -> None:
        env = hub_env(self.secret) | {"LANTERN_FEDERATION_FILE": str(self.federation_file)}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                lantern(
                    "-v", "hub", "serve", "--data-dir", str(self.data_dir),
                    "--http", f"127.0.0.1:{self.port}",
                    "--mqtt", f"mqtt://127.0.0.1:{self.broker_port}",
                    "--client-id", unique_id(self.hub_id),
                ),
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.output()
            try:
                return self.http.get("/api/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(healthy, 60.0, step=0.1), self.output()

    def login(self, username: str, role: str) -> dict[str, str]:
        created = subprocess.run(
            lantern(
                "users", "create", "--username", username, "--role", role,
                "--password-stdin", "--database-url", self.db_url,
            ),
            input=f"{PASSWORD}\n".encode(), env=hub_env(None),
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr.decode()
        token = self.http.post(
            "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    def audit_verify(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            lantern("audit", "verify", "--database-url", self.db_url),
            env=hub_env(None), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def audit_rows(self, headers: dict[str, str]) -> list[dict[str, Any]]:
        response = self.http.get("/api/v1/audit?limit=500", headers=headers)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def __enter__(self) -> FederatedHub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def federate_and_start(
    a: FederatedHub,
    answering: list[FederatedHub],
    *,
    extra_peers: list[tuple[str, str, str]] | None = None,
    timeout: float = TIMEOUT_S,
) -> None:
    """Hub ``a`` asks every hub of ``answering`` (and ``extra_peers``); each of those
    lets ``a`` search its ``found`` gallery for missing persons, crops included. All
    are started and healthy on return."""
    peers = [(hub.hub_id, hub.url, hub.public_key) for hub in answering]
    write_federation(
        a.federation_file, a.hub_id, a.key_file, peers + (extra_peers or []), timeout=timeout
    )
    may_search = {a.hub_id: {"missing_person": ["found"], "crops": True}}
    for hub in answering:
        write_federation(
            hub.federation_file,
            hub.hub_id,
            hub.key_file,
            [(a.hub_id, a.url, a.public_key)],
            may_search,
        )
    for hub in (a, *answering):
        hub.start()
    for hub in (a, *answering):
        hub.wait_healthy()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def test_three_hubs_search_each_other(
    tmp_path: Path, broker: PrivateBroker, faces_dir: Path
) -> None:
    enrol = [_photo(faces_dir, n) for n in (1, 2, 3)]
    probe = _photo(faces_dir, 4)
    with (
        FederatedHub(tmp_path / "a", "region-a", broker.port) as a,
        FederatedHub(tmp_path / "b", "region-b", broker.port) as b,
        FederatedHub(tmp_path / "c", "region-c", broker.port) as c,
    ):
        _, d_public = make_keys(tmp_path / "d", "hub")
        d_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        federate_and_start(a, [b, c], extra_peers=[("region-d", d_url, d_public)])

        # Hub C: a found person, enrolled from three real photos.
        c_admin = c.login("c-admin", "admin")
        person = c.http.post(
            "/api/v1/persons",
            json={
                "category": "found",
                "display_name": "Unknown man, shelter 12",
                "case_id": "FP-3",
            },  # fmt: skip
            headers=c_admin,
        )
        assert person.status_code == 201, person.text
        person_id = person.json()["id"]
        files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in enrol]
        enrolled = c.http.post(f"/api/v1/persons/{person_id}/photos", files=files, headers=c_admin)
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json()["accepted"] >= 2, enrolled.text

        # Hub A: a requester asks B, C and D with photo 4.
        rita = a.login("rita", "requester")
        started = time.monotonic()
        response = a.http.post(
            "/api/v1/match-requests",
            data={
                "case_id": "MP-2025-001",
                "legal_basis": "missing-persons act s.4",
                "purpose": "missing_person",
                "k": "5",
            },  # fmt: skip
            files=[("photos", (probe.name, probe.read_bytes(), "image/jpeg"))],
            headers=rita,
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 201, response.text + a.output()
        view = response.json()
        request_id = view["id"]
        regions = {r["hub_id"]: r for r in view["regions"]}
        assert regions["region-c"]["status"] == "answered", (regions, c.output())
        assert regions["region-b"]["status"] == "answered", (regions, b.output())
        assert regions["region-b"]["candidates"] == 0
        assert regions["region-d"]["status"] in ("error", "timed_out")
        assert elapsed < TIMEOUT_S, elapsed
        (group,) = view["candidate_groups"]
        first = group["candidates"][0]
        assert first["hub_id"] == "region-c" and first["candidate_ref"] == f"person:{person_id}"
        assert first["rank"] == 1 and first["has_crop"] is True
        assert all(cand["hub_id"] == "region-c" for cand in group["candidates"])

        # The same request id in both audit logs; both chains verify.
        a_rows = a.audit_rows(a.login("a-auditor", "auditor"))
        c_rows = c.audit_rows(c.login("c-auditor", "auditor"))
        target = f"request:{request_id}"
        a_actions = sorted(r["action"] for r in a_rows if r["target"] == target)
        assert a_actions == ["federation.answer"] * 3 + ["federation.request"]
        received = [r for r in c_rows if r["target"] == target]
        assert [(r["action"], r["actor"], r["case_id"]) for r in received] == [
            ("federation.search_received", "hub:region-a", "MP-2025-001")
        ]
        assert "Unknown man" not in response.text
        for hub in (a, b, c):
            verified = hub.audit_verify()
            assert verified.returncode == 0, verified.stderr
            assert "audit chain intact" in verified.stdout
