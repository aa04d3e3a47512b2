"""Property-based fuzzing of the local endpoint (127.0.0.1 only, bounded in count): whatever a client sends to
/invocations or /feedback, the answer is never a 5xx, and no response or server log line holds a traceback.

FUZZ_EXAMPLES sets the examples per property (default 120); FUZZ_REPORT=path writes the counts as JSON.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving_model import build_served_model, running_endpoint

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
COUNTS: Counter = Counter()

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=24)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
columns = st.sampled_from(["text", "title", "body", "summary", ""])
records = st.lists(st.dictionaries(columns, values | st.text(max_size=40), max_size=3), max_size=5)
params = st.dictionaries(
    st.sampled_from(["label_descriptions", "threshold", "other"]),
    values | st.dictionaries(st.text(max_size=6), st.text(max_size=12) | values, max_size=4),
    max_size=2,
)
invocations = st.one_of(
    st.builds(lambda r, p: {"dataframe_records": r, "params": p}, records, params),
    st.builds(
        lambda c, d: {"dataframe_split": {"columns": c, "data": d}},
        st.lists(columns, max_size=3),
        st.lists(st.lists(values, max_size=3), max_size=4),
    ),
    st.builds(lambda v: {"inputs": {"text": v}}, values),
    st.builds(lambda v: {"instances": v}, values),
    st.builds(lambda v: {"input_data": v}, values | st.lists(st.text(max_size=30), max_size=4)),
    st.dictionaries(st.sampled_from(["dataframe_records", "inputs", "input_data", "params", "x"]), values, max_size=3),
)
feedback = st.fixed_dictionaries(
    {},
    optional={
        "prediction_id": st.text(max_size=220) | values,
        "score": st.integers(-2, 7) | values,
        "text": st.text(max_size=30) | values,
        "predicted_labels": st.lists(st.text(max_size=10), max_size=3) | values,
        "corrected_labels": st.lists(st.text(max_size=10), max_size=3) | values,
        "scores": st.dictionaries(st.text(max_size=10), st.floats(allow_nan=True) | values, max_size=3) | values,
        "source": st.text(max_size=120) | values,
        "extra": values,
    },
)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_encoder):
    served = build_served_model(tmp_path_factory.mktemp("served"), tiny_encoder)
    with running_endpoint(served, tmp_path_factory.mktemp("fuzz"), "--max-body-bytes", "65536") as endpoint:
        yield endpoint
    log = endpoint["log"].read_text()
    COUNTS["log_tracebacks"] = log.count("Traceback")
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "w") as out:
            json.dump(dict(COUNTS), out, indent=2)
    assert COUNTS["log_tracebacks"] == 0, log[-3000:]


def send(server, route: str, body: bytes) -> None:
    response = requests.post(
        f"{server['url']}{route}", data=body, timeout=60, headers={"Content-Type": "application/json"}
    )
    COUNTS["requests"] += 1
    COUNTS[f"status_{response.status_code}"] += 1
    COUNTS["5xx"] += response.status_code >= 500
    COUNTS["response_tracebacks"] += "Traceback" in response.text
    assert response.status_code < 500 and "Traceback" not in response.text, (route, body[:300], response.text)
    assert response.status_code in (200, 201) or "error" in response.json()


@FUZZ
@given(payload=invocations)
def test_invocations_never_fail_on_the_server(server, payload):
    send(server, "/invocations", json.dumps(payload, allow_nan=True).encode())


@FUZZ
@given(payload=feedback)
def test_feedback_never_fails_on_the_server(server, payload):
    send(server, "/feedback", json.dumps(payload, allow_nan=True).encode())


@FUZZ
@given(
    route=st.sampled_from(["/invocations", "/feedback"]),
    body=st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)
def test_any_bytes_are_answered_without_a_server_error(server, route, body):
    send(server, route, body)
