"""The claim works in pages (stages/claim.py CLAIM_PAGE): `send --once` over more sets than one page signs each
page before claiming the next (uploading starts after the first page, memory stays that of a page), sends
every set exactly once, and a SIGKILL between two pages loses and doubles nothing at the next run.

The real CLI over the real sshd; CLAIM_PAGE is lowered to 3 by a wrapper that runs the CLI (tests only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from tests.fixtures.sshd import SshServer
from tests.test_uploader_sftp import assert_order_and_once, drop_sets

PAGE = 3
SETS = 10  # four pages of 3, 3, 3, 1

# `python WRAPPER ARGS` runs `onss-relay ARGS` with CLAIM_PAGE lowered; with KILL_AFTER_PAGE=K the process that
# claims (the forked claim-and-sign child of `send --once`) SIGKILLs its parent and itself right after its Kth
# page is committed: a power cut between two pages
WRAPPER = f"""
import os, runpy, signal, sys
import onss_relay.stages.claim as claim
claim.CLAIM_PAGE = {PAGE}
kill_after = int(os.environ.get("KILL_AFTER_PAGE", "0"))
if kill_after:
    real, pages = claim.Claimer._claim_page, [0]
    def claim_page(self, keys, outbox):
        got = real(self, keys, outbox)
        pages[0] += 1
        if pages[0] == kill_after:
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        return got
    claim.Claimer._claim_page = claim_page
sys.argv[0] = "onss-relay"
runpy.run_module("onss_relay.cli", run_name="__main__", alter_sys=True)
"""


def send_once(config: Path, kill_after_page: int = 0) -> subprocess.CompletedProcess[str]:
    """Given a config, run `onss-relay send --once` with pages of PAGE sets (and a SIGKILL after a page)."""
    wrapper = config.parent / "paged_cli.py"
    wrapper.write_text(WRAPPER)
    env = {"KILL_AFTER_PAGE": str(kill_after_page)}
    return subprocess.run(
        [sys.executable, str(wrapper), "send", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def dropped(config: Path) -> list[str]:
    """Given a config, drop SETS sets in its outbox (every fourth in three parts); return their GO names."""
    outbox = load_config(config, environ={}).paths.outbox_dir
    return drop_sets(outbox, [(i, "T", 3 if i % 4 == 0 else 1) for i in range(1, SETS + 1)])


def assert_all_sent_once(config: Path, sshd: SshServer, gos: list[str]) -> None:
    """Every set sent, its files archived, the outbox and failed/ empty, every GO written once after its parts."""
    cfg = load_config(config, environ={})
    j = open_journal_at(cfg.paths.journal_path)
    try:
        assert j.counts() == {"sent": SETS}
        assert list(cfg.paths.outbox_dir.iterdir()) == [] and list(cfg.paths.failed_dir.iterdir()) == []
        for go in gos:
            row = j.get_set(go)
            assert row is not None and row.state == State.SENT
            assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
    finally:
        j.close()


def test_send_once_over_several_pages_signs_each_page_before_claiming_the_next(sftp_dir: Path, sshd: SshServer) -> None:
    config = sftp_dir / "config.toml"
    gos = dropped(config)
    r = send_once(config)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_all_sent_once(config, sshd, gos)
    j = open_journal_at(load_config(config, environ={}).paths.journal_path)
    at = {go: {state: when for when, state, _ in j.history(go)} for go in sorted(gos)}
    j.close()
    first_page, last_page = sorted(gos)[:PAGE], sorted(gos)[-1:]
    # the first page was signed (and could be uploading) before the last page was claimed: one page at a time
    assert max(at[go]["signed"] for go in first_page) < min(at[go]["queued"] for go in last_page)


def test_a_sigkill_between_two_pages_loses_and_doubles_nothing(sftp_dir: Path, sshd: SshServer) -> None:
    config = sftp_dir / "config.toml"
    gos = dropped(config)
    r = send_once(config, kill_after_page=2)
    assert r.returncode == -9, r.stderr[-3000:]
    j = open_journal_at(load_config(config, environ={}).paths.journal_path)
    claimed = {go for go in gos if j.get_set(go) is not None}
    j.close()
    assert claimed == set(sorted(gos)[: 2 * PAGE])  # two pages committed, the rest never looked at
    r = send_once(config)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_all_sent_once(config, sshd, gos)
