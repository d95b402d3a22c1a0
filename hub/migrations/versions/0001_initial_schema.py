"""Initial schema: every table of the hub, and the append-only guard on ``audit``.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 05:20:11.768185
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("case_id", sa.String(length=100), nullable=True),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_prev_hash")),
    )
    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("topic", sa.String(length=300), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index(op.f("ix_quarantine_device_id"), "quarantine", ["device_id"], unique=False)
    op.create_index(op.f("ix_quarantine_received_at"), "quarantine", ["received_at"], unique=False)

    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_sites")),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("profile", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("boot_id", sa.String(length=36), nullable=True),
        sa.Column("fw", sa.String(length=64), nullable=True),
        sa.Column("applied_config_version", sa.BigInteger(), nullable=True),
        sa.Column("applied_config_sha256", sa.String(length=64), nullable=True),
        sa.Column("desired_config_version", sa.BigInteger(), nullable=True),
        sa.Column("desired_config_sha256", sa.String(length=64), nullable=True),
        sa.Column("config_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('unknown', 'online', 'offline')", name=op.f("ck_devices_status")
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.site_id"], name=op.f("fk_devices_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_site_id"), "devices", ["site_id"], unique=False)

    op.create_table(
        "persons",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("external_ref", sa.String(length=100), nullable=True),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("case_id", sa.String(length=100), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "category IN ('supervised', 'watchlist', 'missing', 'found')",
            name=op.f("ck_persons_category"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.site_id"], name=op.f("fk_persons_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persons")),
    )
    op.create_index(op.f("ix_persons_category"), "persons", ["category"], unique=False)

    op.create_table(
        "alarms",
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("alarm_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.JSON(), nullable=True),
        sa.Column("related_event_id", sa.String(length=36), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.Column("sig", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_alarms_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
        sa.UniqueConstraint("device_id", "event_id", name=op.f("uq_alarms_device_id_event_id")),
    )
    op.create_index(
        op.f("ix_alarms_device_id_captured_at"),
        "alarms",
        ["device_id", "captured_at"],
        unique=False,
    )

    op.create_table(
        "checkins",
        sa.Column("next_checkin_s", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.Column("sig", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_checkins_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkins")),
        sa.UniqueConstraint("device_id", "event_id", name=op.f("uq_checkins_device_id_event_id")),
    )
    op.create_index(
        op.f("ix_checkins_device_id_captured_at"),
        "checkins",
        ["device_id", "captured_at"],
        unique=False,
    )

    op.create_table(
        "credentials",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=True),
        sa.Column("public_key", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('mqtt_password', 'ed25519')", name=op.f("ck_credentials_kind")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_credentials_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint(
            "device_id", "kind", "kid", name=op.f("uq_credentials_device_id_kind_kid")
        ),
    )
    op.create_index(op.f("ix_credentials_device_id"), "credentials", ["device_id"], unique=False)

    op.create_table(
        "device_boots",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=False),
        sa.Column("min_seq", sa.BigInteger(), nullable=False),
        sa.Column("max_seq", sa.BigInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name=op.f("fk_device_boots_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "boot_id", name=op.f("pk_device_boots")),
    )
    op.create_table(
        "face_templates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["persons.id"],
            name=op.f("fk_face_templates_person_id_persons"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_templates")),
    )
    op.create_index(
        op.f("ix_face_templates_model_id_person_id"),
        "face_templates",
        ["model_id", "person_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_face_templates_person_id"), "face_templates", ["person_id"], unique=False
    )

    op.create_table(
        "positions",
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("acc", sa.Float(), nullable=False),
        sa.Column("src", sa.String(length=16), nullable=False),
        sa.Column("alt", sa.Float(), nullable=True),
        sa.Column("vel", sa.Float(), nullable=True),
        sa.Column("cog", sa.Float(), nullable=True),
        sa.Column("sat", sa.Integer(), nullable=True),
        sa.Column("hdop", sa.Float(), nullable=True),
        sa.Column("batt", sa.Float(), nullable=True),
        sa.Column("charging", sa.Boolean(), nullable=True),
        sa.Column("strap", sa.String(length=16), nullable=True),
        sa.Column("rssi", sa.Integer(), nullable=True),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.Column("sig", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_positions_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint("device_id", "event_id", name=op.f("uq_positions_device_id_event_id")),
    )
    op.create_index(
        op.f("ix_positions_device_id_captured_at"),
        "positions",
        ["device_id", "captured_at"],
        unique=False,
    )

    op.create_table(
        "sightings",
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=False),
        sa.Column("bbox", sa.JSON(), nullable=False),
        sa.Column("frame", sa.JSON(), nullable=True),
        sa.Column("track_id", sa.BigInteger(), nullable=False),
        sa.Column("frames_fused", sa.Integer(), nullable=False),
        sa.Column("crop_jpeg", sa.LargeBinary(), nullable=True),
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("boot_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed", sa.Boolean(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.Column("sig", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_sightings_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sightings")),
        sa.UniqueConstraint("device_id", "event_id", name=op.f("uq_sightings_device_id_event_id")),
    )
    op.create_index(
        op.f("ix_sightings_device_id_captured_at"),
        "sightings",
        ["device_id", "captured_at"],
        unique=False,
    )

    _audit_append_only_up()


def downgrade() -> None:
    _audit_append_only_down()
    op.drop_index(op.f("ix_sightings_device_id_captured_at"), "sightings")

    op.drop_table("sightings")
    op.drop_index(op.f("ix_positions_device_id_captured_at"), "positions")

    op.drop_table("positions")
    op.drop_index(op.f("ix_face_templates_person_id"), "face_templates")
    op.drop_index(op.f("ix_face_templates_model_id_person_id"), "face_templates")

    op.drop_table("face_templates")
    op.drop_table("device_boots")
    op.drop_index(op.f("ix_credentials_device_id"), "credentials")

    op.drop_table("credentials")
    op.drop_index(op.f("ix_checkins_device_id_captured_at"), "checkins")

    op.drop_table("checkins")
    op.drop_index(op.f("ix_alarms_device_id_captured_at"), "alarms")

    op.drop_table("alarms")
    op.drop_index(op.f("ix_persons_category"), "persons")

    op.drop_table("persons")
    op.drop_index(op.f("ix_devices_site_id"), "devices")

    op.drop_table("devices")
    op.drop_table("sites")
    op.drop_index(op.f("ix_quarantine_received_at"), "quarantine")
    op.drop_index(op.f("ix_quarantine_device_id"), "quarantine")

    op.drop_table("quarantine")
    op.drop_table("audit")


# The audit log is append-only: UPDATE and DELETE are refused by trigger on both
# backends. (Anyone who can drop the trigger can still tamper; the hash chain makes
# that detectable, which is what `lantern audit verify` checks.)
_PG_FUNCTION = """
CREATE FUNCTION lantern_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql
"""


def _audit_append_only_up() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
            "FOR EACH ROW EXECUTE FUNCTION lantern_audit_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_no_{verb.lower()} BEFORE {verb} ON audit "
                f"BEGIN SELECT RAISE(ABORT, 'audit is append-only ({verb} refused)'); END"
            )


def _audit_append_only_down() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_append_only ON audit")
        op.execute("DROP FUNCTION IF EXISTS lantern_audit_append_only()")
    else:
        for verb in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_no_{verb}")
