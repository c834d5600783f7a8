"""A set in go_sending whose server cannot be read to decide its GO (its OUT folder refused) waits on its own:
the round, and every other set, go on (issue 22, item 3: nothing the server holds stops an upload)."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

from tests.conftest import fi_name
from tests.helpers import run_cli

ONE, TWO = fi_name(1), fi_name(2)
GO_ONE, GO_TWO = "GO" + ONE[2:-2], "GO" + TWO[2:-2]


def test_a_set_whose_out_folder_cannot_be_read_waits_and_the_others_are_sent(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    config.write_text(config.read_text().replace("connections = 2", 'connections = 2\nquiet_period = "2s"'))
    outbox, remote = relay_dir / "spool" / "outbox", relay_dir / "remote"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<DmfA/>\r\n")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    # as after a crash between go_sending's commit and the GO's put: the GO is not on the server
    (remote / "INTEST" / GO_ONE).unlink()
    db = sqlite3.connect(relay_dir / "spool" / "journal.db")
    db.execute("UPDATE sets SET state = 'go_sending', archived = 0 WHERE go_name = ?", (GO_ONE,))
    db.commit()
    db.close()
    shutil.rmtree(remote / "OUTTEST")
    (remote / "OUTTEST").write_bytes(b"")  # the answers' folder cannot be listed
    (outbox / TWO).write_bytes(b"<DmfA>2</DmfA>\r\n")

    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 5, (r.returncode, r.stdout, r.stderr[-2000:])
    assert (remote / "INTEST" / GO_TWO).exists(), "the other set was not sent"
    assert not (remote / "INTEST" / GO_ONE).exists(), "a GO put without looking at OUT"
    assert "could not be read" in r.stderr and "OUTTEST" in r.stderr, r.stderr[-2000:]
    status = run_cli("status", GO_ONE, "--config", str(config))
    assert "could not be read" in status.stdout, status.stdout

    (remote / "OUTTEST").unlink()
    (remote / "OUTTEST").mkdir()
    time.sleep(2.5)  # its quiet period
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-2000:])
    assert (remote / "INTEST" / GO_ONE).exists(), "the waiting set was not finished once the server could be read"
