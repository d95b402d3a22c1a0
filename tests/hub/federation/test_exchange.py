"""Match requests between hubs over real HTTP (uvicorn on loopback ports), with the
answering hub on SQLite and PostgreSQL: signatures, policy, per-region status, the
review queue, retries and the audit on both sides."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.audit import verify
from hub.db.engine import write_session
from hub.db.models import AuditEntry, MatchRequest, MatchRequestRegion, Person, ReviewCandidate
from hub.federation.client import probe_ref_for, retry_match_request, send_match_request
from hub.federation.peers import FederationSettings, load_federation_settings
from tests.edge.mqtt_helpers import free_port
from tests.hub.federation.helpers import (
    MODEL,
    SilentPeer,
    ThreadedHub,
    enrol_vector,
    hub_app,
    make_keys,
    near,
    sqlite_engine,
    unit,
    write_federation,
)

TIMEOUT = 2.0


class Net:
    """Region A (requesting, SQLite) and region C (answering, on ``engine``)."""

    def __init__(self, tmp_path: Path, engine: Engine, sqlite_template: Path) -> None:
        self.tmp = tmp_path
        self.template = sqlite_template
        self.keys = {h: make_keys(tmp_path / "keys", h) for h in ("a", "b", "c", "d", "s")}
        self.c_engine = engine
        self.a_engine = sqlite_engine(sqlite_template, tmp_path / "a")
        self.c_app = hub_app(engine, None)
        self.c_file = tmp_path / "c.yaml"

    def c_federation(self, policy: dict[str, Any]) -> None:
        write_federation(
            self.c_file, "region-c", self.keys["c"][0],
            [("region-a", "http://127.0.0.1:9", self.keys["a"][1])], policy,
        )  # fmt: skip
        self.c_app.state.settings.federation_file = self.c_file

    def a_settings(self, peers: list[tuple[str, str]]) -> FederationSettings:
        path = write_federation(
            self.tmp / "a.yaml", "region-a", self.keys["a"][0],
            [(hub, url, self.keys[hub.removeprefix("region-")][1]) for hub, url in peers],
            timeout=TIMEOUT,
        )  # fmt: skip
        return load_federation_settings(path)


@pytest.fixture
def net(tmp_path: Path, engine: Engine, sqlite_template: Path) -> Any:
    n = Net(tmp_path, engine, sqlite_template)
    yield n
    n.a_engine.dispose()


def _send(engine: Engine, settings: FederationSettings, probe: Any, **over: Any) -> Any:
    args: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "case_id": "MP-2024-17",
        "legal_basis": "Art. 6(1)(e) GDPR; regional missing-persons act s.4",
        "purpose": "missing_person",
        "galleries": None,
        "k": 5,
        "model_id": MODEL,
        "probe": probe,
        "probe_person_id": None,
        "requester": "rita",
        "targets": None,
    }
    args.update(over)
    return args["request_id"], send_match_request(engine, settings, **args)


def _audit(engine: Engine, request_id: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AuditEntry)
                .where(AuditEntry.target == f"request:{request_id}")
                .order_by(AuditEntry.seq)
            )
        )


def test_regions_answer_refuse_fail_and_time_out_independently(net: Net) -> None:
    rng = np.random.default_rng(7)
    target, other, kid = unit(rng, 3)
    galleries = net.c_app.state.galleries
    wanted = enrol_vector(net.c_engine, galleries, "found", target)
    enrol_vector(net.c_engine, galleries, "found", other)
    child = enrol_vector(
        net.c_engine, galleries, "found", kid, birth_year=time.gmtime().tm_year - 9
    )
    enrol_vector(net.c_engine, galleries, "watchlist", near(target, rng, 0.01))
    net.c_federation({"region-a": {"missing_person": ["found"], "crops": True}})
    # region-b is a real hub whose policy lets region-a search nothing
    b_engine = sqlite_engine(net.template, net.tmp / "b")
    b_app = hub_app(b_engine, None)
    b_file = write_federation(
        net.tmp / "b.yaml", "region-b", net.keys["b"][0],
        [("region-a", "http://127.0.0.1:9", net.keys["a"][1])], {},
    )  # fmt: skip
    b_app.state.settings.federation_file = b_file
    closed = free_port()
    with ThreadedHub(net.c_app) as c, ThreadedHub(b_app) as b, SilentPeer() as s:
        settings = net.a_settings(
            [
                ("region-c", c.url),
                ("region-b", b.url),
                ("region-d", f"http://127.0.0.1:{closed}"),
                ("region-s", s.url),
            ]
        )
        started = time.monotonic()
        request_id, results = _send(net.a_engine, settings, near(target, rng)[None, :])
        elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + 1.5, elapsed
    by_hub = {r.hub_id: r for r in results}
    assert [r.hub_id for r in results] == ["region-c", "region-b", "region-d", "region-s"]
    assert by_hub["region-c"].status == "answered" and by_hub["region-c"].candidates == 3
    assert by_hub["region-b"].status == "refused"
    assert "no policy for peer region-a" in str(by_hub["region-b"].reason)
    assert by_hub["region-d"].status == "error" and "cannot reach" in str(by_hub["region-d"].reason)
    assert by_hub["region-s"].status == "timed_out"

    with Session(net.a_engine) as session:
        queue = session.scalars(
            select(ReviewCandidate).where(ReviewCandidate.request_id == request_id)
            .order_by(ReviewCandidate.rank)
        ).all()  # fmt: skip
        regions = {
            r.hub_id: r
            for r in session.scalars(
                select(MatchRequestRegion).where(MatchRequestRegion.request_id == request_id)
            )
        }
        outgoing = session.get(MatchRequest, request_id)
    assert outgoing is not None and outgoing.direction == "outgoing"
    assert outgoing.galleries == ["found"]
    assert [c.candidate_ref for c in queue][0] == f"person:{wanted}"
    assert queue[0].rank == 1 and queue[0].score > 0.9
    assert all(c.hub_id == "region-c" and c.gallery == "found" for c in queue)
    assert all(c.probe_ref == f"request:{request_id}" and c.status == "pending" for c in queue)
    assert all(c.crop_jpeg == b"\xff\xd8fake-jpeg" for c in queue)
    assert next(c for c in queue if c.candidate_ref == f"person:{child}").flags == ["child"]
    assert regions["region-c"].status == "answered" and regions["region-c"].candidates == 3
    assert regions["region-s"].status == "timed_out" and regions["region-s"].attempts == 1

    # The answering hub recorded the request under the same id and audited it.
    with Session(net.c_engine) as session:
        incoming = session.get(MatchRequest, request_id)
        own = session.get(MatchRequestRegion, (request_id, "region-c"))
        assert verify(session).ok
    assert incoming is not None and incoming.direction == "incoming"
    assert incoming.origin_hub == "region-a" and incoming.requester == "rita"
    assert own is not None and own.status == "answered" and own.candidates == 3
    c_rows = _audit(net.c_engine, request_id)
    assert [(r.action, r.actor, r.case_id, r.purpose) for r in c_rows] == [
        ("federation.search_received", "hub:region-a", "MP-2024-17", "missing_person")
    ]
    assert "Secret Name" not in str(c_rows[0].result)
    a_rows = _audit(net.a_engine, request_id)
    assert [r.action for r in a_rows] == ["federation.request"] + ["federation.answer"] * 4
    assert {r.actor for r in a_rows[1:]} == {"hub:region-c", "hub:region-b", "hub:region-d",
                                            "hub:region-s"}  # fmt: skip
    with Session(net.a_engine) as session:
        assert verify(session).ok
    b_engine.dispose()


def test_no_crops_unless_policy_allows_and_rejected_pairs_stay_rejected(net: Net) -> None:
    rng = np.random.default_rng(11)
    (target,) = unit(rng, 1)
    wanted = enrol_vector(net.c_engine, net.c_app.state.galleries, "found", target)
    net.c_federation({"region-a": {"missing_person": ["found"]}})
    with write_session(net.a_engine) as session:
        probe_person = Person(category="missing", display_name="Lost Person", case_id="MP-9")
        session.add(probe_person)
        session.flush()
        probe_person_id = probe_person.id
    with ThreadedHub(net.c_app) as c:
        settings = net.a_settings([("region-c", c.url)])
        first_id, first = _send(
            net.a_engine, settings, near(target, rng), probe_person_id=probe_person_id
        )
        assert first[0].status == "answered" and first[0].new_candidates == 1
        with write_session(net.a_engine) as session:
            row = session.scalars(select(ReviewCandidate)).one()
            assert row.probe_ref == probe_ref_for(first_id, probe_person_id)
            assert row.probe_ref == f"person:{probe_person_id}"
            assert row.crop_jpeg is None and row.candidate_ref == f"person:{wanted}"
            row.status = "rejected"
        _, second = _send(
            net.a_engine, settings, near(target, rng), probe_person_id=probe_person_id
        )
    assert second[0].status == "answered" and second[0].candidates == 1
    assert second[0].new_candidates == 0
    with Session(net.a_engine) as session:
        rows = session.scalars(select(ReviewCandidate)).all()
    assert len(rows) == 1 and rows[0].status == "rejected" and rows[0].request_id == first_id


def test_retry_asks_only_the_regions_that_did_not_answer(net: Net) -> None:
    rng = np.random.default_rng(5)
    (target,) = unit(rng, 1)
    enrol_vector(net.c_engine, net.c_app.state.galleries, "found", target)
    net.c_federation({"region-a": {"missing_person": ["found"]}})
    late_port = free_port()
    with ThreadedHub(net.c_app) as c:
        settings = net.a_settings(
            [("region-c", c.url), ("region-d", f"http://127.0.0.1:{late_port}")]
        )
        request_id, results = _send(net.a_engine, settings, near(target, rng))
        assert [r.status for r in results] == ["answered", "error"]
        # region-d comes up, holding a found person of its own
        d_engine = sqlite_engine(net.template, net.tmp / "d")
        d_app = hub_app(d_engine, None)
        d_person = enrol_vector(d_engine, d_app.state.galleries, "found", unit(rng)[0])
        d_app.state.settings.federation_file = write_federation(
            net.tmp / "d.yaml", "region-d", net.keys["d"][0],
            [("region-a", "http://127.0.0.1:9", net.keys["a"][1])],
            {"region-a": {"missing_person": ["found"]}},
        )  # fmt: skip
        with ThreadedHub(d_app, port=late_port):
            retried = retry_match_request(net.a_engine, settings, request_id, requester="rita")
    assert [(r.hub_id, r.status, r.attempts) for r in retried] == [("region-d", "answered", 2)]
    with Session(net.a_engine) as session:
        refs = session.scalars(
            select(ReviewCandidate.candidate_ref).where(ReviewCandidate.hub_id == "region-d")
        ).all()
    assert refs == [f"person:{d_person}"]
    d_engine.dispose()
    with Session(net.a_engine) as session:
        c_region = session.get(MatchRequestRegion, (request_id, "region-c"))
        assert c_region is not None and c_region.attempts == 1
    actions = [r.action for r in _audit(net.a_engine, request_id)]
    assert actions.count("federation.retry") == 1 and actions.count("federation.answer") == 3
    with Session(net.c_engine) as session:
        assert session.get(MatchRequest, request_id) is not None
    assert retry_match_request(net.a_engine, settings, request_id) == []  # all answered


def test_unknown_targets_and_bad_probes_are_refused_before_sending(net: Net) -> None:
    settings = net.a_settings([("region-c", "http://127.0.0.1:9")])
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="unknown target hub"):
        _send(net.a_engine, settings, unit(rng), targets=["region-x"])
    with pytest.raises(ValueError, match="1 to 5 templates"):
        _send(net.a_engine, settings, unit(rng, 6))
    with pytest.raises(ValueError, match="NaN"):
        _send(net.a_engine, settings, np.full((1, 16), np.nan, dtype=np.float32))
    with Session(net.a_engine) as session:
        assert session.scalars(select(MatchRequest)).all() == []
