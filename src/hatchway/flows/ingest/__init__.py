"""Ingest at the speed of the cryptography (issue 10 §1): group commit of sealed messages."""

from hatchway.flows.ingest.committer import GroupCommitter

__all__ = ["GroupCommitter"]
