"""The simulator answers like the transfer point: one test per ACRF refusal it implements, and acceptance."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onss_relay import identity, signature
from onss_relay.names import parse_name
from onss_relay.responses.acrf import parse_acrf
from onss_relay.responses.notification import parse_notification
from onss_relay.simulator import Simulator, response_sequence
from onss_relay.transport.local import make_remote_home
from tests.conftest import SENDER, SIGNING_PASSWORD, TODAY
from tests.helpers import run_cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_remote_home(tmp_path / "home")


@pytest.fixture
def ident(identity_dir: Path) -> identity.Identity:
    return identity.load_identity(identity_dir / "signer.p12", None, SIGNING_PASSWORD.encode())


def drop(
    home: Path,
    folder: str,
    fi: str,
    ident: identity.Identity | None,
    content: bytes = b"<x/>",
    go: bool = True,
    parts: int | None = None,
) -> str:
    """Place the FI (and its FS when ident is given) and the GO of a set in folder; return the GO name."""
    n = parse_name(fi)
    total = parts or n.total or 1
    for part in range(1, total + 1):
        name = fi if n.total is None else ".".join(fi.split(".")[:-2] + [str(n.total), str(part)])
        (home / folder / name).write_bytes(content)
        if ident is not None:
            fs = "FS" + name[2:]
            (home / folder / fs).write_bytes(signature.encode_fs(signature.sign_file(ident, home / folder / name)))
    go_name = "GO" + (fi[2:] if n.total is None else fi[2:].rsplit(".", 1)[0])
    if go:
        (home / folder / go_name).write_bytes(b"")
    return go_name


def acrf_of(home: Path, out: str = "OUTTEST") -> list:
    return [parse_acrf(p.read_bytes()) for p in sorted((home / out).glob("FO.ACRF.*"))]


def fi(
    seq: int = 1, env: str = "T", sender: str = SENDER, date: str = TODAY, parts: str = "1.1", app: str = "DIMN"
) -> str:
    return f"FI.{app}.{sender}.{date}.{seq:05d}.{env}.{parts}"


def test_accepts_a_good_set_and_notifies(home: Path, ident: identity.Identity) -> None:
    go = drop(home, "INTEST", fi(parts="3.1"), ident)
    [v] = Simulator(home, SENDER).process()
    assert v.accepted and len(v.ticket) == 13
    [acrf] = acrf_of(home)
    assert acrf.accepted and acrf.file_name == go and acrf.ticket == v.ticket and acrf.errors == ()
    [noti] = [parse_notification(p.read_bytes()) for p in (home / "OUTTEST").glob("FO.NOTI.*")]
    assert v.ticket in noti.first.tickets() and noti.accepted
    assert list((home / "INTEST").iterdir()) == []  # the set was consumed
    names = sorted(p.name for p in (home / "OUTTEST").iterdir())
    assert len(names) == 6 and all(n.split(".")[2] == "999999" for n in names)  # FO+FS+GO twice
    fo_acrf = next(n for n in names if n.startswith("FO.ACRF"))
    signature.verify(home / "OUTTEST" / fo_acrf, (home / "OUTTEST" / ("FS" + fo_acrf[2:])).read_bytes())


def yesterday_plus(days: int) -> str:
    return (dt.date.today() + dt.timedelta(days=days)).strftime("%Y%m%d")


@pytest.mark.parametrize(
    "code, setup",
    [
        ("ACRF-108", lambda h, i: drop(h, "INTEST", fi(sender="654321"), i)),
        ("ACRF-111", lambda h, i: drop(h, "INTEST", fi(date=yesterday_plus(2)), i)),
        ("ACRF-126", lambda h, i: drop(h, "INTEST", fi(date=yesterday_plus(-400)), i)),
        ("ACRF-118", lambda h, i: drop(h, "INTEST", fi(env="R"), i)),
        ("ACRF-119", lambda h, i: drop(h, "IN", fi(env="T"), i)),
        ("ACRF-257", lambda h, i: drop(h, "INTEST", fi(env="S"), None)),
        ("ACRF-120", lambda h, i: drop(h, "INTEST", fi(parts="2.1"), i, parts=1)),
        ("ACRF-122", lambda h, i: drop(h, "INTEST", fi(), None)),
        ("ACRF-122", lambda h, i: drop(h, "INTEST-S", fi(env="S"), None)),  # S too: every send carries its FS
        ("ACRF-134", lambda h, i: drop(h, "INTEST", fi(), i, content=b"")),
    ],
)
def test_refusals(home: Path, ident: identity.Identity, code: str, setup) -> None:  # type: ignore[no-untyped-def]
    setup(home, ident)
    [v] = Simulator(home, SENDER).process()
    assert code in v.errors and not v.accepted
    outs = [acrf for out in ("OUT", "OUTTEST", "OUTTEST-S") for acrf in acrf_of(home, out)]
    assert len(outs) == 1 and outs[0].result_code == "0" and code in outs[0].errors
    assert not list((home / "OUTTEST").glob("FO.NOTI.*"))


def test_invalid_signature_is_acrf_125(home: Path, ident: identity.Identity) -> None:
    drop(home, "INTEST", fi(), ident)
    (home / "INTEST" / fi()).write_bytes(b"<x/>changed")
    [v] = Simulator(home, SENDER).process()
    assert v.errors == ("ACRF-125",)


def test_untrusted_certificate_is_acrf_125(home: Path, ident: identity.Identity, tmp_path: Path) -> None:
    other = identity.self_signed_identity(tmp_path / "other", "someone else")
    drop(home, "INTEST", fi(), ident)
    [v] = Simulator(home, SENDER, trusted=[tmp_path / "other" / "signer.crt"]).process()
    assert v.errors == ("ACRF-125",)
    assert other.certificate != ident.certificate


def test_duplicate_name_is_acrf_133(home: Path, ident: identity.Identity) -> None:
    sim = Simulator(home, SENDER)
    drop(home, "INTEST", fi(), ident)
    assert sim.process()[0].accepted
    drop(home, "INTEST", fi(), ident)
    assert Simulator(home, SENDER).process()[0].errors == ("ACRF-133",)  # remembered across restarts


@pytest.mark.parametrize(
    "go_name, code",
    [
        (f"GO.DMFA.{SENDER}.{TODAY}.00000.T.1", "ACRF-127"),
        (f"GO.DMFA.{SENDER}.20261399.00001.T.1", "ACRF-110"),
        (f"GO.DMFA.{SENDER}.2026011.00001.T.1", "ACRF-109"),
        (f"GO.DMFA.{SENDER}.{TODAY}.0001.T.1", "ACRF-112"),
        (f"GO.DMFA.{SENDER}.{TODAY}.0000x.T.1", "ACRF-367"),
        (f"GO.DMFA.{SENDER}.{TODAY}.00001.T.0", "ACRF-116"),
        (f"GO.DMFA.{SENDER}.{TODAY}.00001.T.1.1", "ACRF-107"),
        (f"GO.QQQQ.{SENDER}.{TODAY}.00001.T.1", "ACRF-129"),
    ],
)
def test_badly_structured_go_names(home: Path, go_name: str, code: str) -> None:
    (home / "INTEST" / go_name).write_bytes(b"")
    [v] = Simulator(home, SENDER).process()
    assert v.errors == (code,)
    assert acrf_of(home)[0].file_name == go_name


def test_anomaly_marker_reaches_the_notification(home: Path, ident: identity.Identity) -> None:
    drop(home, "INTEST", fi(), ident, content=b"<x>\r\n<!-- SIMULATE-ANOMALY:00024-152:B -->\r\n</x>")
    Simulator(home, SENDER).process()
    [noti] = [parse_notification(p.read_bytes()) for p in (home / "OUTTEST").glob("FO.NOTI.*")]
    assert [(a.error_id, a.anomaly_class) for a in noti.first.anomalies] == [("00024-152", "B")]
    assert noti.first.result_code == "0" and noti.first.diagnosis == "3" and not noti.accepted


def test_a_dmfa_in_t_is_only_a_circuit_test(home: Path, ident: identity.Identity) -> None:
    """The ONSS documents: T is for DmfA only a circuit test (an ACRF, the declaration not handled), S its
    declaration test (answered with a notification)."""
    drop(home, "INTEST", fi(app="DMFA"), ident)
    drop(home, "INTEST-S", fi(app="DMFA", env="S"), ident)
    verdicts = Simulator(home, SENDER).process()
    assert [v.accepted for v in verdicts] == [True, True]
    assert len(acrf_of(home, "OUTTEST")) == 1 and not list((home / "OUTTEST").glob("FO.NOTI.*"))
    assert len(acrf_of(home, "OUTTEST-S")) == 1 and len(list((home / "OUTTEST-S").glob("FO.NOTI.*"))) == 1


def test_answer_sequences_keep_the_grammar_past_any_volume() -> None:
    """Issue 29: after its first thousand answers of a day the simulator wrote 6- and 7-character sequences
    (FO.ACRF.999999.20261130.10001AZ.R) that the poller rightly left on the server. Every answer number of a day
    up to 200,000 (a secretariat's busiest day, twice) gives a name the grammar accepts, each one different."""
    seen = set()
    for n in range(1, 200_001):
        name = f"FO.ACRF.999999.{TODAY}.{response_sequence(n)}.R"
        seen.add(parse_name(name).seq)
    assert len(seen) == 200_000
    with pytest.raises(ValueError, match="does not fit"):
        response_sequence(36**5)


@pytest.mark.parametrize("answered_before", [999, 99_999])
def test_the_simulator_answers_past_a_thousand_and_a_hundred_thousand(
    home: Path, ident: identity.Identity, answered_before: int
) -> None:
    """The real simulator, its day's counter where a busy day leaves it: its next answers keep the grammar."""
    today = dt.date.today()  # the declarations' names carry today's date: the simulator's day must be the same
    sim = Simulator(home, SENDER, today=today)
    (home / ".simulator.json").write_text(json.dumps({"seen": [], "seq": {f"{today:%Y%m%d}.T": answered_before}}))
    drop(home, "INTEST", fi(1), ident)
    drop(home, "INTEST", fi(2), ident)
    assert all(v.accepted for v in sim.process())
    names = sorted(p.name for p in (home / "OUTTEST").iterdir() if p.name.startswith("FO."))
    assert len(names) == 4  # an ACRF and a notification per declaration
    assert {parse_name(n).seq for n in names} == {response_sequence(answered_before + i) for i in (1, 2, 3, 4)}


def test_a_simulator_killed_half_way_never_hands_an_answer_name_out_again(
    relay_dir: Path, ident: identity.Identity
) -> None:
    """Review of issue 29: `simulate --once` saved its day's answer counter only at the end, so one SIGKILLed
    half way gave the next run the same numbers: it wrote over answers nobody had polled, and gave the names of
    answers already polled (and deleted) to new ones. The numbers are reserved durably before the answers are
    written: after a kill, a poll taking every answer away, and a second run, no name comes back."""
    home = relay_dir / "remote"
    for seq in range(1, 81):
        drop(home, "INTEST", fi(seq, date=dt.date.today().strftime("%Y%m%d")), ident)
    command = [sys.executable, "-m", "onss_relay.cli", "simulate", "--once", "--config", str(relay_dir / "config.toml")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((home / "OUTTEST").glob("GO.*"))) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    polled = relay_dir / "polled"
    polled.mkdir()
    for p in (home / "OUTTEST").iterdir():  # what a poller does: takes them, deletes them on the server
        p.rename(polled / p.name)
    before = {p.name for p in polled.glob("FO.*")}
    assert 20 <= len(before) < 160, f"{len(before)} answers when killed: kill it earlier"
    second = run_cli("simulate", "--once", "--config", str(relay_dir / "config.toml"))
    assert second.returncode == 0, second
    after = {p.name for p in (home / "OUTTEST").glob("FO.*")}
    assert not after & before, f"answer names handed out again: {sorted(after & before)[:3]}"
    assert len(after) == 2 * len(second.stdout.splitlines())  # an ACRF and a notification for each set answered


def test_the_simulator_never_writes_over_an_answer_already_there(home: Path, ident: identity.Identity) -> None:
    """An answer of the name the simulator would give next (a state restored from an old backup) is left as it
    is: the simulator takes the next number."""
    today = dt.date.today()
    sim = Simulator(home, SENDER, today=today)
    there = home / "OUTTEST" / f"FO.ACRF.999999.{today:%Y%m%d}.00001.T"
    there.write_bytes(b"polled by nobody yet")
    drop(home, "INTEST", fi(1, date=f"{today:%Y%m%d}"), ident)
    assert all(v.accepted for v in sim.process())
    assert there.read_bytes() == b"polled by nobody yet"
    names = sorted(p.name for p in (home / "OUTTEST").glob("FO.*"))
    assert [parse_name(n).seq for n in names] == ["00001", "00002", "00003"]


class Killed(BaseException):
    """A SIGKILL at that point: nothing after it runs, nothing is cleaned up."""


def test_a_simulator_killed_before_answering_a_set_answers_it_at_the_next_run(
    home: Path, ident: identity.Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rev29: the simulator took a set's FI, FS and GO away before writing its answers, so `simulate
    --once` SIGKILLed between the two left that set unanswered for ever (3 of 3,000 sets after 8 kills: the relay
    waited on them as overdue). The files leave IN* only once the answers are written."""
    today = dt.date.today()
    gos = [drop(home, "INTEST", fi(seq, date=f"{today:%Y%m%d}"), ident) for seq in (1, 2)]
    sim = Simulator(home, SENDER, today=today)
    answered = []

    def answer_once(verdict, folder, state) -> None:  # type: ignore[no-untyped-def]
        if answered:
            raise Killed
        answered.append(verdict.go_name)
        Simulator._answer(sim, verdict, folder, state)

    monkeypatch.setattr(sim, "_answer", answer_once)
    with pytest.raises(Killed):
        sim.process()
    Simulator(home, SENDER, today=today).process()
    assert sorted(a.file_name for a in acrf_of(home)) == sorted(gos)  # each set answered once
    assert not list((home / "INTEST").iterdir())


def test_a_simulator_killed_after_answering_a_set_never_answers_it_again(
    home: Path, ident: identity.Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once a set's answers are written but before its files left IN*: the next run takes them away
    without a second ACRF, and the name stays one already seen (ACRF-133 if it comes again)."""
    today = dt.date.today()
    go = drop(home, "INTEST", fi(1, date=f"{today:%Y%m%d}"), ident)
    sim = Simulator(home, SENDER, today=today)

    def killed(folder: str, name: str) -> None:
        raise Killed

    monkeypatch.setattr(sim.remote, "delete", killed)
    with pytest.raises(Killed):
        sim.process()
    assert len(acrf_of(home)) == 1
    Simulator(home, SENDER, today=today).process()
    assert [a.file_name for a in acrf_of(home)] == [go] and not list((home / "INTEST").iterdir())
    drop(home, "INTEST", fi(1, date=f"{today:%Y%m%d}"), ident)
    assert Simulator(home, SENDER, today=today).process()[0].errors == ("ACRF-133",)  # the same name again


def test_an_answer_temp_left_by_a_killed_simulator_is_removed_at_its_next_run(home: Path) -> None:
    """Review rev29: `simulate --once` SIGKILLed while writing an answer left its .FO….part in OUTTEST for ever,
    and every poll counted it 'suspicious name left alone'. A person's own dotfile there is kept."""
    left = home / "OUTTEST" / f".FS.ACRF.999999.{TODAY}.001UF.T.part"
    left.write_bytes(b"half")
    mine = home / "OUTTEST" / ".notes.part"
    mine.write_bytes(b"mine")
    Simulator(home, SENDER).process()
    assert not left.exists() and mine.exists()


def test_the_names_the_simulator_remembers_are_a_window_of_days_and_an_idle_pass_reads_none(
    home: Path, ident: identity.Identity
) -> None:
    """Review rev29: `.simulator.json` kept every GO name ever answered, read and written whole at every pass
    (each second in a loop): 1,000,000 names (10 days at 100,000 a day) made an idle `simulate --once` take 2.1 s
    and 256 MB. A name dated past max_age_days is refused by its date anyway (ACRF-126): it is forgotten; a pass
    with no GO waiting reads and writes no state."""
    today = dt.date.today()
    old = (today - dt.timedelta(days=61)).strftime("%Y%m%d")
    recent = (today - dt.timedelta(days=59)).strftime("%Y%m%d")
    kept, gone = f"GO.DIMN.{SENDER}.{recent}.00001.T.1", f"GO.DIMN.{SENDER}.{old}.00001.T.1"
    state = home / ".simulator.json"
    state.write_text(json.dumps({"seen": [kept, gone], "seq": {}}))
    drop(home, "INTEST", fi(1, date=f"{today:%Y%m%d}"), ident)
    Simulator(home, SENDER, today=today).process()
    assert sorted(json.loads(state.read_text())["seen"]) == sorted([kept, f"GO.DIMN.{SENDER}.{today:%Y%m%d}.00001.T.1"])
    state.write_text("not read")  # no GO waiting: an idle pass neither reads nor writes it
    assert Simulator(home, SENDER, today=today).process() == []
    assert state.read_text() == "not read"
