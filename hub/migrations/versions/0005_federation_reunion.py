"""Federation and reunion: match requests and their regions, the review queue with
reviewers' decisions, reunion cases (consent, status, retention), photo dates of
templates.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 07:07:17.317155
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "match_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("origin_hub", sa.String(length=64), nullable=False),
        sa.Column("requester", sa.String(length=200), nullable=False),
        sa.Column("case_id", sa.String(length=100), nullable=False),
        sa.Column("legal_basis", sa.String(length=300), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("galleries", sa.JSON(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("probe", sa.LargeBinary(), nullable=False),
        sa.Column(
            "probe_person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "direction IN ('outgoing', 'incoming')", name=op.f("ck_match_requests_direction")
        ),
        sa.CheckConstraint(
            "purpose IN ('missing_person', 'found_person', 'criminal_investigation', 'watchlist')",
            name=op.f("ck_match_requests_purpose"),
        ),
        sa.ForeignKeyConstraint(
            ["probe_person_id"],
            ["persons.id"],
            name=op.f("fk_match_requests_probe_person_id_persons"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_requests")),
    )
    with op.batch_alter_table("match_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_match_requests_case_id"), ["case_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_match_requests_probe_person_id"), ["probe_person_id"], unique=False
        )

    op.create_table(
        "reunion_cases",
        sa.Column(
            "person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("consent_by", sa.String(length=200), nullable=True),
        sa.Column("consent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_by", sa.String(length=200), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("retention_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'reunited', 'withdrawn', 'deceased')",
            name=op.f("ck_reunion_cases_status"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["persons.id"],
            name=op.f("fk_reunion_cases_person_id_persons"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_reunion_cases")),
    )
    with op.batch_alter_table("reunion_cases", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reunion_cases_retention_until"), ["retention_until"], unique=False
        )

    op.create_table(
        "match_request_regions",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("hub_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("candidates", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'answered', 'refused', 'timed_out', 'error')",
            name=op.f("ck_match_request_regions_status"),
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
            name=op.f("fk_match_request_regions_request_id_match_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "hub_id", name=op.f("pk_match_request_regions")),
    )
    op.create_table(
        "review_candidates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("probe_ref", sa.String(length=120), nullable=False),
        sa.Column("request_id", sa.String(length=36), nullable=True),
        sa.Column(
            "probe_person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("hub_id", sa.String(length=64), nullable=False),
        sa.Column("candidate_ref", sa.String(length=120), nullable=False),
        sa.Column(
            "local_person_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("gallery", sa.String(length=16), nullable=False),
        sa.Column("model_id", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("crop_jpeg", sa.LargeBinary(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected')",
            name=op.f("ck_review_candidates_status"),
        ),
        sa.ForeignKeyConstraint(
            ["local_person_id"],
            ["persons.id"],
            name=op.f("fk_review_candidates_local_person_id_persons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["probe_person_id"],
            ["persons.id"],
            name=op.f("fk_review_candidates_probe_person_id_persons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["match_requests.id"],
            name=op.f("fk_review_candidates_request_id_match_requests"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_candidates")),
        sa.UniqueConstraint(
            "probe_ref",
            "hub_id",
            "candidate_ref",
            name=op.f("uq_review_candidates_probe_ref_hub_id_candidate_ref"),
        ),
    )
    with op.batch_alter_table("review_candidates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_review_candidates_local_person_id"), ["local_person_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_review_candidates_probe_person_id"), ["probe_person_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_review_candidates_probe_ref"), ["probe_ref"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_review_candidates_request_id"), ["request_id"], unique=False
        )

    op.create_table(
        "review_decisions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "candidate_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "decision IN ('confirm', 'reject')", name=op.f("ck_review_decisions_decision")
        ),
        sa.ForeignKeyConstraint(
            ["candidate_id"],
            ["review_candidates.id"],
            name=op.f("fk_review_decisions_candidate_id_review_candidates"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_review_decisions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
        sa.UniqueConstraint(
            "candidate_id", "user_id", name=op.f("uq_review_decisions_candidate_id_user_id")
        ),
    )
    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_review_decisions_candidate_id"), ["candidate_id"], unique=False
        )

    with op.batch_alter_table("face_templates", schema=None) as batch_op:
        batch_op.add_column(sa.Column("photo_taken_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("face_templates", schema=None) as batch_op:
        batch_op.drop_column("photo_taken_at")

    with op.batch_alter_table("review_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_decisions_candidate_id"))

    op.drop_table("review_decisions")
    with op.batch_alter_table("review_candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_candidates_request_id"))
        batch_op.drop_index(batch_op.f("ix_review_candidates_probe_ref"))
        batch_op.drop_index(batch_op.f("ix_review_candidates_probe_person_id"))
        batch_op.drop_index(batch_op.f("ix_review_candidates_local_person_id"))

    op.drop_table("review_candidates")
    op.drop_table("match_request_regions")
    with op.batch_alter_table("reunion_cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reunion_cases_retention_until"))

    op.drop_table("reunion_cases")
    with op.batch_alter_table("match_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_match_requests_probe_person_id"))
        batch_op.drop_index(batch_op.f("ix_match_requests_case_id"))

    op.drop_table("match_requests")
