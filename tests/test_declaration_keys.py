"""The keys a declaration's answers may name it by are read from its FI at claim in constant memory, whatever
the shape of the file (review of issue 23, item 6)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from onss_relay.declaration_keys import CHUNK, MAX_FORMS, MAX_WORKERS, SMALL_CHUNK, declaration_keys


def flat_fi(path: Path, elements: int) -> Path:
    """An XML FI whose root holds ``elements`` leaf children and nothing deeper (no Form, no body)."""
    with path.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<DIMONA>')
        f.writelines(f"<Line>{i:020d}</Line>\n" for i in range(elements))
        f.write("</DIMONA>\n")
    return path


def keys_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        assert declaration_keys(path) == ()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_flat_fi_is_read_in_constant_memory(tmp_path: Path) -> None:
    small, large = flat_fi(tmp_path / "small.xml", 5_000), flat_fi(tmp_path / "large.xml", 200_000)
    assert large.stat().st_size > CHUNK
    peaks = keys_peak(small), keys_peak(large)
    # forty times the file, not forty times the memory: one buffer of CHUNK bytes at most, and a small file
    # gets a buffer of its size (a buffer of CHUNK zeroed twice per set was 40 % of claiming and signing's CPU)
    assert peaks[1] < CHUNK + 1_000_000 and peaks[0] < SMALL_CHUNK + 1_000_000 < CHUNK, peaks
    assert peaks[0] < large.stat().st_size / 20, peaks


def test_the_first_forms_head_is_still_read(tmp_path: Path) -> None:
    fi = tmp_path / "fi.xml"
    fi.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><DIMONA><Form><Identification>DIMONA</Identification>'
        "<FormCreationDate>2026-11-30</FormCreationDate><FormCreationHour>09:00:00.000</FormCreationHour>"
        "<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
        "<ReferenceNbr>REF-1</ReferenceNbr></Reference><DimonaIn><INSS>1</INSS></DimonaIn></Form></DIMONA>"
    )
    assert declaration_keys(fi) == (
        ("original_form", "DIMONA|2026-11-30|09:00:00.000"),
        ("sender_ref", "REF-1"),
    )


def dmfa_like(path: Path, forms: int, lines: int) -> Path:
    """An XML FI of ``forms`` Forms, each a head and a body of ``lines`` nested worker lines (at most 1,000
    workers: past that, a worker's further lines)."""
    with path.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<DmfAOriginal>')
        for n in range(forms):
            f.write(
                f"<Form><Identification>DMFA</Identification><FormCreationDate>2026-11-30</FormCreationDate>"
                f"<FormCreationHour>10:00:{n // 1000:02d}.{n % 1000:03d}</FormCreationHour><EmployerDeclaration>"
            )
            f.writelines(
                f"<NaturalPerson><INSS>{i % 1000:011d}</INSS><Line>x</Line></NaturalPerson>\n" for i in range(lines)
            )
            f.write("</EmployerDeclaration></Form>\n")
        f.write("</DmfAOriginal>\n")
    return path


def test_every_form_is_read_and_the_bodies_cost_no_memory(tmp_path: Path) -> None:
    """Every Form's HandledOriginalForm key is read, not only the first's; a Form's body as large as the whole
    file (several times the bytes scanned at a time) costs no more memory than a small one."""
    fi = dmfa_like(tmp_path / "three.xml", 3, 2)
    assert declaration_keys(fi) == (
        *(("original_form", f"DMFA|2026-11-30|10:00:00.00{n}") for n in range(3)),
        *(("worker", f"{i:011d}") for i in range(2)),  # each worker declared, for a search by INSS
    )

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            assert sum(k == "original_form" for k, _ in declaration_keys(path)) == 1
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = dmfa_like(tmp_path / "s.xml", 1, 5_000), dmfa_like(tmp_path / "l.xml", 1, 300_000)
    assert large.stat().st_size > 4 * CHUNK
    peaks = peak(small), peak(large)
    assert peaks[1] < CHUNK + 1_000_000 and peaks[1] < large.stat().st_size / 4, peaks


def test_a_sender_reference_in_a_second_reference_is_recorded(tmp_path: Path) -> None:
    """Issue 23, review 2: a Form head with another Reference first; the sender's own (type 1, origin 1)
    comes second and is recorded too."""
    fi = tmp_path / "fi.xml"
    fi.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><DIMONA><Form><Identification>DIMONA</Identification>'
        "<FormCreationDate>2026-11-30</FormCreationDate><FormCreationHour>09:00:00.000</FormCreationHour>"
        "<Reference><ReferenceType>3</ReferenceType><ReferenceOrigin>2</ReferenceOrigin>"
        "<ReferenceNbr>ONSS-9</ReferenceNbr></Reference>"
        "<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
        "<ReferenceNbr>REF-2</ReferenceNbr></Reference><DimonaIn><INSS>1</INSS></DimonaIn></Form></DIMONA>"
    )
    assert declaration_keys(fi) == (
        ("original_form", "DIMONA|2026-11-30|09:00:00.000"),
        ("sender_ref", "REF-2"),
    )


