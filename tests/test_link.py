"""The link stage through the real CLI: an answer's link and its effect on its set survive a crash at any
commit (one transaction), and damaged answers are kept with a reason without stopping any other answer or an
upload."""

from __future__ import annotations

import io
import json
import shutil
import signal
import sqlite3
import zipfile
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, TODAY, fi_name
from tests.helpers import run_cli

CRASH = "ONSS_RELAY_CRASH_AT_COMMIT"
ONE = fi_name(1)
GO_ONE = "GO" + ONE[2:-2]
GO_TWO = "GO" + fi_name(2, total=2)[2:-2]


def sent_and_answered(relay_dir: Path) -> Path:
    """Given a relay folder (local transport), send a one-part and a two-part set with `send --once` and let the
    simulated transfer point answer them (ACRF, notification, and a BEWA answer linked by ticket for the
    first); return the config."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<DmfA>SIMULATE-OTHER:BEWA</DmfA>\r\n")
    for part in (1, 2):
        (outbox / fi_name(2, total=2, part=part)).write_bytes(b"<DmfA>part %d</DmfA>\r\n" % part)
    sent = run_cli("send", "--once", "--config", str(config))
    assert sent.returncode == 0, sent.stdout[-3000:] + sent.stderr[-3000:]
    Simulator(relay_dir / "remote", SENDER).process()
    return config


def journal_of(config: Path):  # type: ignore[no-untyped-def]
    return open_journal_at(load_config(config, environ={}).paths.journal_path)


def answers_all_linked(config: Path) -> None:
    """Every set notified with its answers recorded once, every response mirrored once and linked."""
    j = journal_of(config)
    try:
        one, two = j.get_set(GO_ONE), j.get_set(GO_TWO)
        assert one is not None and two is not None
        assert (one.state, two.state) == (State.NOTIFIED, State.NOTIFIED), (one.state, two.state)
        assert one.data.acrf is not None and two.data.acrf is not None
        assert (len(one.data.notifications), len(two.data.notifications)) == (1, 1)
        assert len(one.data.other_responses) == 1, one.data.other_responses
        unlinked = [(r.name, r.kind) for r in j.unlinked_responses()]
        assert unlinked == [], unlinked
    finally:
        j.close()
    inbox = load_config(config, environ={}).paths.inbox_dir / "OUTTEST"
    names = sorted(p.name for p in inbox.iterdir())
    assert len([n for n in names if n.startswith("FO.")]) == 5, names  # 2 ACRF, 2 NOTI, 1 BEWA, each once


@pytest.mark.slow
def test_a_crash_at_any_commit_of_a_poll_loses_no_answer(relay_dir: Path, tmp_path: Path) -> None:
    """poll --once killed (SIGKILL) right after its Nth journal commit, for every N, then run again: every
    answer is linked and applied (a link committed apart from its effect left the set waiting for ever)."""
    sent_and_answered(relay_dir)
    template = tmp_path / "template"
    shutil.copytree(relay_dir, template, symlinks=True)
    n = 0
    while True:
        n += 1
        run = tmp_path / f"crash-at-{n}"
        shutil.copytree(template, run, symlinks=True)
        config = run / "config.toml"
        first = run_cli("poll", "--once", "--config", str(config), env={CRASH: str(n)})
        if first.returncode != -signal.SIGKILL:
            assert first.returncode == 0, first.stderr
            answers_all_linked(config)
            break
        again = run_cli("poll", "--once", "--config", str(config))
        assert again.returncode == 0, again.stderr
        try:
            answers_all_linked(config)
        except AssertionError as e:
            raise AssertionError(f"killed after commit {n} of poll --once ({CRASH}={n}): {e}") from e
        shutil.rmtree(run)
    assert n > 3, "the poll made fewer commits than its steps (mirror, delete, link): the hook did not count them"


def _damaged() -> dict[str, bytes]:
    """Answers whose bytes cannot be read, named to sort before the simulator's (000xx < 001AZ, CO < FO)."""
    xml = b'<?xml version="1.0" encoding="UTF-8"?><ACRF><Form/></ACRF>'
    gz = __import__("gzip").compress(xml)
    d = f"999999.{TODAY}"
    return {
        f"CO.ACRF.{d}.000AA.T": b"PK\x03\x04" + b"\x00" * 26 + b"no central directory",  # BadZipFile
        f"CO.ACRF.{d}.000AB.T": gz[: len(gz) // 2],  # truncated gzip
        f"CO.NOTI.{d}.000AC.T": b"\x78\x9c" + b"\xff" * 40,  # damaged zlib
        f"FO.ACRF.{d}.000AD.T": b"this is not XML at all",
        f"FO.ACRF.{d}.000AE.T": b"",  # empty
        f"FO.NOTI.{d}.000AF.T": '<?xml version="1.0" encoding="UTF-8"?><NOTIFICATION>caf\xe9'.encode("latin-1"),
        f"FO.NOTI.{d}.000AG.T": b'<?xml version="1.0" encoding="X-NO-SUCH"?><NOTIFICATION/>',  # unknown encoding
        f"FO.BEWA.{d}.000AH.T": b"<BEWANotice><Reference><ReferenceNbr>",  # truncated XML, other kind
        f"CO.ACRF.{d}.000AI.T": _damaged_lzma_zip(xml),  # lzma's own error, neither OSError nor ValueError
    }


def _damaged_lzma_zip(xml: bytes) -> bytes:
    """A zip whose one member is LZMA-compressed (a method zipfile reads) with its compressed bytes damaged."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_LZMA) as z:
        z.writestr("ACRF.xml", xml + b"<!--" + " ".join(str(i * i) for i in range(2000)).encode() + b"-->")
    data = bytearray(buffer.getvalue())
    start = 30 + len("ACRF.xml") + 9  # the local header, the name, lzma's version and properties
    data[start + 4 : start + 64] = bytes(b ^ 0xFF for b in data[start + 4 : start + 64])
    return bytes(data)


def _put_answers(remote_out: Path, answers: dict[str, bytes]) -> None:
    for name, data in answers.items():
        (remote_out / name).write_bytes(data)
        (remote_out / ("GO" + name[2:])).write_bytes(b"")


def test_damaged_answers_are_kept_with_a_reason_and_never_stop_the_others(relay_dir: Path) -> None:
    config = sent_and_answered(relay_dir)
    damaged = _damaged()
    _put_answers(relay_dir / "remote" / "OUTTEST", damaged)
    poll = run_cli("poll", "--once", "--config", str(config))
    assert poll.returncode == 0, poll.stderr
    j = journal_of(config)
    try:
        one, two = j.get_set(GO_ONE), j.get_set(GO_TWO)
        assert one is not None and two is not None
        assert (one.state, two.state) == (State.NOTIFIED, State.NOTIFIED)  # the answers sorted after them
        assert len(one.data.other_responses) == 1
    finally:
        j.close()
    inbox = relay_dir / "spool" / "inbox" / "OUTTEST"
    for name, data in damaged.items():
        assert (inbox / name).read_bytes() == data, f"{name} not kept as received"
    listed = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)["unlinked_responses"]
    reasons = {r["name"]: r["reason"] for r in listed}
    unreadable = set(damaged) - {f"FO.BEWA.999999.{TODAY}.000AH.T"}  # an other answer need not be XML: kept
    assert unreadable <= set(reasons), sorted(set(damaged) - set(reasons))
    assert all(reasons[n] for n in unreadable), reasons
    text = run_cli("status", "--config", str(config)).stdout
    assert "damaged zip" in text and "empty file" in text
    # under their own heading: a damaged answer may be the one a set waits for, not one that matches no set
    unread = text.split("answers that could not be read")[1].split("\n\n")[0]
    assert "damaged zip" in unread and "empty file" in unread, text


def test_a_damaged_answer_does_not_stop_go_sending_recovery(relay_dir: Path) -> None:
    """A set left in go_sending (its GO not put) is finished by the next `send --once` even when its OUT folder
    holds a damaged ACRF, which recovery reads to learn whether the set was consumed."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<DmfA/>\r\n")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    (relay_dir / "remote" / "INTEST" / GO_ONE).unlink()  # the crash came between go_sending and the GO put
    db = sqlite3.connect(relay_dir / "spool" / "journal.db")
    db.execute("UPDATE sets SET state = 'go_sending', archived = 0 WHERE go_name = ?", (GO_ONE,))
    db.commit()
    db.close()
    _put_answers(relay_dir / "remote" / "OUTTEST", {k: v for k, v in _damaged().items() if ".ACRF." in k})
    send = run_cli("send", "--once", "--config", str(config))
    assert send.returncode == 0, send.stdout + send.stderr
    assert (relay_dir / "remote" / "INTEST" / GO_ONE).exists()
    j = journal_of(config)
    try:
        row = j.get_set(GO_ONE)
        assert row is not None and row.state == State.SENT
    finally:
        j.close()


