"""Keeping secrets out of what PACED prints and logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_CREDENTIAL_WORDS = ("tok", "pass", "secret", "key", "auth", "cred")


def names_a_credential(name: str) -> bool:
    """Whether a key or parameter name reads like one that holds a credential (`password`, `api_key`,
    `token`, ...), case-insensitively."""
    lowered = name.lower()
    return any(word in lowered for word in _CREDENTIAL_WORDS)


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
        masked = [(k, "***" if names_a_credential(k) else v) for k, v in pairs]
        if masked != pairs:
            query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
