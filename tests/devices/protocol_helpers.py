"""Builders and the payload-fixture index shared by the wire-protocol tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from devices.protocol import (
    PositionBody,
    PositionEvent,
    SightingBody,
    SightingEvent,
    SightingQuality,
    encode_embedding,
    new_boot_id,
    new_event_id,
    parse_timestamp,
)

PAYLOADS = Path(__file__).resolve().parents[1] / "fixtures" / "payloads"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    file: str
    topic: str
    expect: str
    note: str
    verify: str | None
    upgraded_from: str | None

    @property
    def payload(self) -> bytes:
        return (PAYLOADS / self.file).read_bytes()

    @property
    def id(self) -> str:
        return self.file


def load_index() -> dict[str, Any]:
    index: dict[str, Any] = json.loads((PAYLOADS / "cases.json").read_text(encoding="utf-8"))
    return index


def fixture_now() -> datetime:
    return parse_timestamp(load_index()["now"])


def load_cases() -> list[Case]:
    return [
        Case(
            file=c["file"],
            topic=c["topic"],
            expect=c["expect"],
            note=c["note"],
            verify=c.get("verify"),
            upgraded_from=c.get("upgraded_from"),
        )
        for c in load_index()["cases"]
    ]


def unit_vector(dim: int, seed: int = 0) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dim)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def position_event(device_id: str = "wb-0001", **body: Any) -> PositionEvent:
    fields: dict[str, Any] = {"lat": 1.5, "lon": 2.5, "acc": 10.0, "src": "gnss", **body}
    return PositionEvent(
        event_id=new_event_id(),
        device_id=device_id,
        boot_id=new_boot_id(),
        seq=1,
        captured_at=datetime(2025, 6, 1, 11, 59, tzinfo=UTC),
        sent_at=datetime(2025, 6, 1, 11, 59, 1, tzinfo=UTC),
        body=PositionBody(**fields),
    )


def sighting_event(model_id: str = "dlib-resnet-v1", dim: int = 128) -> SightingEvent:
    return SightingEvent(
        event_id=new_event_id(),
        device_id="cam-01",
        boot_id=new_boot_id(),
        seq=7,
        captured_at=datetime(2025, 6, 1, 11, 59, tzinfo=UTC),
        sent_at=datetime(2025, 6, 1, 11, 59, tzinfo=UTC),
        body=SightingBody(
            model_id=model_id,
            embedding=encode_embedding(unit_vector(dim)),
            quality=SightingQuality(det_score=0.9, face_px=80),
            bbox=(10.0, 20.0, 90.0, 120.0),
            track_id=3,
            frames_fused=4,
        ),
    )