def test_an_answer_the_poller_takes_while_recovery_reads_it_is_not_an_error(relay_dir: Path) -> None:
    """Recovery lists OUT, and the poller (another process) deletes the ACRF before recovery reads it: the GO
    is put (nothing says the set was consumed) and the round goes on; no permanent remote error."""
    from onss_relay.pipeline import Relay
    from onss_relay.transport.base import RemoteEntry
    from onss_relay.transport.local import LocalTransport

    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<DmfA/>\r\n")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    (relay_dir / "remote" / "INTEST" / GO_ONE).unlink()
    db = sqlite3.connect(relay_dir / "spool" / "journal.db")
    db.execute("UPDATE sets SET state = 'go_sending', archived = 0 WHERE go_name = ?", (GO_ONE,))
    db.commit()
    db.close()
    taken = relay_dir / "remote" / "OUTTEST" / f"FO.ACRF.999999.{TODAY}.000AA.T"
    taken.write_bytes(b"<ACRF/>")

    class PollerRacing(LocalTransport):
        def list(self, folder: str) -> list[RemoteEntry]:
            entries = super().list(folder)
            if folder == "OUTTEST" and taken.exists():
                taken.unlink()  # the poller deletes it between this listing and recovery's read
            return entries

    relay = Relay(load_config(config, environ={}), connect=lambda: PollerRacing(relay_dir / "remote"))
    try:
        report = relay.send_once(wait_for_settle=False)
    finally:
        relay.close()
    assert report.upload.error is None, report.upload.error
    assert (relay_dir / "remote" / "INTEST" / GO_ONE).exists()


