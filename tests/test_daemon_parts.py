"""The daemon split by meaning (issue 26): daemon.py runs terms and supervises; the stage threads
(stage_set.py), the hook part (hook_part.py), a reload (reload.py), health (health.py) live beside it, and a
new part is one module plus one line in ``Daemon._parts``."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import onss_relay
from onss_relay.config import Config

PACKAGE = Path(onss_relay.__file__).parent
MOST = 400  # lines: past this a module asks to be split by meaning


def test_the_daemon_module_stays_under_400_lines_and_declares_its_parts_in_one_place() -> None:
    """daemon.py is under MOST lines, and the Service lines of the daemon's parts are all in Daemon._parts."""
    path = PACKAGE / "daemon.py"
    lines = path.read_text().count("\n")
    assert lines < MOST, f"daemon.py has {lines} lines"
    tree = ast.parse(path.read_text())
    declaring = {
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef)
        and any(isinstance(c, ast.Call) and getattr(c.func, "id", None) == "Service" for c in ast.walk(f))
    }
    assert declaring == {"_parts"}, declaring


def test_claim_scans_woken_by_a_trickle_of_files_rest_as_long_as_the_last_scan_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each file written wakes a scan and each scan reads the whole outbox: unpaced, scans took the core the
    signer and uploader share with them. A scan rests as long as the last one took (at most SCAN_REST_MAX)."""
    from onss_relay import stage_set

    clock = {"now": 100.0}
    rests: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            rests.append(timeout or 0.0)
            clock["now"] += timeout or 0.0
            return False

    monkeypatch.setattr(stage_set.time, "monotonic", lambda: clock["now"])
    took = iter([0.2, 5.0, 0.1])

    @stage_set.paced(Stop())
    def scan() -> None:
        clock["now"] += next(took)

    scan()  # the first scan of an idle outbox runs at once
    clock["now"] += 0.05  # woken 50 ms after the 0.2 s scan ended
    scan()
    scan()  # right after a 5 s scan: rests the longest pacing allows
    assert rests == [pytest.approx(0.15), stage_set.SCAN_REST_MAX]


def test_the_daemons_watch_stage_paces_its_claim_scans(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's watch stage goes through paced (review rev6: the pacing's own test passed without it)."""
    from onss_relay import stage_set
    from onss_relay.pipeline import Relay
    from tests.fake_transport import FakeTransport

    clock = {"now": 100.0}
    rests: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            rests.append(timeout or 0.0)
            return False

    def scan(on_page: object = None) -> list[str]:
        clock["now"] += 0.5
        return []

    relay = Relay(cfg, connect=lambda: FakeTransport({}, []))
    try:
        monkeypatch.setattr(relay.claimer, "scan", scan)
        monkeypatch.setattr(stage_set.time, "monotonic", lambda: clock["now"])
        stages, _ = stage_set.relay_stages(lambda: cfg, relay, Stop(), threading.Event())
        watch = next(s for s in stages if s.health.name == "watch")
        watch.step()
        watch.step()  # woken at once after a 0.5 s scan
        assert rests == [pytest.approx(0.5)]
    finally:
        relay.close()
