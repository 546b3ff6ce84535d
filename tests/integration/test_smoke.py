from __future__ import annotations

from tests.conftest import ServeFactory
from tests.rawhttp import RawClient, get


def test_get_answers_200_with_date_and_server(serve: ServeFactory) -> None:
    server = serve()
    with RawClient(server.address) as client:
        response = client.request(get("/"))
    assert response.status == 200
    assert response.body == b"hello"
    assert response.header("server") == "nessen"
    assert response.header("date") is not None
    assert response.header("date").endswith(" GMT")
