"""A typed change of a set's data: which SetData fields to set, each checked by mypy (a wrong name or type is
an error before the code runs, not a TypeError in the middle of a transaction). What the journal's
transition, transition_many and update_data take; the fields mirror SetData's (a test holds them equal)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # model.py imports this module: its types are only needed by the checker
    from onss_relay.journal.model import AcrfRecord, AnswerRecord, NotificationRecord, SetData, Uncertain


class Keep(enum.Enum):
    """The value of a DataChange field that leaves the set's value as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclasses.dataclass(frozen=True)
class DataChange:
    """The SetData fields to set (see SetData for their meaning); a field left KEEP keeps the set's value, None
    is a value (``uncertain=None`` clears it)."""

    sizes: Mapping[str, int] | Keep = KEEP
    mtimes: Mapping[str, int] | Keep = KEEP
    extras: tuple[str, ...] | Keep = KEEP
    identities: Mapping[str, tuple[int, int]] | Keep = KEEP
    fs: tuple[str, ...] | Keep = KEEP
    digests: Mapping[str, str] | Keep = KEEP
    sent_dir: str | None | Keep = KEEP
    acrf: AcrfRecord | None | Keep = KEEP
    notifications: tuple[NotificationRecord, ...] | Keep = KEEP
    other_responses: tuple[str, ...] | Keep = KEEP
    answers: tuple[AnswerRecord, ...] | Keep = KEEP
    warnings: tuple[str, ...] | Keep = KEEP
    uncertain: Uncertain | None | Keep = KEEP
    content: str | None | Keep = KEEP
    same_content_ok: bool | Keep = KEEP

    def applied_to(self, data: SetData) -> SetData:
        """Given a set's data, return a copy with the fields this change sets; ``data`` itself when it already
        holds every value this change sets, of the same type (a gate's ``uncertain=None``: the journal then
        keeps the text it has stored instead of writing the same again)."""
        given = {}
        for name in field_names(DataChange):
            value = getattr(self, name)
            if value is KEEP:
                continue
            held = getattr(data, name)
            if type(value) is not type(held) or value != held:
                given[name] = value
        return dataclasses.replace(data, **given) if given else data


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """Given a dataclass, return its fields' names in declaration order (``dataclasses.fields`` builds them
    anew at each call: three times per set signed, twice per gate passed)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names
