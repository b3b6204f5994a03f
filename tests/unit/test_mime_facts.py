"""IMAP facts (RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, HEADER.FIELDS) against
a reference server.

The shared test data holds 68 messages and what Dovecot 2.3.19 answered for
each; every item must match, or differ only where Dovecot departs from the RFC
and the difference is listed in EXPECTED_DIFFERENCES with the section that
decides it.  Items are compared twice: as parsed value trees, and byte for
byte (every space and parenthesis; only the choice between a quoted string
and a literal, which RFC 9051 §4.3 leaves to the server, is ours).  Also:
facts never raise on hostile input and stay inside the message.
"""

from __future__ import annotations

import re

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dovecot_oracle import (
    EXPECTED_DIFFERENCES,
    FACT_ITEMS,
    HEADER_FIELDS_ITEM,
    MESSAGE_NAMES,
    MESSAGES_DIR,
    ORACLE,
    expected_bytes,
    expected_value,
    marked_child,
    marked_tree,
    message_bytes,
    reference_bytes,
    reference_value,
    require_oracle,
    tokens,
    with_our_strings,
)
from mailserverd.imap import wire
from mailserverd.imap.wire import parse_values, plain, run, serialize
from mailserverd.mail import facts as facts_module
from mailserverd.mail import mime
from mailserverd.mail.facts import compute_facts, envelope_of, parse_address_list
from mailserverd.mail.sections import section_bytes


@pytest.fixture(scope="module")
def facts_by_message() -> dict:
    require_oracle()
    return {name: compute_facts(message_bytes(name)) for name in ORACLE}


def test_reference_data_is_complete():
    require_oracle()
    assert len(ORACLE) == 68
    for name in ORACLE:
        assert (MESSAGES_DIR / name).is_file(), name


@pytest.mark.parametrize("item", sorted(FACT_ITEMS))
@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_fact_matches_reference_server(facts_by_message, name, item):
    ours = parse_values(serialize(facts_by_message[name][FACT_ITEMS[item]]))
    assert len(ours) == 1
    assert ours[0] == expected_value(name, item)
    if (name, item) in EXPECTED_DIFFERENCES:
        assert ours[0] != reference_value(name, item)


@pytest.mark.parametrize("item", ["ENVELOPE", "BODY", "BODYSTRUCTURE"])
@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_fact_bytes_match_reference_server(facts_by_message, name, item):
    """Byte for byte, modulo quoted-vs-literal: catches spacing the trees hide
    (RFC 9051 §9: multipart parts and address lists are back to back)."""
    ours = serialize(facts_by_message[name][FACT_ITEMS[item]])
    assert ours == expected_bytes(name, item)
    if (name, item) in EXPECTED_DIFFERENCES:
        assert ours != reference_bytes(name, item)


def test_byte_comparison_sees_spacing():
    """The byte test would fail on the old space-separated parts and addresses."""
    theirs = with_our_strings(tokens(b'(("A" NIL "a" "x.test")("B" NIL "b" "x.test"))'))
    assert theirs == b'(("A" NIL "a" "x.test")("B" NIL "b" "x.test"))'
    spaced = [[b"A", None, b"a", b"x.test"], [b"B", None, b"b", b"x.test"]]
    assert serialize(spaced) != theirs
    assert serialize([run(spaced)]) == theirs
    assert with_our_strings(tokens(b'({3}\r\na"b "x\\"y")')) == b'({3}\r\na"b {3}\r\nx"y)'
    tree = marked_tree(tokens(b'((1)(2) "m" ((3)(4)) NIL)'))
    assert tree == [run([[1], [2]]), b"m", [run([[3], [4]])], None]
    assert marked_child(tree, 1) == (tree[0][wire.RUN_KEY], 1)
    assert marked_child(tree, 2) == (tree, 1)


def test_facts_use_the_wire_run_marker():
    assert facts_module._RUN_KEY == wire.RUN_KEY


def test_expected_differences_name_their_rfc():
    for (name, item), (section, _path, _lines) in EXPECTED_DIFFERENCES.items():
        assert item in FACT_ITEMS and name.endswith(".eml")
        assert re.fullmatch(r"RFC \d+ §[\d.]+", section)


