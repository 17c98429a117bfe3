"""Initial schema: Glance's image tables plus node_reference and cached_images.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23

Tables that already exist (a database Glance created) are left alone. This first revision creates
the schema from models.metadata as it stood at this revision; every later change to models.py
must come as a new revision with explicit operations (tests compare the migrated schema with
models.py).
"""
from alembic import op

from glance_cache_mw.db import models

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    models.metadata.create_all(op.get_bind(), checkfirst=True)
