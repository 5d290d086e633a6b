"""Emitter: subscribers in order, a failing subscriber logged and skipped, unsubscribe."""

from __future__ import annotations

import logging

import pytest

from aiop2p._aio.emitter import Emitter


def test_subscribers_run_in_order_and_a_failure_reaches_only_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitter: Emitter[int] = Emitter("numbers")
    seen: list[tuple[str, int]] = []

    def fail(event: int) -> None:
        raise RuntimeError("boom")

    emitter.subscribe(lambda e: seen.append(("first", e)))
    emitter.subscribe(fail)
    emitter.subscribe(lambda e: seen.append(("last", e)))
    with caplog.at_level(logging.ERROR, logger="aiop2p._aio.emitter"):
        emitter.emit(7)
    assert seen == [("first", 7), ("last", 7)]
    assert "numbers subscriber" in caplog.text and "boom" in caplog.text


def test_unsubscribe_removes_one_subscription_and_ignores_strangers() -> None:
    emitter: Emitter[str] = Emitter("words")
    seen: list[str] = []
    emitter.subscribe(seen.append)
    emitter.subscribe(seen.append)
    emitter.unsubscribe(seen.append)
    emitter.unsubscribe(print)
    emitter.emit("a")
    assert seen == ["a"]


def test_a_subscriber_may_unsubscribe_while_being_called() -> None:
    emitter: Emitter[int] = Emitter("once")
    seen: list[int] = []

    def once(event: int) -> None:
        seen.append(event)
        emitter.unsubscribe(once)

    emitter.subscribe(once)
    emitter.emit(1)
    emitter.emit(2)
    assert seen == [1]
