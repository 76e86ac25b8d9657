"""Alembic revisions; a package so that installers ship the scripts."""
