"""Helpers of the federation tests: keys, federation files, hubs served in a thread."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import uvicorn
import yaml
from fastapi import FastAPI
from sqlalchemy import Engine

from devices.signing import generate_private_key, private_key_to_b64, public_key_to_b64
from hub.api import create_app
from hub.db.engine import make_engine, write_session
from hub.db.models import FaceTemplate, Person, ReunionCase
from hub.galleries import GalleryService
from hub.settings import HubSettings
from tests.edge.mqtt_helpers import free_port, wait_until

SECRET = "fed-Test_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP-42"
MODEL = "test-model"
DIM = 16


def make_keys(folder: Path, name: str) -> tuple[Path, str]:
    """A private key file (0600) and the base64 public key."""
    folder.mkdir(parents=True, exist_ok=True)
    key = generate_private_key()
    path = folder / f"{name}.key"
    path.write_text(private_key_to_b64(key) + "\n", encoding="ascii")
    path.chmod(0o600)
    return path, public_key_to_b64(key.public_key())


def write_federation(
    path: Path,
    hub_id: str,
    key_file: Path,
    peers: list[tuple[str, str, str]],
    policy: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> Path:
    body = {
        "hub_id": hub_id,
        "private_key_file": str(key_file),
        "request_timeout_s": timeout,
        "peers": [{"hub_id": h, "url": u, "public_key": k} for h, u, k in peers],
        "policy": policy or {},
    }
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def sqlite_engine(template: Path, folder: Path) -> Engine:
    """A migrated SQLite database of its own (a second hub in the same test)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "lantern.db"
    shutil.copy(template, path)
    return make_engine(f"sqlite:///{path}")


def hub_app(engine: Engine, federation_file: Path | None) -> FastAPI:
    url = engine.url.render_as_string(hide_password=False)
    settings = HubSettings(
        jwt_secret=SECRET,  # type: ignore[arg-type]
        database_url=url,
        federation_file=federation_file,
    )
    app = create_app(settings, engine)
    galleries = GalleryService()
    galleries.load_from_db(engine)
    app.state.galleries = galleries
    return app


def unit(rng: np.random.Generator, n: int = 1) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def near(v: npt.NDArray[np.float32], rng: np.random.Generator, noise: float = 0.1) -> Any:
    w = v + noise * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(DIM)
    return (w / np.linalg.norm(w, axis=-1, keepdims=True)).astype(np.float32)


def enrol_vector(
    engine: Engine,
    galleries: GalleryService,
    category: str,
    vector: npt.NDArray[np.float32],
    *,
    birth_year: int | None = None,
    crop: bytes | None = b"\xff\xd8fake-jpeg",
) -> int:
    """A person of ``category`` with one template of :data:`MODEL`; their id."""
    with write_session(engine) as session:
        person = Person(category=category, display_name="Secret Name", case_id="X-1")
        session.add(person)
        session.flush()
        row = FaceTemplate(
            person_id=person.id,
            model_id=MODEL,
            dim=DIM,
            embedding=np.asarray(vector, dtype="<f4").tobytes(),
            crop_jpeg=crop,
        )
        session.add(row)
        if birth_year is not None:
            session.add(ReunionCase(person_id=person.id, birth_year=birth_year))
        session.flush()
        person_id, template_id = person.id, row.id
    galleries.add(category, MODEL, [template_id], [person_id], vector[None, :])
    return person_id


class ThreadedHub:
    """An app served by uvicorn on a loopback port, in a thread."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedHub:
        self.thread.start()
        assert wait_until(lambda: self.server.started, 15.0), "hub did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class SilentPeer:
    """A TCP port that accepts connections and never answers (a hung peer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __enter__(self) -> SilentPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
