"""Alembic migration scripts for the hatchway store (run by ``Store.open``)."""
