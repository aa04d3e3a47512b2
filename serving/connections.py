"""HTTP connections that cannot be held open for nothing: uvicorn's HTTP protocols with a deadline for the head.

uvicorn times out a connection only while it idles between requests (keep-alive); one that connects and then
sends nothing, or a request head byte by byte, is kept forever. Here a connection that has not delivered a
complete request head `header_timeout_s` after it opened is closed. The body has its own deadline in the app.
Both of uvicorn's HTTP/1.1 protocols get it: the C parser (httptools, served on uvloop) and pure-Python h11.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.config import HTTP_STACKS

log = logging.getLogger(__name__)

PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": H11Protocol, "httptools": HttpToolsProtocol}


def deadline_protocol(header_timeout_s: float, protocol: str) -> type[asyncio.Protocol]:
    """uvicorn's `protocol` class (h11 or httptools) whose connections must send a request head within
    `header_timeout_s`. Both set `cycle` once a request head is complete, so one subclass body serves both."""

    class HeadDeadlineProtocol(PROTOCOLS[protocol]):  # type: ignore[misc, valid-type]
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


def server_options(http: str, header_timeout_s: float) -> dict:
    """uvicorn.run / uvicorn.Config keywords for an HTTP stack named in `HTTP_STACKS`: its protocol (with the
    head deadline) and its event loop."""
    protocol, loop = HTTP_STACKS[http]
    return {"http": deadline_protocol(header_timeout_s, protocol), "loop": loop}
