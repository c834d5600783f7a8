"""The code tables the ONSS answers with, shipped as data (onss_relay/data/*.tsv): what each code means.

The ONSS sends codes, not words: ACRF ErrorIDs, ResultCodes, anomaly classes. Unknown codes are shown
with their code and said to be unknown, never dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
from functools import cache

UNKNOWN = "code not in our table; see the ONSS documentation"


def _table(name: str) -> list[dict[str, str]]:
    text = importlib.resources.files("onss_relay.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


@cache
def acrf_descriptions() -> dict[str, str]:
    """Return the ACRF code table (ACRF-125 → words) shipped with the package."""
    return {r["code"]: r["description"] for r in _table("acrf-codes.tsv")}


def describe(code: str) -> str:
    """Given an ACRF error code, return it with its description, or say it is not in our table."""
    return f"{code}: {acrf_descriptions().get(code, UNKNOWN)}"


@dataclasses.dataclass(frozen=True)
class ResultCode:
    code: str
    outcome: str  # accepted, refused or pending (a final answer follows)
    meaning: str


@cache
def result_codes() -> dict[str, ResultCode]:
    """Return the ResultCode table (ACRF and notifications): 0 refused, 1 accepted, 2 proposal, 3 temporary, 4 timeout."""
    return {r["code"]: ResultCode(r["code"], r["outcome"], r["meaning"]) for r in _table("result-codes.tsv")}


def result_code(code: str | None) -> ResultCode:
    """Given a ResultCode value (or None), return its meaning; an unknown one is neither accepted nor final."""
    if code is None:
        return ResultCode("?", "pending", "no ResultCode in the answer")
    return result_codes().get(code, ResultCode(code, "pending", UNKNOWN))


@dataclasses.dataclass(frozen=True)
class AnomalyClass:
    code: str
    blocking: bool
    meaning: str


@cache
def anomaly_classes() -> dict[str, AnomalyClass]:
    """Return the anomaly class table: B blocking, NB non-blocking, W warning … (only blocking ones block)."""
    return {
        r["class"]: AnomalyClass(r["class"], r["blocking"] == "yes", r["meaning"])
        for r in _table("anomaly-classes.tsv")
    }


def anomaly_class(code: str | None) -> AnomalyClass:
    """Given an AnomalyClass value, return its meaning; an unknown class is shown as such and does not block."""
    if code is None:
        return AnomalyClass("?", False, "no class given")
    return anomaly_classes().get(code, AnomalyClass(code, False, UNKNOWN))
