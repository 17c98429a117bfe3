"""Indexes and planner statistics for users' image listings.

Revision ID: 0002_listing_indexes
Revises: 0001_initial
Create Date: 2026-11-23

* images(visibility, created_at), images(owner, created_at), image_members(member, status):
  each visibility branch of a user's listing walks one of them and stops after a page.
* PostgreSQL: extended statistics on image_properties(name, value); without them the planner
  multiplies the two selectivities, underestimates a property filter and scans the table.
* SQLite: nothing ever runs ANALYZE on these databases, and without sqlite_stat1 SQLite takes
  the boolean ``deleted``/``os_hidden`` indexes for selective ones (a user's first page read
  every live image: 17 s at 100,000 images). We seed the statistics of those few
  low-cardinality indexes; a later ANALYZE replaces them with measured ones.
See docs/benchmarks.md ("Database") for the measurements behind each of these.
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_listing_indexes"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

# (table, index, "rows rows-per-value"): these indexes split their table in halves/quarters.
SQLITE_STATS = (
    ("images", "ix_images_deleted", "100000 50000"),
    ("images", "os_hidden_image_idx", "100000 50000"),
    ("images", "visibility_image_idx", "100000 25000"),
    ("image_properties", "ix_image_properties_deleted", "500000 250000"),
    ("image_locations", "ix_image_locations_deleted", "100000 50000"),
    ("image_members", "ix_image_members_deleted", "4000 2000"),
)


def _create_index(name, table, columns, existing):
    if name not in existing.get(table, ()):
        op.create_index(name, table, columns)


def upgrade():
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = {table: {index["name"] for index in inspector.get_indexes(table)}
                for table in ("images", "image_members")}
    _create_index("images_visibility_created_at_idx", "images", ["visibility", "created_at"],
                  existing)
    _create_index("images_owner_created_at_idx", "images", ["owner", "created_at"], existing)
    _create_index("ix_image_members_member_status", "image_members", ["member", "status"],
                  existing)
    if bind.dialect.name == "postgresql":
        op.execute("CREATE STATISTICS IF NOT EXISTS image_properties_name_value "
                   "(mcv, dependencies) ON name, value FROM image_properties")
        op.execute("ANALYZE image_properties")
    elif bind.dialect.name == "sqlite":
        op.execute("ANALYZE sqlite_schema")   # creates sqlite_stat1 without scanning tables
        for table, index, stat in SQLITE_STATS:
            known = bind.exec_driver_sql(
                "SELECT 1 FROM sqlite_stat1 WHERE idx = ?", (index,)).first()
            if known is None:
                bind.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)",
                                     (table, index, stat))
        op.execute("ANALYZE sqlite_schema")   # makes this connection's planner reload them
