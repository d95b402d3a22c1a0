"""HubSettings: the JWT key is required and placeholders are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.settings import HubSettings

GOOD = "q8Vw3nZ-2kLr9xTb7mYp4sHc1dFg6jKa0eUoRiWz"


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LANTERN_JWT_SECRET", GOOD)
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path))
    settings = HubSettings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'lantern.db'}"
    assert settings.jwt_secret.get_secret_value() == GOOD
    assert GOOD not in repr(settings)


def test_database_url_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANTERN_JWT_SECRET", GOOD)
    monkeypatch.setenv("LANTERN_DATABASE_URL", "postgresql://postgres@127.0.0.1/lantern")
    assert HubSettings().database_url == "postgresql://postgres@127.0.0.1/lantern"


def test_jwt_secret_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LANTERN_JWT_SECRET", raising=False)
    with pytest.raises(ValidationError, match="jwt_secret"):
        HubSettings()


@pytest.mark.parametrize("bad", ["changeme", "SECRET", "short-key-1234", "a" * 40, ""])
def test_weak_jwt_secrets_are_refused(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("LANTERN_JWT_SECRET", bad)
    with pytest.raises(ValidationError):
        HubSettings()
