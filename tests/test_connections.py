"""Connection deadlines on a real uvicorn server on 127.0.0.1: a silent connection is closed, a slow body is a 408."""
import socket
import threading
import time

import pytest
import uvicorn

from serving.connections import deadline_protocol
from serving.endpoint import EndpointSettings, LoadedModel, create_app
from serving.local_server import free_port


@pytest.fixture()
def endpoint(tmp_path):
    settings = EndpointSettings(body_timeout_s=1.0, header_timeout_s=1.0, feedback_db=f"sqlite:///{tmp_path / 'fb.db'}")
    app = create_app(LoadedModel(pyfunc=None, name="m", version="1"), settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http=deadline_protocol(settings.header_timeout_s)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    chunks = []
    while True:
        data = sock.recv(4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_a_connection_that_sends_no_request_is_closed(endpoint):
    with socket.create_connection(("127.0.0.1", endpoint), timeout=5) as sock:
        start = time.time()
        assert _closed_within(sock, 5) == b""
        assert time.time() - start < 4
    with socket.create_connection(("127.0.0.1", endpoint), timeout=5) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        assert _closed_within(sock, 5) == b""


def test_a_body_that_stalls_is_a_408(endpoint):
    with socket.create_connection(("127.0.0.1", endpoint), timeout=5) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = _closed_within(sock, 5)
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer
