"""Handler code that must behave under ``nessen serve`` as under plain asyncio."""

from __future__ import annotations

from tests.e2e.serving import ServeFactory


def test_asyncio_timeout_works_in_a_handler(nessen_serve: ServeFactory) -> None:
    served = nessen_serve("tests.e2e.apps.sample:runtime")
    with served.client() as client:
        response = client.get("/timeout")
    assert response.status_code == 200
    assert response.text == "asyncio.timeout works"


def test_a_handler_runs_inside_a_task(nessen_serve: ServeFactory) -> None:
    served = nessen_serve("tests.e2e.apps.sample:runtime")
    with served.client() as client:
        response = client.get("/current-task")
    assert response.text == "in a task"
