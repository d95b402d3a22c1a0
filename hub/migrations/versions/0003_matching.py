"""Matching and configuration push: site galleries (watchlists), sighting candidates,
face crops of templates, and the rendered configuration kept per device.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "site_galleries",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("gallery", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "gallery IN ('supervised', 'watchlist', 'missing', 'found')",
            name=op.f("ck_site_galleries_gallery"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["sites.site_id"],
            name=op.f("fk_site_galleries_site_id_sites"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("site_id", "gallery", name=op.f("pk_site_galleries")),
    )
    op.create_table(
        "sighting_candidates",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sighting_id", _BIG_ID, nullable=False),
        sa.Column("person_id", _BIG_ID, nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=True),
        sa.Column("gallery", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["persons.id"],
            name=op.f("fk_sighting_candidates_person_id_persons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sighting_id"],
            ["sightings.id"],
            name=op.f("fk_sighting_candidates_sighting_id_sightings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sighting_candidates")),
        sa.UniqueConstraint(
            "sighting_id", "person_id", name=op.f("uq_sighting_candidates_sighting_id_person_id")
        ),
    )
    op.create_index(
        op.f("ix_sighting_candidates_person_id"),
        "sighting_candidates",
        ["person_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_sighting_candidates_sighting_id"),
        "sighting_candidates",
        ["sighting_id"],
        unique=False,
    )
    with op.batch_alter_table("face_templates") as batch:
        batch.add_column(sa.Column("crop_jpeg", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("desired_config", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("desired_config")
    with op.batch_alter_table("face_templates") as batch:
        batch.drop_column("crop_jpeg")
    op.drop_index(op.f("ix_sighting_candidates_sighting_id"), table_name="sighting_candidates")
    op.drop_index(op.f("ix_sighting_candidates_person_id"), table_name="sighting_candidates")
    op.drop_table("sighting_candidates")
    op.drop_table("site_galleries")
