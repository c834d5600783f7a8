"""Peak memory processing large notifications, mirrored, parsed and linked to their set by `onss-relay poll
--once`: a DmfA answer of about 200 MB (one Form per worker, some refused with anomalies), and one Form with
60,000 anomalies (a DmfA declaration of a large employer: its anomalies grow with the workforce), for which
the results file size and the peak RSS of `status` and `status NAME` are measured too. Baseline: the same
file read with xml.etree.ElementTree.parse, which is what a script does (the whole tree in memory).

Run: python3 bench/bench_notification.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import REPO, SENDER, emit, lower_is_better, world

from onss_relay import identity
from onss_relay.simulator import Verdict, acrf_xml, notification_xml
from onss_relay.transport.local import make_remote_home
from tests.conftest import SIGNING_PASSWORD, write_config

MEASURE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""

BASELINE = """
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
print(len(root.findall("Form")))
"""


def peak_rss_mb(argv: list[str]) -> float:
    """Given a command, run it in a fresh process and return its peak resident memory in MB."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], check=True, capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def big_notification(path: Path, ticket: str, go: str, size: int) -> int:
    """Write a notification of about ``size`` bytes answering ``go``: one Form per worker, every tenth refused."""
    one = notification_xml(ticket, SENDER, "DMFA001", (("00024-152", "B", 1),), file_name=go, workers=("85073112345",))
    head, _, rest = one.partition(b"<Form>")
    form, _, tail = rest.rpartition(b"</Form>")
    form = b"<Form>" + form + b"</Form>\r\n"
    accepted = form.replace(b"<Diagnosis>3</Diagnosis>", b"").replace(
        b"<ResultCode>0</ResultCode>", b"<ResultCode>1</ResultCode>"
    )
    n = 0
    with path.open("wb") as f:
        f.write(head.rstrip(b" "))
        written = len(head)
        while written < size:
            chunk = form if n % 10 == 0 else accepted
            f.write(chunk)
            written += len(chunk)
            n += 1
        f.write(tail.lstrip(b"\r\n"))
    return n


LABEL = "the value given is outside the domain the glossary allows for this zone; " * 4  # labels run long


def one_form_notification(path: Path, go: str, ticket: str, anomalies: int) -> None:
    """Write a refused DmfA notification answering ``go``: one Form with ``anomalies`` anomalies, each located."""
    with path.open("wb") as f:
        f.write(
            f"""<?xml version="1.0" encoding="UTF-8"?>\r\n<NOTIFICATION><Form><Identification>NOTI001</Identification>
<FileReference><FileName>{go}</FileName><ReferenceNbr>{ticket}</ReferenceNbr></FileReference>
<EmployerId>{SENDER}</EmployerId><HandlingResult><ResultCode>0</ResultCode><Diagnosis>4</Diagnosis>\r\n""".encode()
        )
        for i in range(anomalies):
            code, cls = (f"00{237 + i % 40:03d}-008", "P") if i % 1000 else ("00237-001", "B")
            f.write(
                f"<AnomalyReport><ErrorID>{code}</ErrorID><TagName>AccidentDate</TagName><Value>2026-02-30</Value>"
                f"<AnomalyClass>{cls}</AnomalyClass><AnomalyLabel>{LABEL}</AnomalyLabel>"
                f"<Path><Employer>{SENDER}</Employer><NaturalPerson>{i + 1}</NaturalPerson>"
                f"<WorkerRecord>1</WorkerRecord><Occupation>1</Occupation></Path></AnomalyReport>\r\n".encode()
            )
        f.write(b"</HandlingResult></Form></NOTIFICATION>\r\n")


