"""FETCH extension items: BINARY (RFC 3516), EMAILID/THREADID (RFC 8474), PREVIEW (RFC 8970), SAVEDATE (RFC 8514)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from mailserverd.imap import objectid
from mailserverd.imap.commands import fetch_items
from mailserverd.mail.facts import compute_facts
from mailserverd.store.types import MailboxInfo

from conftest import require_shared
from imap_fakes import USER, Harness

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"

BASE64_TEXT = base64.encodebytes("Grüße\nzweite Zeile\n".encode("utf-8")).replace(b"\n", b"\r\n")
BINARY_DATA = bytes(range(256)) * 2
MIXED = (b"From: bob@example.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
         b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         + BASE64_TEXT +
         b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"caf=E9 au lait, tr=\r\nes bien\r\n"
         b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         + base64.encodebytes(BINARY_DATA).replace(b"\n", b"\r\n") +
         b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
         b"Subject: inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         b"aW5uZXIgYm9keQ==\r\n"
         b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
         b"begin 644 x\r\n--XX--\r\n")
SINGLE_BASE64 = (b"Subject: one\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                 b"aGVsbG8gd29ybGQ=\r\n")
ALTERNATIVE = (b"Subject: alt\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
               b"--B\r\nContent-Type: text/html\r\n\r\n<html><head><style>p {}</style></head>"
               b"<body><p>HTML &amp; text</p></body></html>\r\n"
               b"--B\r\nContent-Type: text/plain\r\n\r\n  Plain\r\n\r\n\ttext   here \r\n--B--\r\n")
HTML_ONLY = (b"Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
             b"<div>Hello&nbsp;<b>world</b><!-- hidden --><script>var x;</script></div>\r\n")
IMAGE_ONLY = b"Subject: img\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n"
ATTACHED_TEXT = (b"Subject: att\r\nContent-Type: multipart/mixed; boundary=C\r\n\r\n"
                 b"--C\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\n"
                 b"attached file\r\n--C\r\nContent-Type: text/plain\r\n\r\nthe body\r\n--C--\r\n")
LONG_TEXT = b"Subject: long\r\n\r\n" + b"word " * 300 + b"\r\n"


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    for raw in (MIXED, SINGLE_BASE64, ALTERNATIVE, HTML_ONLY, IMAGE_ONLY, ATTACHED_TEXT, LONG_TEXT, MIXED):
        harness.store.add_message(USER, "INBOX", raw)
    harness.select()
    return harness


def single(reply: bytes, tag: bytes = b"a") -> bytes:
    """The content of the one ``* n FETCH (...)`` in ``reply``, after checking the tagged OK."""
    assert reply.endswith(tag + b" OK Fetch completed\r\n"), reply
    match = re.match(rb"\* \d+ FETCH \((.*)\)\r\n" + tag + rb" OK", reply, re.S)
    assert match, reply
    return match.group(1)


# ------------------------------------------------------------------ BINARY

def test_binary_peek_decodes_base64_text_with_crlf_and_keeps_unseen(h):
    expected = "Grüße\r\nzweite Zeile\r\n".encode("utf-8")
    assert single(h.c(b"a FETCH 1 BINARY.PEEK[1]\r\n")) == b"BINARY[1] {%d}\r\n%s" % (len(expected), expected)
    assert "\\Seen" not in h.store.get_message(USER, 1, 1).flags


def test_binary_sets_seen_and_reports_flags(h):
    reply = h.c(b"a FETCH 2 BINARY[1]\r\n")
    assert reply == b"* 2 FETCH (BINARY[1] {11}\r\nhello world FLAGS (\\Seen))\r\na OK Fetch completed\r\n"
    assert "\\Seen" in h.store.get_message(USER, 1, 2).flags


def test_binary_quoted_printable_and_partial_on_decoded_bytes(h):
    assert single(h.c(b"a FETCH 1 BINARY.PEEK[2]\r\n")) == b"BINARY[2] {23}\r\ncaf\xe9 au lait, tres bien"
    assert single(h.c(b"b FETCH 1 BINARY.PEEK[2]<3.4>\r\n"), b"b") == b"BINARY[2]<3> {4}\r\n\xe9 au"
    assert single(h.c(b"c FETCH 1 BINARY.PEEK[2]<100.4>\r\n"), b"c") == b"BINARY[2]<100> {0}\r\n"


def test_binary_with_nul_is_a_literal8(h):
    assert single(h.c(b"a FETCH 1 BINARY.PEEK[3]\r\n")) == b"BINARY[3] ~{512}\r\n" + BINARY_DATA


def test_binary_size_matches_binary(h):
    for part in (b"1", b"2", b"3", b"4", b"4.1"):
        value = single(h.c(b"a FETCH 1 BINARY.PEEK[" + part + b"]\r\n"))
        size = int(re.search(rb"~?\{(\d+)\}\r\n", value).group(1))
        assert single(h.c(b"a FETCH 1 BINARY.SIZE[" + part + b"]\r\n")) == b"BINARY.SIZE[%s] %d" % (part, size)
    assert single(h.c(b"a FETCH 1 BINARY.SIZE[3]\r\n")) == b"BINARY.SIZE[3] 512"


def test_binary_inside_an_attached_message(h):
    assert single(h.c(b"a FETCH 1 BINARY.PEEK[4.1]\r\n")) == b"BINARY[4.1] {10}\r\ninner body"


def test_binary_of_message_and_multipart_parts_is_the_stored_bytes(h):
    body = single(h.c(b"a FETCH 1 BODY.PEEK[4]\r\n"))
    binary = single(h.c(b"b FETCH 1 BINARY.PEEK[4]\r\n"), b"b")
    assert binary == body.replace(b"BODY[4]", b"BINARY[4]", 1)
    whole = single(h.c(b"c FETCH 1 BINARY.PEEK[]\r\n"), b"c")
    assert whole == b"BINARY[] {%d}\r\n%s" % (len(MIXED), MIXED)


def test_binary_of_a_single_part_message_decodes_its_body(h):
    header = SINGLE_BASE64[:SINGLE_BASE64.index(b"\r\n\r\n") + 4]
    expected = header + b"hello world"
    assert single(h.c(b"a FETCH 2 BINARY.PEEK[]\r\n")) == b"BINARY[] {%d}\r\n%s" % (len(expected), expected)


def test_unknown_transfer_encoding_is_no_unknown_cte(h):
    assert h.c(b"a FETCH 1 BINARY.PEEK[5]\r\n") == b"a NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    assert h.c(b"b FETCH 1 BINARY.SIZE[5]\r\n") == b"b NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    # BODY[] of the same part is fine: only decoding is impossible.
    assert single(h.c(b"c FETCH 1 BODY.PEEK[5]\r\n"), b"c") == b"BODY[5] {11}\r\nbegin 644 x"


def test_missing_part_is_nil(h):
    assert single(h.c(b"a FETCH 1 (BINARY.PEEK[9] BINARY.SIZE[9])\r\n")) == b"BINARY[9] NIL BINARY.SIZE[9] 0"
    assert single(h.c(b"b FETCH 2 BINARY.PEEK[2]\r\n"), b"b") == b"BINARY[2] NIL"


def test_uid_fetch_binary_and_lowercase_names(h):
    reply = h.c(b"a UID FETCH 2 (binary.peek[1] binary.size[1])\r\n")
    assert single(reply) == b"UID 2 BINARY[1] {11}\r\nhello world BINARY.SIZE[1] 11"


@pytest.mark.parametrize("command,reply", [
    (b"a FETCH 1 BINARY", b"a BAD Expected '[' after BINARY"),
    (b"a FETCH 1 BINARY.PEEK", b"a BAD Expected '[' after BINARY"),
    (b"a FETCH 1 BINARY[TEXT]", b"a BAD BINARY takes part numbers only"),
    (b"a FETCH 1 BINARY[1.MIME]", b"a BAD BINARY takes part numbers only"),
    (b"a FETCH 1 BINARY[0]", b"a BAD Invalid section part number"),
    (b"a FETCH 1 BINARY[1]<1.0>", b"a BAD Expected a non-zero number"),
    (b"a FETCH 1 BINARY.SIZE[1]<0.1>", b"a BAD Expected a space between arguments"),
    (b"a FETCH 1 (BINARY.SIZE[1]<0.1>)", b"a BAD Expected a space between arguments"),
    (b"a FETCH 1 EMAILID[1]", b"a BAD Invalid fetch attribute"),
    (b"a FETCH 1 PREVIEW ()", b"a BAD Unknown PREVIEW modifier"),
    (b"a FETCH 1 PREVIEW (FAST)", b"a BAD Unknown PREVIEW modifier"),
    (b"a FETCH 1 (PREVIEW (LAZY)", b"a BAD Expected a space between arguments"),
    (b"a FETCH 1 (PREVIEW (LAZY LAZY X))", b"a BAD Unknown PREVIEW modifier"),
])
def test_syntax_errors(h, command, reply):
    got = h.c(command + b"\r\n")
    assert got.startswith(b"a BAD"), got
    assert got == reply + b"\r\n"


# ---------------------------------------------------------------- OBJECTID

def test_emailid_is_stable_per_content_and_threadid_is_nil(h):
    reply = h.c(b"a FETCH 1:8 (EMAILID THREADID)\r\n")
    ids = re.findall(rb"\* (\d+) FETCH \(EMAILID \((M[0-9a-f]{24})\) THREADID NIL\)\r\n", reply)
    assert len(ids) == 8
    by_seq = dict(ids)
    assert by_seq[b"1"] == by_seq[b"8"]  # the same content (RFC 8474 §5.1 allows one id)
    assert len(set(by_seq.values())) == 7
    # RFC 8474 §7: objectid = 1*255(ALPHA / DIGIT / "_" / "-")
    assert all(re.fullmatch(rb"[A-Za-z0-9_-]{1,255}", value) for value in by_seq.values())


def test_mailbox_objectid():
    info = MailboxInfo(mailbox_id=7, name="INBOX", uidvalidity=0x65A1B2C3, uidnext=1, highestmodseq=1,
                       messages=0, unseen=0, size=0, subscribed=True, special_use=None)
    assert objectid.mailbox_objectid(info) == b"F65a1b2c3-7"
    other = MailboxInfo(**{**info.__dict__, "mailbox_id": 8})
    assert objectid.mailbox_objectid(other) != objectid.mailbox_objectid(info)


def test_savedate_is_nil(h):
    assert single(h.c(b"a FETCH 1 (UID SAVEDATE)\r\n")) == b"UID 1 SAVEDATE NIL"


# ----------------------------------------------------------------- PREVIEW

def test_preview_prefers_plain_text_and_folds_white_space(h):
    assert single(h.c(b"a FETCH 3 PREVIEW\r\n")) == b'PREVIEW "Plain text here"'


def test_preview_of_html_drops_markup_and_decodes_entities(h):
    assert single(h.c(b"a FETCH 4 (PREVIEW (LAZY))\r\n")) == b'PREVIEW "Hello world"'


def test_preview_decodes_transfer_encoding_and_charset_to_utf8(h):
    value = single(h.c(b"a FETCH 1 PREVIEW\r\n"))
    text = "Grüße zweite Zeile".encode("utf-8")
    assert value == b"PREVIEW {%d}\r\n%s" % (len(text), text)


def test_preview_empty_without_text_and_skips_attachments(h):
    assert single(h.c(b"a FETCH 5 PREVIEW\r\n")) == b'PREVIEW ""'
    assert single(h.c(b"b FETCH 6 PREVIEW\r\n"), b"b") == b'PREVIEW "the body"'


def test_preview_is_at_most_200_characters(h):
    value = single(h.c(b"a FETCH 7 (PREVIEW UID)\r\n"))
    text = re.match(rb"PREVIEW \{(\d+)\}\r\n", value)
    assert text and int(text.group(1)) == 200, value
    assert value.endswith(b" UID 7")


def test_preview_with_other_items_and_lazy_in_a_list(h):
    value = single(h.c(b"a FETCH 2 (FLAGS PREVIEW (lazy) EMAILID)\r\n"))
    assert value.startswith(b'FLAGS () PREVIEW "hello world" EMAILID (M')


# --------------------------------------------- every message of the corpus

def _corpus():
    folder = SHARED / "testdata" / "mime"
    return sorted(path.name for path in folder.glob("*.eml")) if folder.is_dir() else ["shared-data-missing"]


def _leaf_paths(node: list, structure, path=()):
    if fetch_items._is_multipart(structure):
        for number, (child, child_structure) in enumerate(
                zip(node[3], structure[0]["cat"]), start=1):
            yield from _leaf_paths(child, child_structure, path + (number,))
    elif fetch_items._is_message_node(node) and isinstance(structure[8], list):
        yield from _leaf_paths(node[3][0], structure[8], path + (1,) if path else (1,))
    else:
        yield path or (1,)


@pytest.mark.parametrize("name", _corpus())
def test_every_corpus_message_gives_binary_and_preview(name):
    if name == "shared-data-missing":
        require_shared()
    raw = re.sub(rb"\r?\n", b"\r\n", (SHARED / "testdata" / "mime" / name).read_bytes())
    facts = compute_facts(raw)
    preview = fetch_items.preview_text(raw, facts)
    assert len(preview) <= fetch_items.PREVIEW_CHARS_MAX
    assert "\r" not in preview and "\n" not in preview and "  " not in preview
    h = Harness()
    h.store.add_message(USER, "INBOX", raw)
    h.select()
    for path in _leaf_paths(facts["parts"], facts["bodystructure"]):
        spec = b".".join(b"%d" % number for number in path)
        reply = h.c(b"a FETCH 1 (BINARY.SIZE[%s] BINARY.PEEK[%s])\r\n" % (spec, spec))
        if reply.startswith(b"a NO [UNKNOWN-CTE]"):
            continue
        value = single(reply)
        size = int(re.match(rb"BINARY\.SIZE\[[\d.]*\] (\d+)", value).group(1))
        literal = re.search(rb"BINARY\[[\d.]*\] (?:NIL|~?\{(\d+)\}\r\n)", value)
        assert literal, value
        assert int(literal.group(1) or 0) == size
