"""Supervision: zones, rules and their evaluation state; alerts and incidents with
their timeline.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 07:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)
_SEVERITY = "severity IN ('critical', 'serious', 'info')"


def upgrade() -> None:
    op.create_table(
        "zones",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("geometry", sa.JSON(), nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=True),
        sa.Column("buffer_m", sa.Float(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "kind IN ('residence', 'county', 'victim', 'school', 'perimeter', 'other')",
            name=op.f("ck_zones_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.site_id"], name=op.f("fk_zones_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zones")),
    )
    op.create_index(op.f("ix_zones_site_id"), "zones", ["site_id"], unique=False)

    op.create_table(
        "rules",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("person_id", _BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("valid_from", _TS, nullable=False),
        sa.Column("valid_until", _TS, nullable=True),
        sa.Column("enter_margin_m", sa.Float(), nullable=False),
        sa.Column("exit_margin_m", sa.Float(), nullable=False),
        sa.Column("confirm_n", sa.Integer(), nullable=False),
        sa.Column("confirm_m", sa.Integer(), nullable=False),
        sa.Column("dwell_s", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "kind IN ('inclusion', 'exclusion', 'curfew', 'proximity', 'silence')",
            name=op.f("ck_rules_kind"),
        ),
        sa.CheckConstraint(_SEVERITY, name=op.f("ck_rules_severity")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_rules_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_rules_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
    )
    op.create_index(op.f("ix_rules_device_id"), "rules", ["device_id"], unique=False)
    op.create_index(op.f("ix_rules_person_id"), "rules", ["person_id"], unique=False)

    op.create_table(
        "rule_states",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["rules.id"],
            name=op.f("fk_rule_states_rule_id_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rule_id", name=op.f("pk_rule_states")),
    )

    op.create_table(
        "incidents",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("person_id", _BIG_ID, nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("last_alert_at", _TS, nullable=False),
        sa.Column("sla_due_at", _TS, nullable=False),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.Column("assigned_to", _BIG_ID, nullable=True),
        sa.Column("suspended_until", _TS, nullable=True),
        sa.Column("suspend_reason", sa.Text(), nullable=True),
        sa.Column("escalated_at", _TS, nullable=True),
        sa.Column("cleared_at", _TS, nullable=True),
        sa.Column("cleared_by", sa.String(length=200), nullable=True),
        sa.Column("clear_note", sa.Text(), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'escalated', 'suspended', 'cleared')",
            name=op.f("ck_incidents_status"),
        ),
        sa.CheckConstraint(_SEVERITY, name=op.f("ck_incidents_severity")),
        sa.ForeignKeyConstraint(
            ["assigned_to"],
            ["users.id"],
            name=op.f("fk_incidents_assigned_to_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["persons.id"],
            name=op.f("fk_incidents_person_id_persons"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
    )
    op.create_index(op.f("ix_incidents_device_id"), "incidents", ["device_id"], unique=False)
    op.create_index(op.f("ix_incidents_person_id"), "incidents", ["person_id"], unique=False)
    op.create_index(
        op.f("ix_incidents_status_sla_due_at"), "incidents", ["status", "sla_due_at"], unique=False
    )

    op.create_table(
        "alerts",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("person_id", _BIG_ID, nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=True),
        sa.Column("raised_at", _TS, nullable=False),
        sa.Column("cleared_at", _TS, nullable=True),
        sa.Column("retrospective", sa.Boolean(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("incident_id", _BIG_ID, nullable=True),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.CheckConstraint(_SEVERITY, name=op.f("ck_alerts_severity")),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_alerts_incident_id_incidents"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["persons.id"],
            name=op.f("fk_alerts_person_id_persons"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("key", name=op.f("uq_alerts_key")),
    )
    op.create_index(op.f("ix_alerts_device_id"), "alerts", ["device_id"], unique=False)
    op.create_index(op.f("ix_alerts_incident_id"), "alerts", ["incident_id"], unique=False)
    op.create_index(
        op.f("ix_alerts_person_id_raised_at"), "alerts", ["person_id", "raised_at"], unique=False
    )
    op.create_index(op.f("ix_alerts_type"), "alerts", ["type"], unique=False)

    op.create_table(
        "incident_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("incident_id", _BIG_ID, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_events_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
    )
    op.create_index(
        op.f("ix_incident_events_incident_id"), "incident_events", ["incident_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_incident_events_incident_id"), table_name="incident_events")
    op.drop_table("incident_events")
    for index in (
        "ix_alerts_type",
        "ix_alerts_person_id_raised_at",
        "ix_alerts_incident_id",
        "ix_alerts_device_id",
    ):
        op.drop_index(op.f(index), table_name="alerts")
    op.drop_table("alerts")
    for index in (
        "ix_incidents_status_sla_due_at",
        "ix_incidents_person_id",
        "ix_incidents_device_id",
    ):
        op.drop_index(op.f(index), table_name="incidents")
    op.drop_table("incidents")
    op.drop_table("rule_states")
    op.drop_index(op.f("ix_rules_person_id"), table_name="rules")
    op.drop_index(op.f("ix_rules_device_id"), table_name="rules")
    op.drop_table("rules")
    op.drop_index(op.f("ix_zones_site_id"), table_name="zones")
    op.drop_table("zones")
