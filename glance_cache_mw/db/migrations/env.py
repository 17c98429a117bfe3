"""Alembic environment: always online, on the connection handed over by db.migration."""

from alembic import context

from glance_cache_mw.db import migration, models

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=models.metadata,
                  version_table=migration.VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
