"""The daemon's parts as services (onss_relay/services.py): started after what they require, in the declared
order otherwise, stopped in reverse; a part that fails to start stops those before it; a declaration that
cannot be ordered is said, naming the part."""

from __future__ import annotations

import pytest

from onss_relay.services import Running, Service, ServiceOrderError, start_order


def recorder(events: list[str], name: str, requires: tuple[str, ...] = (), fail: bool = False) -> Service:
    def start() -> None:
        if fail:
            raise RuntimeError(f"{name} cannot start")
        events.append(f"start {name}")

    return Service(name, start, lambda: events.append(f"stop {name}"), requires)


def test_parts_start_after_what_they_require_and_stop_in_reverse() -> None:
    events: list[str] = []
    parts = Running(
        [recorder(events, "stages", ("watcher", "results")), recorder(events, "results"), recorder(events, "watcher")]
    )
    parts.start()
    parts.stop()
    assert events == [
        "start results",
        "start watcher",
        "start stages",
        "stop stages",
        "stop watcher",
        "stop results",
    ]


def test_a_part_that_fails_to_start_stops_those_started_before_it() -> None:
    events: list[str] = []
    parts = Running([recorder(events, "a"), recorder(events, "b", ("a",), fail=True), recorder(events, "c")])
    with pytest.raises(RuntimeError):
        parts.start()
    assert events == ["start a", "stop a"]


def test_a_declaration_that_cannot_be_ordered_names_the_part() -> None:
    with pytest.raises(ServiceOrderError, match="web requires metrics"):
        start_order([recorder([], "web", ("metrics",))])
    with pytest.raises(ServiceOrderError, match="a, b require each other"):
        start_order([recorder([], "a", ("b",)), recorder([], "b", ("a",))])
