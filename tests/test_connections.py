"""Connection deadlines and load shedding on a real uvicorn server on 127.0.0.1: a silent connection is closed, a
slow body is a 408, a prediction beyond the admitted number a 503 at once."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
import uvicorn

from serving.config import HTTP_STACKS, SERVE_HTTP
from serving.connections import server_options
from serving.endpoint import EndpointSettings, LoadedModel, create_app
from serving.local_server import free_port


@contextmanager
def running(model: LoadedModel, settings: EndpointSettings, http: str = SERVE_HTTP):
    """The endpoint app on a uvicorn server (HTTP stack `http`) in a thread, on a free 127.0.0.1 port; yields the
    port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(model, settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            **server_options(http, settings.header_timeout_s),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(params=list(HTTP_STACKS))
def endpoint(request, tmp_path):
    """The endpoint on each HTTP stack the CLI offers: the deadlines must hold on every one."""
    settings = EndpointSettings(body_timeout_s=1.0, header_timeout_s=1.0, feedback_db=f"sqlite:///{tmp_path / 'fb.db'}")
    with running(LoadedModel(pyfunc=None, name="m", version="1"), settings, request.param) as port:
        yield port


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    sock.settimeout(seconds)
    chunks = []
    while True:
        data = sock.recv(4096)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def test_a_connection_that_sends_no_request_is_closed(endpoint):
    with socket.create_connection(("127.0.0.1", endpoint), timeout=15) as sock:
        start = time.time()
        assert _closed_within(sock, 15) == b""
        assert time.time() - start < 10
    with socket.create_connection(("127.0.0.1", endpoint), timeout=15) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        assert _closed_within(sock, 15) == b""


@pytest.mark.parametrize("route", ["/invocations", "/feedback"])
def test_a_body_that_stalls_is_a_408(endpoint, route):
    with socket.create_connection(("127.0.0.1", endpoint), timeout=15) as sock:
        sock.sendall(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{".encode())
        sock.settimeout(15)
        answer = b""
        while b"did not arrive" not in answer and (data := sock.recv(4096)):  # the answer, not keep-alive's close
            answer += data
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer


class SleepyPyfunc:
    """Test double of a pyfunc: answers after `seconds`, so predictions overlap."""

    class metadata:  # noqa: N801 - mimics PyFuncModel.metadata
        @staticmethod
        def get_input_schema():
            return None

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, frame, params=None):
        import pandas as pd

        time.sleep(self.seconds)
        return pd.DataFrame(
            {"labels": [["a"]] * len(frame), "top_label": ["a"] * len(frame), "scores": [{"a": 0.9}] * len(frame)}
        )


def test_predictions_beyond_max_pending_are_refused_at_once(tmp_path):
    """With one prediction admitted at a time, a second request arriving meanwhile gets 503 + Retry-After
    immediately instead of queueing; the first is answered."""
    settings = EndpointSettings(max_pending=1, feedback_db=f"sqlite:///{tmp_path / 'fb.db'}")

    def post(port: int, delay: float):
        time.sleep(delay)
        return requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": {"text": ["x"]}}, timeout=30)

    with running(LoadedModel(SleepyPyfunc(1.5), "m", "1"), settings) as port, ThreadPoolExecutor(2) as pool:
        first, second = pool.map(post, [port, port], [0.0, 0.5])
    assert first.status_code == 200, first.text
    assert second.status_code == 503 and second.headers["Retry-After"] == "1" and "busy" in second.json()["error"]
    assert second.elapsed.total_seconds() < first.elapsed.total_seconds()


@pytest.mark.parametrize("http", list(HTTP_STACKS))
def test_the_feedback_route_in_front_of_fastapi_answers_as_fastapi_did(tmp_path, http):
    """POST /feedback is answered in plain ASGI: the same statuses and bodies as every other route (auth, size,
    JSON, the store's checks), on both HTTP stacks; other methods and /feedback/ still reach FastAPI."""
    settings = EndpointSettings(api_key="k", max_body_bytes=400, feedback_db=f"sqlite:///{tmp_path / 'fb.db'}")
    model = LoadedModel(pyfunc=None, name="m", version="1", labels=("vat", "audit"))
    good = {"prediction_id": "p1", "score": 4, "text": "t", "predicted_labels": ["vat"]}
    with running(model, settings, http) as port:
        url, key = f"http://127.0.0.1:{port}/feedback", {"X-API-Key": "k"}
        stored = requests.post(url, json=good, headers=key, timeout=10)
        again = requests.post(url, json=good, headers=key, timeout=10)
        unknown = requests.post(
            url, json={**good, "prediction_id": "p2", "corrected_labels": ["x"]}, headers=key, timeout=10
        )
        slash = requests.post(url + "/", json={**good, "prediction_id": "p3"}, headers=key, timeout=10)
        answers = [
            requests.post(url, json=good, timeout=10),
            requests.post(url, data=b"{not json", headers=key, timeout=10),
            requests.post(url, json={**good, "text": "x" * 500}, headers=key, timeout=10),
            requests.post(url, json={**good, "score": 9}, headers=key, timeout=10),
            requests.get(url, headers=key, timeout=10),
        ]
    assert stored.status_code == 201 and stored.json() == {"stored": True, "prediction_id": "p1"}
    assert stored.headers["content-type"] == "application/json"
    assert again.status_code == 422 and again.json() == {"error": "prediction_id already has feedback in the store"}
    assert unknown.status_code == 422 and "['x']" in unknown.json()["error"]
    assert slash.status_code == 201 and slash.json()["prediction_id"] == "p3"
    assert [a.status_code for a in answers] == [401, 400, 413, 400, 405]
    assert all("error" in a.json() or "detail" in a.json() for a in answers)