@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_header_fields_match_reference_server(facts_by_message, name):
    raw = message_bytes(name)
    ours = section_bytes(raw, facts_by_message[name]["parts"], (), "HEADER.FIELDS",
                         (b"SUBJECT", b"FROM"))
    assert ours == reference_value(name, HEADER_FIELDS_ITEM)


@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_facts_are_plain_msgpack_data(facts_by_message, name):
    facts = facts_by_message[name]
    assert facts["v"] == 2
    assert msgpack.unpackb(msgpack.packb(facts, use_bin_type=True), raw=False) == facts


# ----------------------------------------------------------- hand-made cases
def test_envelope_of_simple_message():
    raw = (b"Date: Tue, 2 Jan 2024 03:04:05 +0000\r\n"
           b"Subject: hello\r\n\tworld\r\n"
           b'From: "Doe, John" <john@example.org>\r\n'
           b"To: undisclosed:;, a@b.example (Ann), c\r\n"
           b"Message-ID: <x@y>\r\n\r\nbody\r\n")
    envelope = compute_facts(raw)["envelope"]
    doe = [run([[b"Doe, John", None, b"john", b"example.org"]])]
    assert envelope == [
        b"Tue, 2 Jan 2024 03:04:05 +0000", b"hello world", doe, doe, doe,
        [run([[None, None, b"undisclosed", None], [None, None, None, None],
              [b"Ann", None, b"a", b"b.example"], [None, None, b"c", b"MISSING_DOMAIN"]])],
        None, None, None, b"<x@y>"]
    assert serialize(envelope[5]) == (  # RFC 9051 §9 env-to: addresses back to back
        b'((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL)'
        b'("Ann" NIL "a" "b.example")(NIL NIL "c" "MISSING_DOMAIN"))')


def test_address_parsing_keeps_encoded_words_and_8bit():
    assert parse_address_list(b"=?utf-8?q?J=C3=B6rg?= <j@example.org>") == [
        [b"=?utf-8?q?J=C3=B6rg?=", None, b"j", b"example.org"]]
    assert parse_address_list("Jörg <jörg@exämple.org>".encode()) == [
        ["Jörg".encode(), None, "jörg".encode(), "exämple.org".encode()]]


def test_address_parsing_route_quoted_local_part_and_syntax_error():
    assert parse_address_list(b"<@relay.example:\"a b\"@example.org>") == [
        [None, b"@relay.example", b"a b", b"example.org"]]
    assert parse_address_list(b"<no domain here>") == [
        [None, None, b"no", b"SYNTAX_ERROR"]]
    assert parse_address_list(b"") is None
    assert parse_address_list(b"  (just a comment) ") is None


def test_multiple_address_fields_are_merged_and_sender_defaults_to_from():
    fields = [(b"from", b"a@x.example"), (b"cc", b"b@x.example"), (b"cc", b"c@x.example")]
    envelope = plain(envelope_of(fields))
    assert envelope[3] == envelope[2] == envelope[4] == [[None, None, b"a", b"x.example"]]
    assert envelope[6] == [[None, None, b"b", b"x.example"], [None, None, b"c", b"x.example"]]


def test_bodystructure_of_multipart_with_extension_data():
    raw = (b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
           b"preamble\r\n--b\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Language: en, de\r\n"
           b"Content-Location: http://example.org/x\r\nContent-MD5: abc=\r\n\r\n"
           b"one\r\ntwo\r\n--b\r\n"
           b"Content-Type: application/pdf; name=\"a.pdf\"\r\n"
           b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n"
           b"Content-ID: <id@x>\r\nContent-Description: a pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\nepilogue\r\n")
    facts = compute_facts(raw)
    assert plain(facts["bodystructure"]) == [
        [b"text", b"plain", [b"charset", b"utf-8"], None, None, b"7bit", 8, 1,
         b"abc=", None, [b"en", b"de"], b"http://example.org/x"],
        [b"application", b"pdf", [b"name", b"a.pdf"], b"<id@x>", b"a pdf", b"base64", 4,
         None, [b"attachment", [b"filename", b"a.pdf"]], None, None],
        b"mixed", [b"boundary", b"b"], None, None, None]
    # RFC 9051 §9 body-type-mpart: parts back to back, SP before the subtype
    # and between the extension fields.
    assert serialize(facts["bodystructure"]).startswith(b'(("text" "plain" ')
    assert b' "abc=" NIL ("en" "de") "http://example.org/x")("application" ' in \
        serialize(facts["bodystructure"])
    assert serialize(facts["bodystructure"]).endswith(
        b' ("attachment" ("filename" "a.pdf")) NIL NIL) "mixed" ("boundary" "b") NIL NIL NIL)')
    assert plain(facts["body"]) == [
        [b"text", b"plain", [b"charset", b"utf-8"], None, None, b"7bit", 8, 1],
        [b"application", b"pdf", [b"name", b"a.pdf"], b"<id@x>", b"a pdf", b"base64", 4],
        b"mixed"]


