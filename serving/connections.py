"""HTTP connections that cannot be held open for nothing: uvicorn's h11 protocol with a deadline for the head.

uvicorn times out a connection only while it idles between requests (keep-alive); one that connects and then
sends nothing, or a request head byte by byte, is kept forever. Here a connection that has not delivered a
complete request head `header_timeout_s` after it opened is closed. The body has its own deadline in the app.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def deadline_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """An H11Protocol class whose connections must send a request head within `header_timeout_s`."""

    class HeadDeadlineProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.loop.call_later(header_timeout_s, self._close_if_silent)

        def _close_if_silent(self) -> None:
            if self.cycle is None and not self.transport.is_closing():  # no request head yet
                log.warning(
                    "closed a connection from %s that sent no request within %g s",
                    self.client[0] if self.client else "a client",
                    header_timeout_s,
                )
                self.transport.close()

    return HeadDeadlineProtocol
