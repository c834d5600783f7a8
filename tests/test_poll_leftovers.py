"""Upgrade leftovers (stages/poll_leftovers.py): polls of older versions downloaded into
inbox/<OUT folder>/.<name>.part; a killed one left such a file for ever. The first start of this version removes
them, logged (their answers are still on the server and come again), and leaves a person's hidden file alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import run_cli


def test_old_part_files_in_the_inbox_are_removed_once_and_their_answers_come_again(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / fi_name(1)).write_bytes(b"<Dimona>1</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    answers = sorted(p.name for p in (relay_dir / "remote" / "OUTTEST").iterdir())
    assert answers
    inbox = relay_dir / "spool" / "inbox" / "OUTTEST"
    inbox.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(
        inbox.parent / ".downloading", ignore_errors=True
    )  # the spool as an older version left it: no such folder
    old = [inbox / f".{name}.part" for name in answers]  # an old poll killed while it downloaded them
    for path in old:
        path.write_bytes(b"half")
    person = inbox / ".notes.part"
    person.write_bytes(b"a person's own hidden file")

    r = run_cli("poll", "--once", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in old if p.exists()] and person.exists()
    assert '"old_downloads_removed"' in r.stderr and f'"count": {len(old)}' in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == answers  # downloaded again

    later = inbox / f".{answers[0]}.part"  # after the one sweep, the inbox folders are not listed at each start
    later.write_bytes(b"x")
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    assert later.exists()