def test_a_utf16_fi_gets_its_keys(tmp_path: Path) -> None:
    """Issue 23, review 2: a UTF-16 declaration (with its byte-order mark) is transcoded and scanned."""
    fi = tmp_path / "fi.xml"
    fi.write_text(
        '<?xml version="1.0" encoding="UTF-16"?><DIMONA><Form><Identification>DIMONA</Identification>'
        "<FormCreationDate>2026-11-30</FormCreationDate><FormCreationHour>09:00:00.000</FormCreationHour>"
        "<Reference><ReferenceType>1</ReferenceType><ReferenceOrigin>1</ReferenceOrigin>"
        "<ReferenceNbr>RÉF-16</ReferenceNbr></Reference><DimonaIn><INSS>1</INSS></DimonaIn></Form></DIMONA>",
        encoding="utf-16",
    )
    assert declaration_keys(fi) == (
        ("original_form", "DIMONA|2026-11-30|09:00:00.000"),
        ("sender_ref", "RÉF-16"),
    )


def test_the_parts_of_a_set_are_read_as_one_declaration(tmp_path: Path) -> None:
    """Issue 23, review 2: a Form head cut between part 1 and part 2, and a prefix declared only in part 1's
    root, still give their keys (the parts' concatenation is the declaration); parts given out of order."""
    head = (
        "<d:Form><d:Identification>DIMONA</d:Identification><d:FormCreationDate>2026-11-30</d:FormCreationDate>"
        "<d:FormCreationHour>09:00:0{n}.000</d:FormCreationHour><d:DimonaIn><d:INSS>{n}</d:INSS></d:DimonaIn></d:Form>"
    )
    whole = (
        '<?xml version="1.0" encoding="UTF-8"?><d:DIMONA xmlns:d="urn:dimona">'
        + "".join(head.format(n=n) for n in (1, 2, 3))
        + "</d:DIMONA>"
    ).encode()
    cut = whole.index(b"2026-11-30", whole.index(b"09:00:01")) + 4  # inside the second Form's head
    one, two = tmp_path / "FI.DIMN.123456.20261130.00001.T.2.1", tmp_path / "FI.DIMN.123456.20261130.00001.T.2.2"
    one.write_bytes(whole[:cut])
    two.write_bytes(whole[cut:])
    assert declaration_keys(two, one) == tuple(
        ("original_form", f"DIMONA|2026-11-30|09:00:0{n}.000") for n in (1, 2, 3)
    )


def test_the_cap_counts_forms_not_keys(tmp_path: Path) -> None:
    """Issue 23, review 2: 20,001 Forms, each with its sender's reference: the first 20,000 Forms are recorded
    (both their keys), as the README says, not 10,000 Forms' worth of keys."""
    form = (
        "<Form><Identification>DIMONA</Identification><FormCreationDate>2026-11-30</FormCreationDate>"
        "<FormCreationHour>{n}</FormCreationHour><Reference><ReferenceType>1</ReferenceType>"
        "<ReferenceOrigin>1</ReferenceOrigin><ReferenceNbr>R{n}</ReferenceNbr></Reference><DimonaIn/></Form>"
    )
    fi = tmp_path / "fi.xml"
    with fi.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?><DIMONA>')
        f.writelines(form.format(n=n) for n in range(MAX_FORMS + 1))
        f.write("</DIMONA>")
    keys = declaration_keys(fi)
    assert MAX_FORMS == 20_000
    assert sum(k == "original_form" for k, _ in keys) == sum(k == "sender_ref" for k, _ in keys) == MAX_FORMS


def test_every_worker_declared_is_recorded_up_to_the_cap(tmp_path: Path) -> None:
    """Found by audit26 (a search by INSS found no Dimona its ACRF refused): each INSS element's worker is a key,
    with a namespace prefix or none, one cut by the end of a chunk too; an element merely ending in INSS, an
    INSS of the wrong length and an end tag are not; past MAX_WORKERS workers the rest are left out."""
    fi = tmp_path / "FI.xml"
    with fi.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<d:Dimona xmlns:d="urn:x"><d:Form>')
        f.write("<d:INSS>85073003328</d:INSS><WorkerINSS>11111111111</WorkerINSS><INSS>123</INSS>")
        f.write("x" * (CHUNK - f.tell() - 10) + "<INSS> 86010100123 </INSS>")  # cut by the chunk's end
        f.writelines(f"<INSS>{9 * 10**10 + i}</INSS>\n" for i in range(MAX_WORKERS + 5))
        f.write("</d:Form></d:Dimona>\n")
    workers = [v for k, v in declaration_keys(fi) if k == "worker"]
    assert workers[:3] == ["85073003328", "86010100123", "90000000000"]
    assert len(workers) == MAX_WORKERS == 20_000 and "11111111111" not in workers
