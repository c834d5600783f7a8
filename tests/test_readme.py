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


def test_layout_table_lists_every_module() -> None:
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(onss_relay/[^`]+\.py)` \|", layout, re.M))
    tree = {
        str(p.relative_to(REPO))
        for p in (REPO / "onss_relay").rglob("*.py")
        if p.name != "__init__.py" or p.parent.name in ("journal", "responses", "transport")
    }
    assert listed == tree
