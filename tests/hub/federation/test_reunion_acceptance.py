"""Issue acceptance for reunion across regions, with three real hubs.

Hub A files a missing-person report whose photo (LFW, Colin Powell 4) matches a found
person enrolled at hub C (photos 1-3); hub B holds no match. The candidate appears in
A's review queue with C's answer, two caseworkers confirm it, the case closes,
erasure removes the vectors at A and at C (searched for afterwards with the same
photo), and both audit chains verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.edge.mqtt_helpers import PrivateBroker
from tests.hub.federation.test_three_hubs import FederatedHub, _photo, federate_and_start

pytestmark = pytest.mark.federation


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def _search(hub: FederatedHub, headers: dict[str, str], photo: Path, gallery: str) -> Any:
    response = hub.http.post(
        "/api/v1/search",
        data={"case_id": "MP-7", "purpose": "missing_person", "gallery": gallery, "k": "5"},
        files={"probe": (photo.name, photo.read_bytes(), "image/jpeg")},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_missing_person_is_found_in_another_region_confirmed_closed_and_erased(
    tmp_path: Path, broker: PrivateBroker, faces_dir: Path
) -> None:
    found_photos = [_photo(faces_dir, n) for n in (1, 2, 3)]
    missing_photo = _photo(faces_dir, 4)
    with (
        FederatedHub(tmp_path / "a", "region-a", broker.port) as a,
        FederatedHub(tmp_path / "b", "region-b", broker.port) as b,
        FederatedHub(tmp_path / "c", "region-c", broker.port) as c,
    ):
        federate_and_start(a, [b, c], timeout=30.0)

        # Hub C: a shelter reports a found man; his photos are enrolled.
        c_cw = c.login("c-cw", "caseworker")
        found = c.http.post(
            "/api/v1/reunion/cases",
            json={
                "category": "found",
                "display_name": "Unknown man, shelter 12",
                "reported_by": "Shelter 12",
            },
            headers=c_cw,
        )
        assert found.status_code == 201, found.text
        found_id = found.json()["person_id"]
        files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in found_photos]
        enrolled = c.http.post(
            f"/api/v1/reunion/cases/{found_id}/photos",
            data={"peers": "false"},
            files=files,
            headers=c_cw,
        )
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json()["enrolment"]["accepted"] >= 2, enrolled.text

        # Hub A: a family reports their father missing, with consent; his photo is
        # searched locally and in the peer regions at once.
        cw1 = a.login("cw1", "caseworker")
        cw2 = a.login("cw2", "caseworker")
        missing = a.http.post(
            "/api/v1/reunion/cases",
            json={
                "category": "missing",
                "display_name": "Missing father",
                "consent_by": "daughter (family report 2025-11)",
            },
            headers=cw1,
        )
        assert missing.status_code == 201, missing.text
        missing_id = missing.json()["person_id"]
        searched = a.http.post(
            f"/api/v1/reunion/cases/{missing_id}/photos",
            files=[("photos", (missing_photo.name, missing_photo.read_bytes(), "image/jpeg"))],
            headers=cw1,
        )
        assert searched.status_code == 200, searched.text + a.output()
        peers = searched.json()["search"]["peers"]
        assert peers["status"] == "sent", peers
        regions = {r["hub_id"]: r for req in peers["requests"] for r in req["regions"]}
        assert regions["region-c"]["status"] == "answered", regions
        assert regions["region-b"]["status"] == "answered", regions

        queue = a.http.get("/api/v1/review", headers=cw1).json()
        from_c = [i for i in queue["items"] if i["hub_id"] == "region-c"]
        assert from_c and from_c[0]["rank"] == 1, queue
        assert not [i for i in queue["items"] if i["hub_id"] == "region-b"], queue
        assert from_c[0]["candidate_ref"] == f"person:{found_id}"
        candidate = from_c[0]["id"]

        # Two different caseworkers confirm; one alone is not enough.
        first = a.http.post(f"/api/v1/review/{candidate}/confirm", json={}, headers=cw1)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "pending"
        again = a.http.post(f"/api/v1/review/{candidate}/confirm", json={}, headers=cw1)
        assert again.status_code == 409
        second = a.http.post(f"/api/v1/review/{candidate}/confirm", json={}, headers=cw2)
        assert second.status_code == 200, second.text
        assert second.json()["status"] == "confirmed"

        # Reunited: both regions close their case and erase the person.
        closed = a.http.post(
            f"/api/v1/reunion/cases/{missing_id}/close",
            json={"status": "reunited", "reason": "reunited with his daughter"},
            headers=cw1,
        )
        assert closed.status_code == 200, closed.text
        assert closed.json()["retention_until"] is not None
        erase = {"reason": "case closed: reunited; family asked for erasure"}
        assert (
            a.http.post(
                f"/api/v1/reunion/cases/{missing_id}/erase", json=erase, headers=cw1
            ).status_code
            == 200
        )
        c.http.post(
            f"/api/v1/reunion/cases/{found_id}/close",
            json={"status": "reunited", "reason": "identified through region-a"},
            headers=c_cw,
        ).raise_for_status()
        c.http.post(
            f"/api/v1/reunion/cases/{found_id}/erase", json=erase, headers=c_cw
        ).raise_for_status()

        # The same photo finds no one any more, at A (missing) or at C (found).
        at_a = _search(a, cw1, missing_photo, "missing")
        assert all(x["person_id"] != missing_id for x in at_a["candidates"]), at_a
        at_c = _search(c, c_cw, missing_photo, "found")
        assert all(x["person_id"] != found_id for x in at_c["candidates"]), at_c

        for hub in (a, c):
            verified = hub.audit_verify()
            assert verified.returncode == 0, verified.stdout + verified.stderr
