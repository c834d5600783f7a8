"""The code tables the ONSS answers with, shipped as data (onss_relay/data/*.tsv): what each code means.

The ONSS sends codes, not words: ACRF ErrorIDs, ResultCodes, anomaly classes,
anomaly codes (zone + kind), Diagnosis, TypeForm. Unknown codes are shown
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


def acrf_meaning(code: str) -> str:
    """Given an ACRF error code (ACRF-125), return its meaning: the ACRF table's, else its kind's (the kinds are
    shared with the anomaly codes), else say it is not in our table."""
    if code in acrf_descriptions():
        return acrf_descriptions()[code]
    kind = code.rpartition("-")[2]
    return anomaly_kinds().get(kind, f"{UNKNOWN} (kind {kind})" if kind.isdigit() else UNKNOWN)


def describe(code: str) -> str:
    """Given an ACRF error code, return it with its meaning, or say it is not in our table."""
    return f"{code}: {acrf_meaning(code)}"


@cache
def anomaly_zones() -> dict[str, str]:
    """Return the zone table (00237 → AccidentDate): the field an anomaly code's first number names."""
    return {r["zone"]: r["name"] for r in _table("anomaly-zones.tsv")}


@cache
def anomaly_kinds() -> dict[str, str]:
    """Return the table of error kinds (008 → not in the allowed domain), shared by every zone and the ACRF."""
    return {r["kind"]: r["meaning"] for r in _table("anomaly-kinds.tsv")}


def explain_anomaly(error_id: str) -> str:
    """Given an anomaly code ZZZZZ-NNN, return the zone's name and the kind's meaning ("AccidentDate: not in the
    allowed domain"); a zone not in our table reads "zone ZZZZZ", an ACRF code reads as the ACRF table says."""
    if error_id.startswith("ACRF-"):
        return acrf_meaning(error_id)
    zone, _, kind = error_id.partition("-")
    name = anomaly_zones().get(zone, f"zone {zone}")
    acrf_same_kind = acrf_descriptions().get(f"ACRF-{kind}")
    meaning = anomaly_kinds().get(kind) or acrf_same_kind or f"kind {kind or '?'} is not in our table"
    return f"{name}: {meaning}"


@cache
def diagnoses() -> dict[str, str]:
    """Return the Diagnosis table (zone 00232): why a declaration was refused, 0 to 9."""
    return {r["code"]: r["meaning"] for r in _table("diagnosis-codes.tsv")}


def diagnosis(code: str | None) -> str:
    """Given a Diagnosis value (or None), return its meaning ("" when there is none)."""
    if code is None:
        return ""
    return diagnoses().get(code, f"diagnosis {code}: {UNKNOWN}")


@cache
def type_forms() -> dict[str, str]:
    """Return the TypeForm table (zone 00297): RE request, PA provisional answer, FA final answer …"""
    return {r["code"]: r["meaning"] for r in _table("type-forms.tsv")}


def type_form(code: str | None) -> str:
    """Given a TypeForm value (or None), return its meaning ("" when there is none)."""
    if code is None:
        return ""
    return type_forms().get(code, f"type {code}: {UNKNOWN}")


@dataclasses.dataclass(frozen=True)
class ResultCode:
    code: str
    outcome: str  # accepted, refused or pending (a final answer follows)
    meaning: str


@cache
def result_codes() -> dict[str, ResultCode]:
    """Return the ResultCode table (zone 00107): 0 refused, 1 accepted, 2 a proposal to validate (pending),
    3 temporary, 4 timeout."""
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
    """Return the anomaly class table (zone 00497): B blocking, P percentage, NP non-percentage, D reduction
    right, W warning, I investigation, NB non-blocking (only blocking ones block)."""
    return {
        r["class"]: AnomalyClass(r["class"], r["blocking"] == "yes", r["meaning"])
        for r in _table("anomaly-classes.tsv")
    }


def anomaly_class(code: str | None) -> AnomalyClass:
    """Given an AnomalyClass value, return its meaning; an unknown class is shown as such and does not block."""
    if code is None:
        return AnomalyClass("?", False, "no class given")
    return anomaly_classes().get(code, AnomalyClass(code, False, UNKNOWN))


def what_it_names(
    file_name: str | None,
    tickets: list[str],
    result: str | None = None,
    errors: tuple[str, ...] = (),
    handled_form: str | None = None,
    sender_ref: str | None = None,
    candidates: tuple[str, ...] = (),
) -> str:
    """Given what an answer that matches no set carries (the FileName, the tickets, the ResultCode and error
    codes, the HandledOriginalForm and sender's reference it names, the sets it may be about), return it in one
    line, so that a person can find the declaration it is about."""
    parts = [f"FileName {file_name}"] if file_name else ["no FileName"]
    shown = list(dict.fromkeys(t for t in tickets if t))
    parts.append(f"tickets {', '.join(shown[:5])}" + (" …" if len(shown) > 5 else "") if shown else "no ticket")
    if handled_form:
        parts.append(f"HandledOriginalForm {handled_form}")
    if sender_ref:
        parts.append(f"sender reference {sender_ref}")
    if result is not None:
        parts.append(f"result {result} ({result_code(result).meaning})")
    parts += [describe(e) for e in errors[:3]]
    if candidates:
        shown_sets = ", ".join(candidates[:5]) + (" …" if len(candidates) > 5 else "")
        parts.append(f"ambiguous: it may answer any of {shown_sets}")
    return "names " + "; ".join(parts)