def test_rfc2231_continuations_are_merged():
    raw = (b"Content-Type: application/x-stuff;\r\n title*0*=us-ascii'en'This%20is;\r\n"
           b" title*1=\" fun\"; plain=yes\r\n\r\nx")
    structure = compute_facts(raw)["bodystructure"]
    assert structure[2] == [b"plain", b"yes", b"title*", b"us-ascii'en'This%20is fun"]


def test_message_without_content_type_is_text_plain_us_ascii():
    structure = compute_facts(b"Subject: x\r\n\r\nline1\r\nline2")["bodystructure"]
    assert structure == [b"text", b"plain", [b"charset", b"us-ascii"], None, None,
                         b"7bit", 12, 1, None, None, None, None]


def test_digest_parts_default_to_message_rfc822():
    raw = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
           b"Subject: inner\r\n\r\nhi\r\n--d--\r\n")
    body = plain(compute_facts(raw)["body"])
    inner = body[0]
    assert inner[:2] == [b"message", b"rfc822"]
    assert inner[7][1] == b"inner"
    assert inner[8] == [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 2, 0]


def test_deep_nesting_is_bounded():
    raw = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                   for i in range(3 * mime.MIME_NESTING_MAX)) + b"\r\nleaf\r\n"
    facts = compute_facts(raw)
    depth = 0
    node = facts["parts"]
    while node[3]:
        node = node[3][0]
        depth += 1
    assert depth < mime.MIME_NESTING_MAX
    serialize(facts["bodystructure"])  # must not exhaust the stack either


def test_deep_message_rfc822_chain_is_bounded():
    raw = b"Content-Type: message/rfc822\r\n\r\n" * (5 * mime.MIME_NESTING_MAX) + b"\r\nbody\r\n"
    facts = compute_facts(raw)
    text = serialize(facts["bodystructure"])
    assert b'"application" "octet-stream"' in text  # the part below the limit is opaque
    assert parse_values(text)


# ------------------------------------------------------------ never raises
def _check_offsets(node, size):
    header_start, body_start, end, children = node
    assert 0 <= header_start <= body_start <= end <= size
    for child in children:
        assert header_start <= child[0] and child[2] <= end
        _check_offsets(child, size)


def _check_facts(raw: bytes) -> None:
    facts = compute_facts(raw)
    assert facts["size"] == len(raw)
    _check_offsets(facts["parts"], len(raw))
    for key in ("envelope", "body", "bodystructure"):
        assert parse_values(serialize(facts[key])) == [plain(facts[key])]
    msgpack.packb(facts, use_bin_type=True)


_TOKENS = [b"\r\n", b"\r\n\r\n", b"--", b"--b", b"--b--", b":", b";", b"=", b"\"", b"\\",
           b"(", b")", b"<", b">", b"@", b",", b"\t", b" ", b"*0*", b"\xff",
           b"Content-Type: multipart/mixed; boundary=b\r\n",
           b"Content-Type: message/rfc822\r\n", b"From: ", b"To: g:", b"Subject: "]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(raw):
    _check_facts(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=8), max_size=120))
def test_token_soup_never_raises(pieces):
    _check_facts(b"".join(pieces))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_reference_messages_never_raise(data):
    require_oracle()
    raw = bytearray(message_bytes(data.draw(st.sampled_from(sorted(ORACLE)))))
    for _ in range(data.draw(st.integers(1, 10))):
        pos = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.integers(0, 2))
        if action == 0:
            raw[pos:pos] = data.draw(st.sampled_from(_TOKENS))
        elif action == 1:
            del raw[pos:pos + data.draw(st.integers(1, 64))]
        else:
            raw[pos:pos + 1] = bytes([data.draw(st.integers(0, 255))])
    _check_facts(bytes(raw))