def sent_set(root: Path) -> tuple[Path, str, Path]:
    """Given an empty folder, make a relay there, submit and send one DmfA; return (config, GO name, OUTTEST)."""
    (root / "keys").mkdir()
    identity.self_signed_identity(root / "keys", "bench", password=SIGNING_PASSWORD.encode())
    (root / "keys" / "signer.pass").write_text(SIGNING_PASSWORD)
    make_remote_home(root / "remote")
    config = write_config(root)
    cli = [sys.executable, "-m", "onss_relay.cli"]
    content = root / "dmfa.xml"
    content.write_bytes(b"<DmfA/>")
    [fi] = subprocess.run(
        [*cli, "submit", str(content), "--app", "DMFA", "--env", "T", "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.split()
    subprocess.run([*cli, "send", "--once", "--config", str(config)], check=True, capture_output=True, cwd=REPO)
    return config, "GO" + fi[2:-2], root / "remote" / "OUTTEST"


def one_form_figures(anomalies: int) -> list[dict[str, object]]:
    """Poll a one-Form notification of ``anomalies`` anomalies; return its figures beside xml.etree's."""
    root = world("onss-bench-noti1-")
    config, go, out = sent_set(root)
    cli = [sys.executable, "-m", "onss_relay.cli"]
    ticket = "0380579A83Q1Z"
    acrf = "FO.ACRF.999999.20261124.00011.T"
    (out / acrf).write_bytes(acrf_xml(Verdict(go, "INTEST", (), ticket)))
    (out / ("GO" + acrf[2:])).write_bytes(b"")
    noti = out / "FO.NOTI.999999.20261124.00012.T"
    one_form_notification(noti, go, ticket, anomalies)
    (out / "GO.NOTI.999999.20261124.00012.T").write_bytes(b"")
    size_mb = noti.stat().st_size / (1 << 20)
    copy = root / "copy.xml"
    copy.write_bytes(noti.read_bytes())
    poll = peak_rss_mb([*cli, "poll", "--once", "--config", str(config)])
    result = root / "spool" / "results" / f"{go}.json"
    assert json.loads(result.read_text())["outcome"] == "refused"
    status = peak_rss_mb([*cli, "status", "--config", str(config)])
    story = subprocess.run(
        [*cli, "status", go, "--config", str(config)], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout
    status_name = peak_rss_mb([*cli, "status", go, "--config", str(config)])
    baseline = peak_rss_mb([sys.executable, "-c", BASELINE, str(copy)])
    what = f"one Form, {anomalies} anomalies, {size_mb:.0f} MB"
    return [
        lower_is_better(f"peak RSS polling a notification of {what}", "MB", poll, baseline, "xml.etree parse"),
        lower_is_better(
            f"results file of that set ({len(story.splitlines())} lines in status NAME)",
            "MB",
            result.stat().st_size / (1 << 20),
            size_mb,
            "the notification itself",
        ),
        lower_is_better("peak RSS of plain `status` after it", "MB", status, baseline, "xml.etree parse"),
        lower_is_better("peak RSS of `status NAME` of that set", "MB", status_name, baseline, "xml.etree parse"),
    ]


def main() -> None:
    from common import bench_args

    args = bench_args(__doc__)
    size = (40 if args.quick else 200) << 20
    one_form = one_form_figures(60_000)
    root = world("onss-bench-noti-")
    config, go, out = sent_set(root)
    cli = [sys.executable, "-m", "onss_relay.cli"]
    ticket = "0380579A83Q1Z"
    acrf = "FO.ACRF.999999.20261124.00001.T"
    (out / acrf).write_bytes(acrf_xml(Verdict(go, "INTEST", (), ticket)))
    (out / ("GO" + acrf[2:])).write_bytes(b"")
    noti = out / "FO.NOTI.999999.20261124.00002.T"
    workers = big_notification(noti, ticket, go, size)
    (out / "GO.NOTI.999999.20261124.00002.T").write_bytes(b"")
    copy = root / "copy.xml"
    copy.write_bytes(noti.read_bytes())
    relay = peak_rss_mb([*cli, "poll", "--once", "--config", str(config)])
    status = json.loads(
        subprocess.run(
            [*cli, "status", "--json", "--config", str(config)], check=True, capture_output=True, text=True, cwd=REPO
        ).stdout
    )
    [row] = [s for s in status["sets"] if s["set"] == go]
    assert row["state"] == "notified", row["state"]
    baseline = peak_rss_mb([sys.executable, "-c", BASELINE, str(copy)])
    emit(
        [
            lower_is_better(
                f"peak RSS linking a {size >> 20} MB notification ({workers} workers)",
                "MB",
                relay,
                baseline,
                "xml.etree parse of the file",
            ),
            *one_form,
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
