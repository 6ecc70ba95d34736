"""`Guard`: the ASGI layer in front of the dashboard app, applied before FastAPI sees a request.

- Every answer carries `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff` and a
  Content-Security-Policy that allows only the dashboard's own scripts, styles and API (`frame-ancestors
  'none'`: no other site can frame the page and click its buttons).
- A control request (a path with /api/control/ in it: /api/control/scale, or /runs/NAME/api/control/scale
  of a dashboard over many runs) is refused before its body is read: 409 when the dashboard shows a
  finished run (`read_only`, the reason), 403 when it has no token (control is off), 401 without
  `Authorization: Bearer <token>` or with a wrong one. So an unauthenticated client, whatever it sends,
  costs a header check.
- A request body is at most `MAX_BODY` bytes: a larger Content-Length is 413 before a byte is read,
  and a chunked body is read (at most MAX_BODY + one chunk) and refused with 413 as soon as it goes past.
  What passes is handed to the app as one message, so FastAPI never buffers more than MAX_BODY.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 64 * 1024
CONTROL_PREFIX = "/api/control/"
TOKEN_ENV = "PACED_DASHBOARD_TOKEN"
NO_TOKEN = (
    "control endpoints are off: this dashboard was started without a token. Set one in the environment "
    f"variable {TOKEN_ENV} (or dashboard.token / dashboard.token_env in the run config) and restart the dashboard"
)
WRONG_TOKEN = "missing or wrong token: send the header 'Authorization: Bearer <token>'"
TOO_LARGE = f"request body over {MAX_BODY} bytes: the dashboard's requests are small JSON objects"
# The page loads its own scripts and styles (no inline ones), talks to its own API, and has a data: icon.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
]


class ClientLeft(Exception):
    """The client disconnected before it had sent its whole body: there is nothing to answer."""


class Guard:
    """Wraps the dashboard's ASGI app; `token` None means control is off (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, read_only: str | None = None) -> None:
        self.app = app
        self.token = token
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = dict(scope["headers"])  # names are lower-case bytes; a repeated header keeps its last value
        if CONTROL_PREFIX in scope["path"]:
            refusal = self.refusal(headers.get(b"authorization", b""))
            if refusal is not None:
                await answer(send_with_headers, *refusal)
                return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await answer(send_with_headers, 413, TOO_LARGE)
            return
        try:
            body = await read_body(receive)
        except ClientLeft:
            return
        if body is None:
            await answer(send_with_headers, 413, TOO_LARGE)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: http.disconnect (a stream waits for it)

        await self.app(scope, replay, send_with_headers)

    def refusal(self, authorization: bytes) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why a control request with this Authorization header is refused, or None if it is let through."""
        if self.read_only is not None:
            return 409, f"{self.read_only}: there is nothing to control", []
        if self.token is None:
            return 403, NO_TOKEN, []
        scheme, _, given = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not secrets.compare_digest(given.strip(), self.token.encode()):
            return 401, WRONG_TOKEN, [(b"www-authenticate", b"Bearer")]
        return None


async def read_body(receive: Receive) -> bytes | None:
    """The request body, or None as soon as it is over MAX_BODY bytes (the rest is left unread)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientLeft
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON `{"detail": ...}` answer, the shape FastAPI's own errors have."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
