"""Glance's image schema as SQLAlchemy Core tables, plus the shared-cache tables.

Names, types, defaults and indexes follow Glance's models (glance/db/sqlalchemy/models.py), so
this package can read a database Glance created. One addition: an index on
cached_images.last_accessed, because the pruner orders by it. One table of ours:
glance_cache_mw_fills (which node fills which image now, for the cluster).
"""

import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

STATUSES = ("active", "saving", "queued", "killed", "pending_delete", "deleted",
            "deactivated", "importing", "uploading")
VISIBILITIES = ("private", "public", "shared", "community")

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Microseconds on MySQL/MariaDB too (Glance's DATETIME drops them, which makes ties in sorts).
DateTime = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = sa.MetaData()


def utcnow():
    """Naive UTC now, to the microsecond (the DB API's time base)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _bookkeeping():
    return [
        sa.Column("created_at", DateTime, nullable=False, default=utcnow),
        sa.Column("updated_at", DateTime, nullable=True, default=utcnow, onupdate=utcnow),
        sa.Column("deleted_at", DateTime, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False, default=False,
                  server_default=sa.false()),
    ]


images = sa.Table(
    "images", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("disk_format", sa.String(20)),
    sa.Column("container_format", sa.String(20)),
    sa.Column("size", BigInt),
    sa.Column("virtual_size", BigInt),
    sa.Column("status", sa.String(30), nullable=False),
    sa.Column("visibility", sa.Enum(*VISIBILITIES, name="image_visibility"),
              nullable=False, server_default="shared"),
    sa.Column("checksum", sa.String(32)),
    sa.Column("os_hash_algo", sa.String(64)),
    sa.Column("os_hash_value", sa.String(128)),
    sa.Column("min_disk", sa.Integer, nullable=False, default=0),
    sa.Column("min_ram", sa.Integer, nullable=False, default=0),
    sa.Column("owner", sa.String(255)),
    sa.Column("protected", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    sa.Column("os_hidden", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    *_bookkeeping(),
    sa.Index("checksum_image_idx", "checksum"),
    sa.Index("visibility_image_idx", "visibility"),
    sa.Index("ix_images_deleted", "deleted"),
    sa.Index("owner_image_idx", "owner"),
    sa.Index("created_at_image_idx", "created_at"),
    sa.Index("updated_at_image_idx", "updated_at"),
    sa.Index("os_hidden_image_idx", "os_hidden"),
    sa.Index("os_hash_value_image_idx", "os_hash_value"),
    # Ours (revision 0002): each visibility branch of a user's listing walks one of these in
    # created_at order and stops after a page.
    sa.Index("images_visibility_created_at_idx", "visibility", "created_at"),
    sa.Index("images_owner_created_at_idx", "owner", "created_at"),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

image_properties = sa.Table(
    "image_properties", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("value", sa.Text),
    *_bookkeeping(),
    sa.Index("ix_image_properties_image_id", "image_id"),
    sa.Index("ix_image_properties_deleted", "deleted"),
    sa.Index("ix_image_properties_image_id_name", "image_id", "name", unique=True),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

image_locations = sa.Table(
    "image_locations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("meta_data", sa.Text, default="{}"),
    sa.Column("status", sa.String(30), nullable=False, server_default="active"),
    *_bookkeeping(),
    sa.Index("ix_image_locations_image_id", "image_id"),
    sa.Index("ix_image_locations_deleted", "deleted"),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

image_members = sa.Table(
    "image_members", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
    sa.Column("member", sa.String(255), nullable=False),
    sa.Column("can_share", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    sa.Column("status", sa.String(20), nullable=False, default="pending",
              server_default="pending"),
    *_bookkeeping(),
    sa.Index("ix_image_members_deleted", "deleted"),
    sa.Index("ix_image_members_image_id", "image_id"),
    sa.Index("ix_image_members_image_id_member", "image_id", "member"),
    sa.Index("ix_image_members_member_status", "member", "status"),   # ours (revision 0002)
    sa.UniqueConstraint("image_id", "member", "deleted_at",
                        name="image_members_image_id_member_deleted_at_key"),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

image_tags = sa.Table(
    "image_tags", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), sa.ForeignKey("images.id"), nullable=False),
    sa.Column("value", sa.String(255), nullable=False),
    *_bookkeeping(),
    sa.Index("ix_image_tags_image_id", "image_id"),
    sa.Index("ix_image_tags_image_id_tag_value", "image_id", "value"),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

node_reference = sa.Table(
    "node_reference", metadata,
    sa.Column("node_reference_id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("node_reference_url", sa.String(255), nullable=False, unique=True),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

cached_images = sa.Table(
    "cached_images", metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(36), nullable=False),
    sa.Column("last_accessed", DateTime, nullable=False),
    sa.Column("last_modified", DateTime, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Column("checksum", sa.String(32), nullable=True),
    sa.Column("node_reference_id", BigInt,
              sa.ForeignKey("node_reference.node_reference_id"), nullable=False),
    sa.UniqueConstraint("image_id", "node_reference_id",
                        name="ix_cached_images_image_id_node_reference_id"),
    sa.Index("ix_cached_images_node_last_accessed", "node_reference_id", "last_accessed"),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)

# Ours (revision 0003): which node is filling an image from the origin right now, cluster-wide.
# One row per image; the lease (naive UTC, the claimant's clock) makes a dead claimant's row
# worthless within seconds (db/fill_claims.py).
fills = sa.Table(
    "glance_cache_mw_fills", metadata,
    sa.Column("image_id", sa.String(36), primary_key=True),
    sa.Column("node_url", sa.String(255), nullable=False),
    sa.Column("started_at", DateTime, nullable=False),
    sa.Column("lease_expires_at", DateTime, nullable=False),
    mysql_engine="InnoDB", mysql_charset="utf8mb3",
)
