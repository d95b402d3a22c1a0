"""The hash-chained audit log: appends, tampering caught, concurrent writers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub import audit
from hub.cli import audit_app
from hub.db.engine import write_session


def fill(engine: Engine, n: int) -> None:
    for i in range(n):
        audit.record(
            engine,
            actor=f"officer-{i}",
            role="officer",
            action="search.watchlist",
            purpose="investigation",
            case_id=f"case-{i}",
            target="sighting:42",
            result="3 candidates",
        )


def unguard(session: Session) -> None:
    """Switch off the append-only trigger, as an attacker with DDL rights could."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ALTER TABLE audit DISABLE TRIGGER audit_append_only"))
    else:
        session.execute(text("DROP TRIGGER audit_no_update"))
        session.execute(text("DROP TRIGGER audit_no_delete"))


def check(engine: Engine) -> audit.VerifyResult:
    with Session(engine) as session:
        return audit.verify(session)


def test_intact_chain_verifies(engine: Engine) -> None:
    assert check(engine) == audit.VerifyResult(True, 0)
    fill(engine, 5)
    result = check(engine)
    assert result.ok and result.rows == 5
    with Session(engine) as session:
        assert audit.head(session) == (5, result.head_hash)


def test_hash_covers_the_content() -> None:
    entry = audit.AuditEntry(
        seq=1, at=datetime(2025, 1, 1, tzinfo=UTC), actor="a", role="admin", action="x"
    )
    first = audit.chain_hash(audit.GENESIS_HASH, entry)
    entry.target = "person:1"
    assert audit.chain_hash(audit.GENESIS_HASH, entry) != first


def test_update_and_delete_are_refused(engine: Engine) -> None:
    fill(engine, 2)
    for statement in ("UPDATE audit SET result = 'none' WHERE seq = 1", "DELETE FROM audit"):
        with engine.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
            conn.execute(text(statement))


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "reason"),
    [
        ("UPDATE audit SET result = '0 candidates' WHERE seq = 3", 3, "content"),
        ("DELETE FROM audit WHERE seq = 2", 3, "missing"),
        # Swap rows 2 and 4 (through a free key: the primary key is checked per row).
        (
            "UPDATE audit SET seq = -1 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; "
            "UPDATE audit SET seq = 4 WHERE seq = -1",
            2,
            "prev_hash",
        ),
    ],
    ids=["edit", "delete", "reorder"],
)
def test_tampering_is_caught(engine: Engine, tamper: str, bad_seq: int, reason: str) -> None:
    fill(engine, 5)
    with Session(engine) as session, session.begin():
        unguard(session)
        for statement in tamper.split("; "):
            session.execute(text(statement))
    result = check(engine)
    assert not result.ok
    assert result.bad_seq == bad_seq
    assert result.reason is not None and reason in result.reason


def test_cli_verify_exit_codes(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    fill(engine, 3)
    runner = CliRunner()
    ok = runner.invoke(audit_app, ["verify", "--database-url", url])
    assert ok.exit_code == 0, ok.output
    assert "intact: 3 rows" in ok.output
    with Session(engine) as session, session.begin():
        unguard(session)
        session.execute(text("UPDATE audit SET actor = 'someone-else' WHERE seq = 2"))
    bad = runner.invoke(audit_app, ["verify", "--database-url", url])
    assert bad.exit_code == 1
    assert "seq=2" in bad.output


def test_concurrent_appends_keep_one_chain(engine: Engine) -> None:
    threads, per_thread = 4, 10
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with write_session(engine) as session:
                    audit.append(session, actor=f"w{n}", role="officer", action=f"a{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    result = check(engine)
    assert result.ok and result.rows == threads * per_thread


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("6:" + "ab" * 32, True),
        (" 6:" + "AB" * 32 + " ", True),
        ("6", False),
        ("6:abc", False),
        ("x:" + "0" * 64, False),
        ("0:" + "0" * 64, False),
        ("-1:" + "0" * 64, False),
        ("6:" + "g" * 64, False),
        (":", False),
    ],
)
def test_a_kept_head_is_parsed_strictly(text: str, ok: bool) -> None:
    if ok:
        assert audit.KeptHead.parse(text) == audit.KeptHead(6, "ab" * 32)
    else:
        with pytest.raises(ValueError):
            audit.KeptHead.parse(text)
