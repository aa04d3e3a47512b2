"""The endpoint's access log: one line per request at info level (`serving.access`), with the client, the
request line, the status and the time to answer. `--log-level WARNING` turns it off."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("serving.access")


class AccessLog:
    """ASGI middleware: logs each HTTP request once it is answered (or failed: then as a 500)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def answer(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s "%s %s" %d %.1f ms',
                client[0],
                scope["method"],
                scope["path"],
                status,
                1000 * (time.perf_counter() - started),
            )
