"""The README stays true: its first commands, and a configuration reference that lists every key."""

from __future__ import annotations

import re
from pathlib import Path

from onss_relay.config import documented_keys

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_first_section_gives_the_demo_and_test_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    assert "onss-relay demo" in blocks[0]
    assert "pytest" in blocks[1]
    assert blocks[1].strip() in (REPO / ".ci" / "run").read_text()  # CI runs exactly the README's command


def test_configuration_reference_lists_every_key() -> None:
    reference = README.split("### Reference", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", reference, re.M))
    expected = {f"{s}.{k}" for s, keys in documented_keys().items() for k in keys}
    assert listed == expected
