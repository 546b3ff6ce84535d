from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from nessen.app.lifecycle import CheckResult, Lifecycle, Readiness, State

ALLOWED = {
    (State.STARTING, State.READY),
    (State.STARTING, State.DRAINING),
    (State.STARTING, State.STOPPING),
    (State.READY, State.DEGRADED),
    (State.READY, State.DRAINING),
    (State.READY, State.STOPPING),
    (State.DEGRADED, State.READY),
    (State.DEGRADED, State.DRAINING),
    (State.DEGRADED, State.STOPPING),
    (State.DRAINING, State.STOPPING),
}
"""The architecture's STARTING -> READY <-> DEGRADED -> DRAINING -> STOPPING, plus the
shortcuts a failed startup or a second signal take."""

PATH_TO = {
    State.STARTING: [],
    State.READY: [State.READY],
    State.DEGRADED: [State.READY, State.DEGRADED],
    State.DRAINING: [State.DRAINING],
    State.STOPPING: [State.STOPPING],
}


def lifecycle_in(state: State) -> Lifecycle:
    lifecycle = Lifecycle()
    for step in PATH_TO[state]:
        assert lifecycle.transition(step)
    assert lifecycle.state == state
    return lifecycle


def test_starts_in_starting() -> None:
    lifecycle = Lifecycle()
    assert lifecycle.state == State.STARTING
    assert lifecycle.reason == ""
    assert list(lifecycle.history) == []
    assert lifecycle.live is True


def test_states_are_strings() -> None:
    assert [str(s) for s in State] == ["STARTING", "READY", "DEGRADED", "DRAINING", "STOPPING"]


@pytest.mark.parametrize("old", list(State))
@pytest.mark.parametrize("new", list(State))
def test_transition_table(old: State, new: State) -> None:
    lifecycle = lifecycle_in(old)
    changed = lifecycle.transition(new, "why")
    if (old, new) in ALLOWED:
        assert changed is True
        assert lifecycle.state == new
        assert lifecycle.reason == "why"
        assert lifecycle.history[-1][1:] == (old, new, "why")
    else:
        assert changed is False
        assert lifecycle.state == old


def test_refused_transition_leaves_history_and_listeners_alone() -> None:
    lifecycle = lifecycle_in(State.STOPPING)
    calls: list[tuple[State, State]] = []
    lifecycle.on_change(lambda old, new: calls.append((old, new)))
    before = list(lifecycle.history)
    assert lifecycle.transition(State.READY) is False
    assert list(lifecycle.history) == before
    assert calls == []


def test_listeners_get_old_and_new_in_registration_order() -> None:
    lifecycle = Lifecycle()
    calls: list[tuple[str, State, State]] = []
    lifecycle.on_change(lambda old, new: calls.append(("first", old, new)))
    lifecycle.on_change(lambda old, new: calls.append(("second", old, new)))
    lifecycle.transition(State.READY)
    lifecycle.transition(State.DRAINING, "sigterm")
    assert calls == [
        ("first", State.STARTING, State.READY),
        ("second", State.STARTING, State.READY),
        ("first", State.READY, State.DRAINING),
        ("second", State.READY, State.DRAINING),
    ]


def test_transitions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    lifecycle = lifecycle_in(State.READY)
    with caplog.at_level(logging.INFO, logger="nessen.lifecycle"):
        lifecycle.transition(State.DEGRADED, "redis down")
    (record,) = caplog.records
    assert record.getMessage() == "state READY -> DEGRADED (redis down)"
    assert record.__dict__["state"] == "DEGRADED"
    assert record.__dict__["previous_state"] == "READY"


def test_history_keeps_the_last_32_transitions() -> None:
    lifecycle = lifecycle_in(State.READY)
    for i in range(40):
        target = State.DEGRADED if lifecycle.state == State.READY else State.READY
        assert lifecycle.transition(target, f"flip {i}")
    assert len(lifecycle.history) == 32
    assert lifecycle.history[-1][3] == "flip 39"
    assert lifecycle.history[0][3] == "flip 8"


def test_live_until_stopping() -> None:
    for state in (State.STARTING, State.READY, State.DEGRADED, State.DRAINING):
        assert lifecycle_in(state).live is True
    assert lifecycle_in(State.STOPPING).live is False


@pytest.mark.parametrize(
    ("state", "when_degraded", "expected"),
    [
        (State.STARTING, True, False),
        (State.READY, True, True),
        (State.READY, False, True),
        (State.DEGRADED, True, True),
        (State.DEGRADED, False, False),
        (State.DRAINING, True, False),
        (State.STOPPING, True, False),
    ],
)
def test_accepting(state: State, when_degraded: bool, expected: bool) -> None:
    assert lifecycle_in(state).accepting(when_degraded) is expected


