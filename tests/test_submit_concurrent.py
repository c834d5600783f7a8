"""Two `submit`s at once (issue 25, remaining): two machines' configs on one shared spool and one PostgreSQL
journal, or one machine's SQLite journal, run the real CLI side by side, in pairs and in bursts. No sequence
number is handed out twice (ACRF-133), no file is overwritten, each process gets one clear outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

PAIRS = 6
BURST = 10


def _submit_at_once(configs: list[Path], contents: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """Given a config per process and a content file each, start one `submit` per file at once (round robin
    over the configs) and return what each did, in the order they were started."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "onss_relay.cli", "submit", str(content), "--app", "DMFA", "--env", "T"]
            + ["--config", str(configs[i % len(configs)])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, content in enumerate(contents)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _submits_never_share_a_sequence(relay_dir: Path, configs: list[Path]) -> None:
    """Given configs on one spool and journal, submit in pairs then in a burst: every process succeeds with
    its own name and sequence, and each name in the outbox holds the bytes of the process that was given it."""
    outbox = relay_dir / "spool" / "outbox"
    rounds = [2] * PAIRS + [BURST]
    given: dict[str, bytes] = {}
    for r, size in enumerate(rounds):
        contents = []
        for i in range(size):
            content = relay_dir / f"declaration-{r}-{i}.xml"
            content.write_bytes(f"<declaration round='{r}' n='{i}'/>".encode())
            contents.append(content)
        for content, done in zip(contents, _submit_at_once(configs, contents), strict=True):
            names = done.stdout.split()
            assert done.returncode == 0 and len(names) == 1, (done.returncode, done.stdout, done.stderr)
            assert names[0] not in given, f"{names[0]} given twice"
            given[names[0]] = content.read_bytes()
    sequences = [name.split(".")[4] for name in given]
    assert len(set(sequences)) == len(sequences) == sum(rounds)
    assert sorted(p.name for p in outbox.iterdir()) == sorted(given)  # no temp file left, none missing
    for name, content in given.items():
        assert (outbox / name).read_bytes() == content, f"{name} overwritten"


def test_two_machines_submitting_at_once_on_postgresql_never_share_a_sequence(relay_dir: Path, pg_server: Any) -> None:
    journal = f'\n[journal]\nurl = "{pg_server.new_database()}"\n'
    text = (relay_dir / "config.toml").read_text() + journal
    configs = [relay_dir / "machine-a.toml", relay_dir / "machine-b.toml"]
    for config in configs:
        config.write_text(text)
    _submits_never_share_a_sequence(relay_dir, configs)


def test_submits_at_once_on_one_machine_never_share_a_sequence(relay_dir: Path) -> None:
    _submits_never_share_a_sequence(relay_dir, [relay_dir / "config.toml"])
