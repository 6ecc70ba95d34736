"""Keeping secrets out of what PACED prints and logs."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")


def mask_url(url: str) -> str:
    """Hide a password in a URL: redis://user:secret@host -> redis://user:***@host."""
    return _URL_PASSWORD.sub(r"\1***@", url)
