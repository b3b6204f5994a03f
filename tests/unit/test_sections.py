"""BODY[section] extraction from stored facts (RFC 9051 §6.4.5)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mailserverd.imap.commands.fetch import Section, parse_section
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.mail.facts import compute_facts
from mailserverd.mail.sections import header_fields_bytes, section_bytes

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "mime"


def _testdata_message(name: str) -> bytes:
    path = TESTDATA / name
    if not path.is_file():
        message = f"shared test data not found: {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must not skip)")
        pytest.skip(message)
    return re.sub(rb"\r?\n", b"\r\n", path.read_bytes())


def _section(spec: bytes) -> Section:
    """The section ``BODY[spec]`` names, read by the IMAP FETCH parser."""
    return parse_section(ArgCursor((b"[" + spec + b"]",)))


def _fetch(raw: bytes, spec: bytes) -> bytes | None:
    section = _section(spec)
    return section_bytes(raw, compute_facts(raw)["parts"], section.part, section.text, section.fields)


# rfc2060.eml is the part-numbering example of RFC 3501 §6.4.5 (kept in RFC
# 9051 §6.4.5): every leaf says which part specifier should reach it.
RFC_EXAMPLE_LEAVES = ["1", "2", "3.1", "3.2", "4.1", "4.2.1", "4.2.2.1", "4.2.2.2"]


@pytest.mark.parametrize("number", RFC_EXAMPLE_LEAVES)
def test_rfc_example_part_numbers(number):
    raw = _testdata_message("rfc2060.eml")
    expected = b"This part specifier should be: %s\r\n" % number.encode()
    assert _fetch(raw, number.encode()) == expected


def test_rfc_example_message_header_and_text():
    raw = _testdata_message("rfc2060.eml")
    header = _fetch(raw, b"HEADER")
    assert header.startswith(b"From: me@myself.com\r\n")
    assert header.endswith(b"boundary=\"x\"\r\n\r\n")
    text = _fetch(raw, b"TEXT")
    assert header + text == raw
    assert _fetch(raw, b"") == raw


def test_rfc_example_message_rfc822_parts():
    raw = _testdata_message("rfc2060.eml")
    header = _fetch(raw, b"3.HEADER")
    assert header.startswith(b"From: me@myself.com\r\n")
    assert b"Subject: This part specifier should be: 3\r\n" in header
    assert header.endswith(b"\r\n\r\n")
    text = _fetch(raw, b"3.TEXT")
    assert text.startswith(b"--3.x\r\n")
    assert text.endswith(b"--3.x--\r\n")
    assert _fetch(raw, b"3") == header + text
    assert _fetch(raw, b"3.MIME") == b"Content-Type: MESSAGE/RFC822\r\n\r\n"
    assert _fetch(raw, b"4.2.HEADER.FIELDS (subject)") == (
        b"Subject: This part specifier should be: 4.2\r\n\r\n")
    assert _fetch(raw, b"4.2.TEXT").startswith(b"--4.2.x\r\n")


def test_rfc_example_mime_headers():
    raw = _testdata_message("rfc2060.eml")
    assert _fetch(raw, b"4.1.MIME") == b"Content-Type: IMAGE/GIF\r\n\r\n"
    assert _fetch(raw, b"4.MIME") == b'Content-Type: MULTIPART/MIXED; boundary="4.x"\r\n\r\n'
    assert _fetch(raw, b"4.2.2.MIME").startswith(b"Content-Type: MULTIPART/ALTERNATIVE")


@pytest.mark.parametrize("spec", [b"5", b"4.3", b"1.HEADER", b"1.TEXT", b"4.1.HEADER",
                                  b"1.2", b"4.2.3", b"0"])
def test_rfc_example_missing_sections(spec):
    raw = _testdata_message("rfc2060.eml")
    try:
        section = _section(spec)
    except ParseError:
        assert spec == b"0"
        return
    assert section_bytes(raw, compute_facts(raw)["parts"], section.part, section.text, section.fields) is None


def test_embedded_message_from_testdata():
    raw = _testdata_message("simple-embedded-message.eml")
    assert _fetch(raw, b"1") == b"This is the message body.\r\n"
    assert _fetch(raw, b"2.HEADER.FIELDS (SUBJECT)") == b"Subject: embedded message\r\n\r\n"
    assert _fetch(raw, b"2.1") == b"This is the embedded message body.\r\n"
    assert _fetch(raw, b"2.TEXT") == b"This is the embedded message body.\r\n"
    assert _fetch(raw, b"2.1.MIME") == _fetch(raw, b"2.HEADER")


SIMPLE = (b"From: a@example.org\r\n"
          b"Subject: folded\r\n\tsubject line\r\n"
          b"X-Other: 1\r\n"
          b"sUbJeCt: second\r\n"
          b"\r\n"
          b"body line 1\r\nbody line 2\r\n")


def test_non_multipart_message_has_part_one_its_body():
    assert _fetch(SIMPLE, b"1") == b"body line 1\r\nbody line 2\r\n"
    assert _fetch(SIMPLE, b"1") == _fetch(SIMPLE, b"TEXT")
    assert _fetch(SIMPLE, b"1.MIME") == _fetch(SIMPLE, b"HEADER")
    assert _fetch(SIMPLE, b"2") is None
    assert _fetch(SIMPLE, b"1.HEADER") is None


def test_header_fields_case_insensitive_with_continuations():
    assert _fetch(SIMPLE, b"HEADER.FIELDS (SUBJECT)") == (
        b"Subject: folded\r\n\tsubject line\r\nsUbJeCt: second\r\n\r\n")
    assert _fetch(SIMPLE, b'HEADER.FIELDS ("x-other" FROM)') == (
        b"From: a@example.org\r\nX-Other: 1\r\n\r\n")
    assert _fetch(SIMPLE, b"HEADER.FIELDS (NOPE)") == b"\r\n"


def test_header_fields_not():
    assert _fetch(SIMPLE, b"HEADER.FIELDS.NOT (subject from)") == b"X-Other: 1\r\n\r\n"


def test_top_level_message_rfc822():
    inner = b"Subject: inner\r\nContent-Type: text/plain\r\n\r\ninner body\r\n"
    raw = b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner
    assert _fetch(raw, b"1") == inner
    assert _fetch(raw, b"1.HEADER") == b"Subject: inner\r\nContent-Type: text/plain\r\n\r\n"
    assert _fetch(raw, b"1.TEXT") == b"inner body\r\n"
    assert _fetch(raw, b"1.1") == b"inner body\r\n"
    assert _fetch(raw, b"HEADER.FIELDS (SUBJECT)") == b"Subject: outer\r\n\r\n"


def test_part_header_without_blank_line_ends_at_boundary():
    raw = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/plain\r\n--b\r\n\r\nsecond\r\n--b--\r\n")
    assert _fetch(raw, b"1.MIME") == b"Content-Type: text/plain\r\n"
    assert _fetch(raw, b"1") == b""
    assert _fetch(raw, b"2") == b"second"


def test_header_fields_bytes_adds_missing_line_break():
    assert header_fields_bytes(b"Subject: x", [b"subject"]) == b"Subject: x\r\n\r\n"


@pytest.mark.parametrize("spec,expected", [
    (b"", ((), "", ())),
    (b"HEADER", ((), "HEADER", ())),
    (b"text", ((), "TEXT", ())),
    (b"1.2.3", ((1, 2, 3), "", ())),
    (b"1.MIME", ((1,), "MIME", ())),
    (b"2.HEADER.FIELDS (Subject \"From\")", ((2,), "HEADER.FIELDS", (b"Subject", b"From"))),
    (b"HEADER.FIELDS.NOT (X-A)", ((), "HEADER.FIELDS.NOT", (b"X-A",))),
])
def test_parse_section(spec, expected):
    assert _section(spec) == Section(*expected)


@pytest.mark.parametrize("spec", [b"MIME", b"HEADER.FIELDS", b"HEADER.FIELDS ()", b"1..2",
                                  b"TEXT (A)", b"1.BOGUS", b"01", b"HEADERX"])
def test_parse_section_rejects(spec):
    with pytest.raises(ParseError):
        _section(spec)


def test_section_bytes_rejects_unknown_text():
    with pytest.raises(ValueError):
        section_bytes(SIMPLE, compute_facts(SIMPLE)["parts"], (), "BOGUS")
