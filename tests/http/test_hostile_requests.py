"""A `saga serve` service answers hostile requests with a 4xx, never a 500 (issue #15).

A 500 would make the orchestrator retry a malformed call as a transient failure.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from saga_cli.limits import MAX_REQUEST_BYTES
from saga_cli.services.http_app import KEY_HEADER, create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    db = tmp_path_factory.mktemp("service") / "flight.db"
    return TestClient(create_app("flight", db), raise_server_exceptions=False)


HEADERS = {KEY_HEADER: "k1", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/restock", b'{"capacity": NaN}'),
        ("/restock", b'{"capacity": Infinity}'),
        ("/restock", b'{"capacity": 1e999}'),
        ("/reserve", b'{"saga_id": "\\ud800", "resource": "FL100", "customer": "x"}'),
        ("/reserve", b'{"saga_id": "s", "resource": "FL100", "customer": "\\udfff"}'),
        ("/cancel", b'{"saga_id": "\\ud83d"}'),
        ("/reserve", b"[" * 5000 + b"]" * 5000),
        ("/reserve", b"\xff\xfe not json"),
    ],
)
def test_malformed_bodies_are_refused_with_a_4xx_and_a_json_answer(
    client: TestClient, path: str, body: bytes
) -> None:
    response = client.post(path, content=body, headers=HEADERS)

    # 422 for a value the model refuses; FastAPI's own 400 for a body it cannot parse.
    assert response.status_code in (400, 422), response.text
    assert response.json()["detail"]


def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed(client: TestClient) -> None:
    big = b'{"capacity": 1' + b"0" * MAX_REQUEST_BYTES + b"}"

    declared = client.post("/restock", content=big, headers=HEADERS)

    def chunks() -> object:
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    streamed = client.post("/restock", content=chunks(), headers=HEADERS)  # chunked: no length

    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert client.post("/restock", json={"capacity": 8}).status_code == 200