def test_uptime_grows() -> None:
    lifecycle = Lifecycle()
    lifecycle.started -= 5.0
    assert lifecycle.uptime >= 5.0


# --- readiness -----------------------------------------------------------------------------


async def test_no_checks_is_ready() -> None:
    readiness = Readiness()
    assert len(readiness) == 0
    assert await readiness.run() == {}


async def test_checks_run_concurrently() -> None:
    # Each check waits for the other to have started: run one after the other, both would
    # time out.
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def check_a() -> None:
        a_started.set()
        await b_started.wait()

    async def check_b() -> None:
        b_started.set()
        await a_started.wait()

    readiness = Readiness()
    readiness.add("a", check_a, timeout=5.0)
    readiness.add("b", check_b, timeout=5.0)
    results = await asyncio.wait_for(readiness.run(), 10.0)
    assert results["a"].ok is True, results
    assert results["b"].ok is True, results
    assert list(results) == ["a", "b"]


async def test_a_check_that_overruns_its_timeout_fails() -> None:
    never = asyncio.Event()

    async def hang() -> None:
        await never.wait()

    async def fine() -> bool:
        return True

    readiness = Readiness()
    readiness.add("slow", hang, timeout=0.05)
    readiness.add("fast", fine)
    results = await readiness.run()
    assert results["slow"].ok is False
    assert results["slow"].error == "timed out after 0.05 s"
    assert results["fast"] == CheckResult(True, results["fast"].duration_ms, None)


async def test_a_check_that_raises_fails_with_the_exception() -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("db at 10.0.0.5:5432 refused")

    readiness = Readiness()
    readiness.add("db", broken)
    result = (await readiness.run())["db"]
    assert result.ok is False
    assert result.error == "ConnectionRefusedError: db at 10.0.0.5:5432 refused"


async def test_a_check_returning_false_fails_and_other_values_pass() -> None:
    async def false() -> bool:
        return False

    async def none() -> None:
        return None

    async def zero() -> int:
        return 0

    readiness = Readiness()
    readiness.add("false", false)
    readiness.add("none", none)
    readiness.add("zero", zero)
    results = await readiness.run()
    assert results["false"].ok is False
    assert results["false"].error == "returned False"
    assert results["none"].ok is True
    assert results["zero"].ok is True
    assert results["none"].error is None
    assert results["none"].duration_ms >= 0.0


async def test_results_are_cached_within_cache_seconds() -> None:
    calls: list[int] = []

    async def counted() -> None:
        calls.append(1)

    readiness = Readiness(cache_seconds=60.0)
    readiness.add("c", counted)
    first = await readiness.run()
    second = await readiness.run()
    assert len(calls) == 1
    assert second is first


async def test_without_cache_every_run_checks_again() -> None:
    calls: list[int] = []

    async def counted() -> None:
        calls.append(1)

    readiness = Readiness(cache_seconds=0.0)
    readiness.add("c", counted)
    await readiness.run()
    await readiness.run()
    assert len(calls) == 2


async def test_concurrent_callers_share_one_run() -> None:
    calls: list[int] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def counted() -> None:
        calls.append(1)
        entered.set()
        await release.wait()

    readiness = Readiness(cache_seconds=0.0)
    readiness.add("c", counted)
    runs = [asyncio.ensure_future(readiness.run()) for _ in range(3)]
    await entered.wait()  # the check is running: every caller has joined the shared run
    release.set()
    results = await asyncio.gather(*runs)
    assert len(calls) == 1
    assert all(r["c"].ok for r in results)


async def test_adding_a_check_invalidates_the_cache() -> None:
    async def fine() -> None:
        return None

    async def failing() -> bool:
        return False

    readiness = Readiness(cache_seconds=60.0)
    readiness.add("a", fine)
    assert set(await readiness.run()) == {"a"}
    readiness.add("b", failing)
    results = await readiness.run()
    assert set(results) == {"a", "b"}
    assert results["b"].ok is False


def test_duplicate_name_is_a_value_error() -> None:
    async def check() -> Any:
        return None

    readiness = Readiness()
    readiness.add("db", check)
    with pytest.raises(ValueError, match="'db' already registered"):
        readiness.add("db", check)
    assert len(readiness) == 1


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    async def check() -> Any:
        return None

    with pytest.raises(ValueError, match="timeout must be > 0"):
        Readiness().add("x", check, timeout=timeout)
