"""The upload connection pool (stages/upload_connections.py): a connection proven in the background goes back
among the kept ones, still bounded by keep_open; a dead one is replaced ahead of need."""

from __future__ import annotations

import time

from onss_relay.stages.upload_connections import ConnectionPool
from tests.fake_transport import FakeTransport
from tests.helpers import wait_until


def new_transport(made: list[FakeTransport]) -> FakeTransport:
    t = FakeTransport({}, [])
    made.append(t)
    return t


def test_a_connection_proven_ahead_of_need_is_still_closed_after_keep_open() -> None:
    made: list[FakeTransport] = []
    pool = ConnectionPool(lambda: new_transport(made), fresh=0.0)
    pool.keep(new_transport(made))
    pool.freshen()  # proven in the background: back among the kept, idle since it was kept
    assert wait_until(lambda: len(pool.idle()) == 1, 5, 0.01)
    time.sleep(0.05)
    pool.close_idle(older_than=0.05)
    assert pool.idle() == [] and made[0].closed
    assert len(made) == 1  # proving it opened nothing new


def test_a_dead_idle_connection_is_replaced_before_it_is_needed() -> None:
    made: list[FakeTransport] = []
    pool = ConnectionPool(lambda: new_transport(made), fresh=0.0)
    pool.keep(new_transport(made))
    made[0].closed = True  # died idle: FakeTransport.alive() says so
    pool.tend(every=0.0)
    assert wait_until(lambda: len(made) == 2 and pool.idle() == [made[1]], 5, 0.01)
    assert pool.take() is made[1]