def test_an_acrf_with_a_form_for_us_and_one_for_another_set_is_linked_to_ours(relay_dir: Path) -> None:
    """The last Form's 'unmatched' once overwrote the first Form's link: the file was listed as matching no set
    although it had acknowledged one."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<Dimona>one</Dimona>\r\n")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    form = (
        "<Form><Identification>ACRF001</Identification><TypeForm>FA</TypeForm><FileReference>"
        "<FileName>{go}</FileName><ReferenceOrigin>2</ReferenceOrigin><ReferenceNbr>{ticket}</ReferenceNbr>"
        "</FileReference><ReceptionResult><ResultCode>1</ResultCode></ReceptionResult></Form>"
    )
    other = "GO.DIMN.123456.{}.09999.T.1".format(TODAY)
    acrf = "<ACRF>" + form.format(go=GO_ONE, ticket="0380579A83Q1Z") + form.format(go=other, ticket="0380579A83Q2Z")
    name = f"FO.ACRF.999999.{TODAY}.00777.T"
    _put_answers(relay_dir / "remote" / "OUTTEST", {name: (acrf + "</ACRF>").encode()})
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    j = journal_of(config)
    try:
        row = j.get_set(GO_ONE)
        assert row is not None and row.state == State.ACKNOWLEDGED and row.ticket == "0380579A83Q1Z"
        resp = j.get_response("OUTTEST", name)
        assert resp is not None and (resp.kind, resp.linked_set) == ("acrf", GO_ONE), resp
        assert name not in [r.name for r in j.unmatched_responses()]
    finally:
        j.close()


def test_linking_commits_answers_in_groups_and_sets_damaged_ones_aside(relay_dir: Path) -> None:
    """Issue 27: linking commits a group of answers at once, not one transaction per answer (poll --once
    survives a kill set at its tenth commit), and damaged answers in the same group are set aside with their
    reason while the good ones around them are linked and applied."""
    config = sent_and_answered(relay_dir)
    _put_answers(relay_dir / "remote" / "OUTTEST", _damaged())
    poll = run_cli("poll", "--once", "--config", str(config), env={CRASH: "10"})
    assert poll.returncode == 0, f"killed at commit 10: linking commits one answer at a time ({poll.returncode})"
    j = journal_of(config)
    try:
        one, two = j.get_set(GO_ONE), j.get_set(GO_TWO)
        assert one is not None and two is not None
        assert (one.state, two.state) == (State.NOTIFIED, State.NOTIFIED)
        kinds = {r.name: (r.kind, r.detail) for r in (j.get_response("OUTTEST", n) for n in _damaged()) if r}
    finally:
        j.close()
    assert len(kinds) == len(_damaged()) and all(kind in ("malformed", "other") for kind, _ in kinds.values()), kinds
    assert sum(kind == "malformed" and detail is not None for kind, detail in kinds.values()) >= 7, kinds


def _linking_peak(tmp_path: Path, n: int) -> int:
    """Given a number of answers never read, link them in one pass; return the pass's peak of Python memory."""
    import tracemalloc

    from onss_relay.stages.link import process_responses

    j = open_journal_at(tmp_path / f"journal-{n}.db")
    try:
        names = [f"GO.NOTI.999999.{TODAY}.{i:05d}.T" for i in range(n)]
        j.add_responses("OUTTEST", [(name, 0, f"/nowhere/{name}") for name in names])
        tracemalloc.start()
        process_responses(j, retry_waiting=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert j.unlinked_responses() == []
    finally:
        j.close()
    return peak


@pytest.mark.slow
def test_one_linking_pass_holds_a_page_whatever_the_number_of_answers(tmp_path: Path) -> None:
    """Issue 29: a pass over 15,000 answers holds no more than one over 5,000 (what it remembers of the answers
    it read, to spare the waiting ones, is a position, not a set of every name; both fill the name cache)."""
    small, large = _linking_peak(tmp_path, 5000), _linking_peak(tmp_path, 15000)
    assert large < small + 500_000, (small, large)
