"""``lantern audit verify`` run as the real command (a subprocess of the installed CLI)
on databases whose audit chain was tampered with.

tests/hub/test_audit.py checks :func:`hub.audit.verify` on edited, deleted and
reordered rows on SQLite and PostgreSQL, and the Typer command in-process on an
edited row only; here the command a custodian runs is given each kind of damage and
must exit 1 naming the first bad row. Two attacks a bare chain cannot show
(documented in ``hub.audit``) are measured too, on both backends: dropping the newest
row and re-chaining after an edit leave a chain that verifies, and are caught only by
comparing with a head kept elsewhere, which ``--expect-head SEQ:HASH`` does. A
database without an audit log is exit 2 (not 1, which means a broken chain), and an
SQLite file that does not exist is not created.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from hub import audit
from hub.db.engine import make_engine
from hub.db.models import AuditEntry
from tests.access import evidence
from tests.hub.conftest import fresh_pg_database
from tests.hub.test_audit import unguard
from tests.hub.test_serve import hub_env, lantern

ROWS = 6
HEAD_RE = re.compile(r"audit chain intact: (\d+) rows, head ([0-9a-f]{64})")


def fill(engine: Engine) -> str:
    """``ROWS`` audit rows like the API writes; the head hash a custodian would keep."""
    for i in range(ROWS):
        audit.record(
            engine,
            actor=f"analyst-{i % 2}",
            role="analyst",
            action="search.watchlist",
            purpose="investigation",
            case_id=f"case-{i}",
            target=f"sighting:{100 + i}",
            result=f"{i} candidates",
        )
    with Session(engine) as session:
        seq, head = audit.head(session)
    assert seq == ROWS
    return head


def _statements(*sql: str) -> Callable[[Session], None]:
    def run(session: Session) -> None:
        for statement in sql:
            session.execute(text(statement))

    return run


def _rechain_after_edit(session: Session) -> None:
    """Edit row 3, then recompute every hash from there on, as someone who knows the
    (keyless) hash rule could."""
    session.execute(text("UPDATE audit SET result = '0 candidates' WHERE seq = 3"))
    session.expire_all()
    entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    prev = audit.GENESIS_HASH
    for entry in entries:
        if entry.seq >= 3:
            entry.prev_hash = prev
            entry.hash = audit.chain_hash(prev, entry)
            session.flush()
        prev = entry.hash


@dataclass(frozen=True)
class Case:
    name: str
    tamper: Callable[[Session], None]
    bad_seq: int | None
    """The row the command must name; None: the chain itself still verifies."""
    reason: str = ""


CASES = [
    Case("edit", _statements("UPDATE audit SET actor = 'someone-else' WHERE seq = 3"), 3,
         "content"),
    Case("delete-row", _statements("DELETE FROM audit WHERE seq = 2"), 3, "rows missing"),
    Case(
        "reorder-rows",
        _statements(
            "UPDATE audit SET seq = -1 WHERE seq = 2",
            "UPDATE audit SET seq = 2 WHERE seq = 4",
            "UPDATE audit SET seq = 4 WHERE seq = -1",
        ),
        2,
        "prev_hash",
    ),
    Case("delete-newest-row", _statements(f"DELETE FROM audit WHERE seq = {ROWS}"), None),
    Case("edit-and-rechain", _rechain_after_edit, None),
]  # fmt: skip


def tamper(engine: Engine, case: Case) -> str:
    head = fill(engine)
    with Session(engine) as session, session.begin():
        unguard(session)
        case.tamper(session)
    return head


def verify_command(url: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        lantern("audit", "verify", "--database-url", url, *options),
        env=hub_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


DAMAGE = [c for c in CASES if c.bad_seq is not None]
UNSEEN = [c for c in CASES if c.name in ("delete-newest-row", "edit-and-rechain")]


def judge(case: Case, command: subprocess.Popen[str]) -> dict[str, object]:
    """The command must exit 1 naming the first bad row; what it said, for the artifact."""
    stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 1, (case.name, stdout, stderr)
    assert f"BROKEN at row seq={case.bad_seq}" in stderr, (case.name, stderr)
    assert case.reason in stderr, (case.name, stderr)
    assert "intact" not in stdout, (case.name, stdout)
    verdict = next(line for line in stderr.splitlines() if "audit chain BROKEN" in line)
    return {"exit_code": command.returncode, "named_row": case.bad_seq, "verdict": verdict}


def test_verify_command_on_tampered_sqlite_databases(sqlite_template: Path, tmp_path: Path) -> None:
    """One database file per kind of damage, the commands run side by side."""
    running: list[tuple[Case, subprocess.Popen[str]]] = []
    try:
        for case in DAMAGE:
            path = tmp_path / f"{case.name}.db"
            shutil.copy(sqlite_template, path)
            engine = make_engine(f"sqlite:///{path}")
            try:
                tamper(engine, case)
            finally:
                engine.dispose()
            running.append((case, verify_command(f"sqlite:///{path}")))
        results = {case.name: judge(case, command) for case, command in running}
    finally:
        for _case, command in running:
            if command.poll() is None:
                command.kill()
                command.wait(timeout=10)
    evidence.record("audit_chain", "cli_sqlite", results)


def run_all(*commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Run ``lantern audit verify --database-url URL OPTIONS...`` for each
    ``(URL, *OPTIONS)`` side by side; ``(exit code, stdout, stderr)`` of each."""
    running = [verify_command(url, *options) for url, *options in commands]
    try:
        results = []
        for command in running:
            stdout, stderr = command.communicate(timeout=120)
            results.append((command.returncode, stdout, stderr))
        return results
    finally:
        for command in running:
            if command.poll() is None:
                command.kill()
                command.wait(timeout=10)


