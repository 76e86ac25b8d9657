"""Access tokens revoked before they expire (RFC 7009 §2.1, revision 0004).

hatchway's access tokens are self-contained JWTs (RFC 9068), so revoking one
means remembering its ``jti`` until its ``exp``; after that the signature check
refuses it anyway and the row is swept. Refresh tokens need no such list: they
are revoked through their family (:mod:`hatchway.store.tokens`).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from hatchway.store._base import RepositoryBase, check_id
from hatchway.store.schema import revoked_access_tokens

#: Sweep expired rows at most this often (seconds) per process.
_PURGE_INTERVAL = 60.0


class RevocationRepository(RepositoryBase):
    """Revoked access token ids, kept until the token would have expired."""

    _next_revocation_purge: float = float("-inf")

    def revoke_access_token(self, jti: str, *, exp: float, now: float) -> bool:
        """Remember ``jti`` as revoked; False if it already was, or has expired."""
        check_id("jti", jti)
        if exp <= now:
            return False
        if now >= self._next_revocation_purge:
            self._next_revocation_purge = now + _PURGE_INTERVAL
            self.purge_revoked_access_tokens(now=now)
        try:
            with self._write() as conn:
                conn.execute(revoked_access_tokens.insert().values(jti=jti, exp=exp))
        except IntegrityError:
            return False
        return True

    def access_token_revoked(self, jti: str) -> bool:
        with self._read() as conn:
            found = conn.scalar(
                select(revoked_access_tokens.c.jti).where(revoked_access_tokens.c.jti == jti)
            )
        return found is not None

    def purge_revoked_access_tokens(self, *, now: float) -> int:
        """Forget revocations of tokens past their ``exp``; returns how many."""
        with self._write() as conn:
            gone = conn.execute(
                delete(revoked_access_tokens).where(revoked_access_tokens.c.exp < now)
            ).rowcount
        return int(gone)
