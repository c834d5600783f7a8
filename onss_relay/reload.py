"""SIGHUP: the configuration read again. Keys that only tune timing or what is kept ([watch], [poll], [hooks],
[retention]) apply to the running relay; a change anywhere else is said to need a restart, and a configuration
that no longer loads leaves the running one in force. Every section is in one of the two lists (a test holds
them against the Config tree): none can change unsaid."""

from __future__ import annotations

import dataclasses

import structlog

from onss_relay.config import Config, load_config
from onss_relay.errors import ConfigError

log = structlog.get_logger(__name__)

APPLIED = ("watch", "poll", "hooks", "retention")  # sections a reload applies now
NEEDS_RESTART = ("sender", "paths", "signing", "remote", "metrics", "journal")


def changed_keys(old: Config, new: Config, sections: tuple[str, ...]) -> list[str]:
    """Given two configurations, return the section.key names whose value differs, in those sections."""
    out = []
    for section in sections:
        a, b = getattr(old, section), getattr(new, section)
        out += [f"{section}.{f.name}" for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]
    return out


def reloaded(cfg: Config) -> Config | None:
    """Given the configuration in force, read its file again and return the configuration to run with now (its
    APPLIED sections taken from the file, the others kept), logging what applies and what needs a restart;
    None, logged, when the file no longer loads."""
    assert cfg.source is not None
    try:
        new = load_config(cfg.source)
    except ConfigError as e:
        log.error("reload_refused", error=str(e), detail="the running configuration stays in force")
        return None
    applied, changed = changed_keys(cfg, new, APPLIED), changed_keys(cfg, new, NEEDS_RESTART)
    if changed:
        log.warning(
            "reload_partial",
            applied=applied,
            needs_restart=changed,
            detail="restart the service to apply changes to " + ", ".join(changed),
        )
    else:
        log.info("reloaded", applied=applied or "nothing changed")
    return dataclasses.replace(cfg, **{section: getattr(new, section) for section in APPLIED})
