"""OAuth endpoints that let services check and revoke hatchway's tokens (issue 8 §3).

* :mod:`.successor` — the sealed successor behind the refresh reuse interval;
* :mod:`.client_auth` — RFC 6749 §2.3 / RFC 7523 client authentication;
* :mod:`.revocation` — RFC 7009 token revocation;
* :mod:`.introspection` — RFC 7662 token introspection.
"""
