"""Alembic migrations of the hub database, shipped inside the package.

Run them with ``lantern hub migrate`` (or :func:`hub.db.migrate.upgrade`); no
``alembic.ini`` is needed, the configuration is built in code.
"""
