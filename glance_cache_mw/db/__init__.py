"""The image database: Glance's schema and its DB API on SQLAlchemy."""
