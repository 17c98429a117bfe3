"""The cluster's fill claims: which node is reading an image from the origin right now.

Revision ID: 0003_fill_claims
Revises: 0002_listing_indexes
Create Date: 2026-12-07

A table of ours (Glance's tables stay as Glance defines them): one row per image being filled,
with the claimant's URL and a lease, so that a node that dies mid-fill is forgotten within
seconds (db/fill_claims.py).
"""
import sqlalchemy as sa
from alembic import op

from glance_cache_mw.db import models

revision = "0003_fill_claims"
down_revision = "0002_listing_indexes"
branch_labels = None
depends_on = None


def upgrade():
    # 0001 creates every table of models.metadata, this one included on a fresh database.
    if models.fills.name in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        models.fills.name,
        sa.Column("image_id", sa.String(36), primary_key=True),
        sa.Column("node_url", sa.String(255), nullable=False),
        sa.Column("started_at", models.DateTime, nullable=False),
        sa.Column("lease_expires_at", models.DateTime, nullable=False),
        mysql_engine="InnoDB", mysql_charset="utf8mb3",
    )
