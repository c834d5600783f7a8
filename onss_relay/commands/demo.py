"""`onss-relay demo`: the whole cycle on one machine, with no account, no network and no real key.

A self-signed certificate, a spool, a folder standing for the transfer point and the built-in simulator;
several declarations (one multi-part, one deliberately invalid) go out and their answers come back.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import tempfile
from pathlib import Path
from typing import TextIO

from onss_relay import identity
from onss_relay.config import load_config
from onss_relay.durable import atomic_write
from onss_relay.errors import UsageError
from onss_relay.journal import State
from onss_relay.names import Env, Name, Prefix, circuit_test, format_name, parse_name
from onss_relay.outcome import outcome_of
from onss_relay.pipeline import Relay
from onss_relay.simulator import Simulator
from onss_relay.transport.local import make_remote_home
from onss_relay.views.set_view import result_summary

SENDER = "123456"


def _declaration(app: str, seq: int, env: str, total: int, part: int, sender: str = SENDER) -> Name:
    return Name(Prefix.FI, app, sender, dt.date.today().strftime("%Y%m%d"), f"{seq:05d}", Env(env), total, part)


def _xml(app: str, seq: int, part: int, extra: str = "", workers: tuple[str, ...] = ("00000000097",)) -> bytes:
    people = "".join(f"\r\n  <Worker><INSS>{inss}</INSS></Worker>" for inss in workers)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\r\n<{app}Declaration>\r\n'
        f"  <Sender>{SENDER}</Sender>\r\n  <Sequence>{seq}</Sequence>\r\n  <Part>{part}</Part>"
        f"{people}{extra}\r\n</{app}Declaration>\r\n"
    ).encode()


def demo_declarations() -> list[tuple[Name, bytes]]:
    """Return the demo's FI files, each in an environment the ONSS documents list for it: a Dimona for two
    workers (T, one refused, after a provisional ACRF), a 3-part DmfA declaration test (S, one non-blocking
    anomaly), a DmfA circuit test (T: an ACRF, no notification), a DmfA (R), a DmfA declaration test with a
    blocking anomaly (S, refused by its notification), and one invalid."""
    dimona = "\r\n  <!-- SIMULATE-ACRF:PROVISIONAL -->\r\n  <!-- SIMULATE-ANOMALY:00913-333:B:2 -->"
    files = [(_declaration("DIMN", 1, "T", 1, 1), _xml("Dimona", 1, 1, dimona, ("85073003328", "90042125519")))]
    for part in (1, 2, 3):
        extra = "\r\n  <!-- SIMULATE-ANOMALY:00024-152:NB -->" if part == 2 else ""
        files.append((_declaration("DMFA", 2, "S", 3, part), _xml("DmfA", 2, part, extra)))
    files.append((_declaration("DMFA", 3, "T", 1, 1), _xml("DmfA", 3, 1)))  # circuit test
    files.append((_declaration("DMFA", 4, "R", 1, 1), _xml("DmfA", 4, 1)))
    files.append((_declaration("DMFA", 5, "T", 1, 1, sender="654321"), _xml("DmfA", 5, 1)))  # wrong sender
    files.append(
        (_declaration("DMFA", 6, "S", 1, 1), _xml("DmfA", 6, 1, "\r\n  <!-- SIMULATE-ANOMALY:00044-008:B -->"))
    )
    return files


def prepare(root: Path) -> Path:
    """Given a folder, create the demo's key, config, spool and transfer point there; return the config path."""
    config = root / "config.toml"
    template = importlib.resources.files("onss_relay.data").joinpath("demo.toml").read_text()
    _refuse_a_real_relay_s(root, config, template.splitlines()[0])
    root.mkdir(parents=True, exist_ok=True)
    identity.self_signed_identity(root / "keys", "Demo Payroll Office (self-signed)")
    make_remote_home(root / "transfer-point")
    config.write_text(template)
    return config


DEMO_FILES = ("keys/signer.p12", "keys/signer.crt")  # what prepare writes over, beside config.toml