def run(url: str, *options: str) -> tuple[int, str, str]:
    return run_all((url, *options))[0]


@pytest.mark.parametrize("case", UNSEEN, ids=lambda c: c.name)
def test_what_the_chain_alone_cannot_show_is_caught_by_the_kept_head(
    engine: Engine, case: Case
) -> None:
    """Dropping the newest row or re-chaining after an edit leaves a chain that
    verifies; ``--expect-head`` with the head kept before the attack fails it."""
    url = engine.url.render_as_string(hide_password=False)
    kept = tamper(engine, case)
    (code, stdout, stderr), checked = run_all((url,), (url, "--expect-head", f"{ROWS}:{kept}"))
    assert code == 0, (stdout, stderr)  # the chain alone verifies
    intact = HEAD_RE.search(stdout)
    assert intact is not None, stdout
    rows, head = intact.groups()
    assert head != kept
    assert int(rows) == (ROWS - 1 if case.name == "delete-newest-row" else ROWS)
    code, stdout, stderr = checked
    assert code == 1, (stdout, stderr)
    assert "does NOT hold the kept head" in stderr, stderr
    expected = "is missing" if case.name == "delete-newest-row" else f"row seq={ROWS} has hash"
    assert expected in stderr, stderr
    assert "found unchanged" not in stdout
    verdict = next(line for line in stderr.splitlines() if "kept head" in line)
    evidence.record(
        "audit_chain",
        f"head_check_{engine.dialect.name}_{case.name}",
        {
            "chain_verifies": True,
            "rows": int(rows),
            "expect_head_exit_code": code,
            "verdict": verdict,
        },
    )


def test_a_kept_head_of_an_intact_log_passes_as_the_log_grows(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """The kept head still matches after more rows are appended; a head whose hash
    differs, one from the future or a malformed one fails. (SQLite only: the check is
    one select by ``seq``; both backends are run by the test above.)"""
    path = tmp_path / "lantern.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    try:
        kept = fill(engine)
        audit.record(engine, actor="analyst-9", role="analyst", action="search.watchlist")
    finally:
        engine.dispose()
    wrong = ("0" if kept[0] != "0" else "1") + kept[1:]
    grown, mismatch, future, malformed = run_all(
        (url, "--expect-head", f"{ROWS}:{kept.upper()}"),
        (url, "--expect-head", f"{ROWS}:{wrong}"),
        (url, "--expect-head", f"{ROWS + 5}:{kept}"),
        (url, "--expect-head", f"{ROWS}:{kept[:12]}"),
    )
    code, stdout, stderr = grown
    assert code == 0, (stdout, stderr)
    assert f"audit chain intact: {ROWS + 1} rows" in stdout
    assert f"kept head seq={ROWS} found unchanged" in stdout
    code, _stdout, stderr = mismatch
    assert code == 1 and f"row seq={ROWS} has hash {kept}" in stderr, stderr
    code, _stdout, stderr = future
    assert code == 1 and f"seq={ROWS + 5} is missing" in stderr, stderr
    code, _stdout, stderr = malformed  # a usage error, not a verdict on the chain
    assert code == 2 and "--expect-head" in stderr and "SEQ:HASH" in stderr, stderr


def _no_log_message(url: str) -> str:
    return f"no audit log at {url} (not a Lantern database, or not migrated)"


def test_a_database_without_an_audit_log_is_exit_2_and_no_file_is_made(tmp_path: Path) -> None:
    """Exit 1 means a broken chain; a database with no audit log at all (a missing
    SQLite file, another application's file) is a different answer, and the missing
    file is not created."""
    missing = tmp_path / "nothing-here.db"
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
    conn.close()
    results: dict[str, object] = {}
    urls = {
        "missing_sqlite_file": f"sqlite:///{missing}",
        "not_a_lantern_sqlite_file": f"sqlite:///{other}",
        "sqlite_in_memory": "sqlite://",
    }
    answers = run_all(*((url,) for url in urls.values()))
    for (name, url), (code, stdout, stderr) in zip(urls.items(), answers, strict=True):
        assert code == 2, (name, stdout, stderr)
        assert stderr.strip() == _no_log_message(url), (name, stderr)
        assert "Traceback" not in stderr and not stdout
        results[name] = {"exit_code": code, "message": stderr.strip()}
    assert not missing.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-app.db"]
    evidence.record("audit_chain", "no_audit_log", results)


def test_a_postgresql_database_without_an_audit_log_is_exit_2() -> None:
    with fresh_pg_database("lantern_noaudit") as url:
        code, stdout, stderr = run(url)
    assert code == 2, (stdout, stderr)
    assert stderr.strip() == _no_log_message(url), stderr
