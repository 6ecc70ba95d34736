"""Keeping secrets out of what PACED prints and logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query parameters that carry a credential (redis-py reads `password` from the query string too).
_SECRET_PARAMS = ("pass", "token", "secret", "key", "auth")


def mask_url(url: str) -> str:
    """Hide the credentials in a URL: the password of its user info (everything between `user:` and the
    last `@` of the authority, so a password holding `@` is hidden whole) and the value of any query
    parameter named like a credential (`?password=...`). redis://user:secret@host -> redis://user:***@host."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, "***" if any(s in k.lower() for s in _SECRET_PARAMS) else v) for k, v in pairs]
        if masked != pairs:
            query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
