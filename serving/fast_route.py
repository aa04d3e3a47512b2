"""One POST route answered in plain ASGI in front of a FastAPI app: FastAPI's request, routing, dependency and
response layers cost about as much CPU as the route's own work, which for `/feedback` is a few checks and a
queued insert. Everything else (other paths, other methods, lifespan) goes to the app unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error; see the server log"
Answer = Callable[[dict, Callable], Awaitable[tuple[int, dict]]]


class FastRoute:
    """ASGI: `answer(scope, receive) -> (status, JSON body)` serves POST `path`; `app` serves the rest."""

    def __init__(self, app, path: str, answer: Answer):
        self.app, self.path, self.answer = app, path, answer

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        try:
            status, payload = await self.answer(scope, receive)
        except Exception:  # noqa: BLE001 - a request must never take the server down
            log.exception("unhandled error")
            status, payload = 500, {"error": INTERNAL_ERROR}
        await send_json(send, status, payload)


async def send_json(send, status: int, payload: dict) -> None:
    """The response Starlette's JSONResponse sends: compact UTF-8 JSON with its length and type."""
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
