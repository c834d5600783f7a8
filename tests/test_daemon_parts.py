"""The daemon split by meaning (issue 26): daemon.py runs terms and supervises; the stage threads
(stage_set.py), the hook part (hook_part.py), a reload (reload.py), health (health.py) live beside it, and a
new part is one module plus one line in ``Daemon._parts``."""

from __future__ import annotations

import ast
from pathlib import Path

import onss_relay

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
