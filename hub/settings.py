"""Hub settings, read once from the environment (prefix ``LANTERN_``).

``HubSettings`` is the one place the hub's configuration lives. The JWT signing key
has no default: a hub that has not been given one refuses to start rather than
signing tokens with a value everyone knows. Known placeholder values and keys that
are too short are refused by the validator for the same reason.

The database defaults to an SQLite file in ``data_dir`` (the embedded setup for a
laptop); production sets ``LANTERN_DATABASE_URL`` to a PostgreSQL URL
(``postgresql+psycopg://user@host/db``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from devices.firmware import default_config_dir

__all__ = ["MIN_JWT_SECRET_CHARS", "MQTT_PASSWORD_ENV", "WEAK_SECRETS", "HubSettings"]

MQTT_PASSWORD_ENV = "LANTERN_MQTT_PASSWORD"
"""Environment variable holding the hub's broker password. It is read from the
environment only: a password on the command line or in the broker URL would be
visible to every user of the machine (``ps``) and kept in shell history."""

MIN_JWT_SECRET_CHARS = 32
"""Shortest JWT signing key accepted (HS256 wants at least 256 bits of key)."""

WEAK_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "password",
        "jwt-secret",
        "jwt_secret",
        "lantern",
        "default",
        "test",
    }
)
"""Placeholder values refused whatever their length (compared case-insensitively)."""


class HubSettings(BaseSettings):
    """Configuration of one hub process."""

    model_config = SettingsConfigDict(
        env_prefix="LANTERN_", extra="forbid", env_file=None, validate_default=True
    )

    data_dir: Path = Field(
        default=Path("./data"), description="Directory for the embedded database and caches."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means sqlite:///<data_dir>/lantern.db.",
    )
    jwt_secret: SecretStr = Field(
        description="Key that signs API bearer tokens; no default, placeholders refused."
    )
    mqtt_url: str = Field(
        default="mqtt://127.0.0.1:1883", description="Broker the ingest consumers connect to."
    )
    config_dir: Path = Field(
        default_factory=default_config_dir,
        description="Firmware configuration folder (profiles/, devices/, sites/) the hub "
        "renders device configurations from; default $LANTERN_FIRMWARE_DIR, else the "
        "packaged firmware_configs.",
    )
    db_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")
    federation_file: Path | None = Field(
        default=None,
        description="Federation file (YAML/JSON: this hub's id and key, its peers, its "
        "policy; see hub.federation.peers); None (default): federation off, the hub "
        "works alone.",
    )
    map_tile_url: str | None = Field(
        default=None,
        description="Raster tile URL template with {z}, {x} and {y} (e.g. "
        "https://tiles.example/{z}/{x}/{y}.png) that the command map draws under the "
        "site; None (default): no tiles, the map works offline.",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret.strip().lower() in WEAK_SECRETS:
            raise ValueError("jwt_secret is a well-known placeholder; set a random key")
        if len(secret) < MIN_JWT_SECRET_CHARS:
            raise ValueError(
                f"jwt_secret must be at least {MIN_JWT_SECRET_CHARS} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if len(set(secret)) < 8:
            raise ValueError("jwt_secret has too few distinct characters to be random")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> HubSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'lantern.db'}"
        return self
