"""The daemon's parts as small services (after celery's bootsteps): each has a name, a start, a stop and the
parts it requires; they start in an order that honours those, and stop in the reverse order. A new part of
the daemon (a listener, a notifier) is one Service in ``Daemon._parts``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from onss_relay.errors import RelayError


class ServiceOrderError(RelayError):
    """The declared parts cannot be ordered: one requires a part that is not declared, or they require each
    other in a circle (a bug in the daemon's declaration, not user input)."""


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    start: Callable[[], None]
    stop: Callable[[], None]
    requires: tuple[str, ...] = ()


def start_order(services: Iterable[Service]) -> list[Service]:
    """Given services, return them in an order where each comes after those it requires, otherwise in the
    order declared; raise ServiceOrderError naming the part at fault."""
    declared = list(services)
    names = {s.name for s in declared}
    for s in declared:
        missing = [r for r in s.requires if r not in names]
        if missing:
            raise ServiceOrderError(f"daemon part {s.name} requires {', '.join(missing)}, which is not declared")
    ordered: list[Service] = []
    placed: set[str] = set()
    while len(ordered) < len(declared):
        ready = next((s for s in declared if s.name not in placed and set(s.requires) <= placed), None)
        if ready is None:
            stuck = ", ".join(s.name for s in declared if s.name not in placed)
            raise ServiceOrderError(f"daemon parts {stuck} require each other in a circle")
        ordered.append(ready)
        placed.add(ready.name)
    return ordered


class Running:
    """Given the daemon's parts, start them in order (``start``) and stop the started ones in reverse (``stop``);
    a part that failed to start stops those started before it."""

    def __init__(self, services: Iterable[Service]) -> None:
        self.order = start_order(services)
        self.started: list[Service] = []

    def start(self) -> None:
        for s in self.order:
            try:
                s.start()
            except BaseException:
                self.stop()
                raise
            self.started.append(s)

    def stop(self) -> None:
        while self.started:
            self.started.pop().stop()