def _refuse_a_real_relay_s(root: Path, config: Path, header: str) -> None:
    """Given the demo's folder, its config path and the demo config's first line, raise UsageError when the
    folder holds a config or key the demo did not make (`demo .` in /etc/onss-relay): it would replace them."""
    try:
        ours = config.read_text(errors="replace").startswith(header)
    except FileNotFoundError:
        ours = False
    except OSError as e:
        raise UsageError(f"{config}: cannot read it ({e.strerror}); give demo a new folder") from None
    if config.exists() and not ours:
        raise UsageError(f"{config}: is not the demo's: it was left as it is; give demo a new folder")
    for name in DEMO_FILES:
        if (root / name).exists() and not ours:
            raise UsageError(f"{root / name}: is not the demo's: it was left as it is; give demo a new folder")


def run_demo(directory: Path | None, out: TextIO) -> int:
    """Given a folder (or None for a temporary one), run the whole cycle and print a table; return the exit code."""
    # absolute: the config inside names its files relative to itself, and the report shows paths under root
    root = (directory or Path(tempfile.mkdtemp(prefix="onss-relay-demo-"))).absolute()
    cfg = load_config(prepare(root), environ={})  # self-contained: ONSS_RELAY__… overrides are for the real relay
    relay = Relay(cfg)
    try:
        for name, content in demo_declarations():
            atomic_write(relay.spool.outbox / format_name(name), content)
        simulator = Simulator(root / "transfer-point", cfg.sender.number)
        relay.send_once(wait_for_settle=False)
        simulator.process()
        relay.poll_once()
        return _report(relay, root, out)
    finally:
        relay.close()


def _report(relay: Relay, root: Path, out: TextIO) -> int:
    rows = sorted(relay.journal.recent_sets(100), key=lambda r: r.go_name.split(".")[4])
    print(f"onss-relay demo in {root}\n", file=out)
    head = f"{'DECLARATION SET':<38} {'ENV':<4} {'STATE':<12} {'OUTCOME':<23} {'ACRF':<28} {'NOTIFICATION':<56} FILES"
    print(head, file=out)
    ok = True
    for r in rows:
        acrf = r.data.acrf
        notes = r.data.notifications
        acrf_text = "-" if acrf is None else (f"accepted {acrf.ticket}" if acrf.accepted else "refused")
        circuit = circuit_test(parse_name(r.go_name))
        noti_text = "-" if not notes else result_summary(r)
        if circuit and not notes:
            noti_text = "none: a DmfA in T is only a circuit test"
        where = _where(relay, r.go_name, r.data.sent_dir, root)
        if r.state == State.FAILED:
            acrf_text, noti_text = "not sent", (r.reason or "").split(":")[0]
            ok = ok and r.go_name.split(".")[2] != SENDER  # only the deliberately invalid one may fail
        else:
            ok = ok and (r.state == State.NOTIFIED or (circuit and r.state == State.ACKNOWLEDGED))
        outcome = outcome_of(r.go_name, r.state, r.data)
        print(
            f"{r.go_name:<38} {r.env:<4} {str(r.state):<12} {outcome:<23} {acrf_text:<28} {noti_text:<56} {where}",
            file=out,
        )
    ok = ok and any(r.state == State.FAILED for r in rows)
    print(f"\nresponses mirrored in {relay.spool.inbox}; per-set results in {relay.spool.results}", file=out)
    print(
        "demo "
        + (
            "succeeded: every valid declaration was answered (two refusals by their notification, as"
            " planned; the circuit test by its ACRF alone), the invalid one was quarantined"
            if ok
            else "FAILED: see the table above"
        ),
        file=out,
    )
    return 0 if ok else 1


def _where(relay: Relay, go_name: str, sent_dir: str | None, root: Path) -> str:
    if sent_dir:
        return str(Path(sent_dir).relative_to(root)) + "/"
    return str(relay.spool.failed.relative_to(root)) + "/"
