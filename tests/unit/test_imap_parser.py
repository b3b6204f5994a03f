"""IMAP command framing and argument parsing, fed raw wire bytes (literals included)."""

from __future__ import annotations

import pytest

from mailserverd.imap import mutf7
from mailserverd.imap.parser import (
    ArgCursor,
    CommandReader,
    ContinuationNeeded,
    FramedCommand,
    LineTooLong,
    NUMBER64_MAX,
    LiteralRefused,
    ParseError,
    SequenceSet,
    read_command_name,
    read_tag,
)
from mailserverd.imap.session import SelectedMailbox


def reader(line_max=1000, literal_max=100) -> CommandReader:
    return CommandReader(line_max, lambda first, size, total: total <= literal_max)


def events(r: CommandReader, data: bytes) -> list:
    r.feed(data)
    out = []
    while (event := r.next_event()) is not None:
        out.append(event)
    return out


def cursor(*segments: bytes) -> ArgCursor:
    return ArgCursor(tuple(segments))


# ---------------------------------------------------------------- framing


def test_simple_line_is_one_command():
    assert events(reader(), b"A1 NOOP\r\n") == [FramedCommand((b"A1 NOOP",))]


def test_pipelined_commands_come_out_in_order():
    assert events(reader(), b"A1 NOOP\r\nA2 CAPABILITY\r\n") == [
        FramedCommand((b"A1 NOOP",)), FramedCommand((b"A2 CAPABILITY",))]


def test_partial_line_waits_for_more():
    r = reader()
    assert events(r, b"A1 NO") == []
    assert events(r, b"OP\r\n") == [FramedCommand((b"A1 NOOP",))]


def test_bare_lf_ends_a_line():
    assert events(reader(), b"A1 NOOP\n") == [FramedCommand((b"A1 NOOP",))]


def test_synchronizing_literals_ask_for_continuation():
    r = reader()
    assert events(r, b"A1 LOGIN {4}\r\n") == [ContinuationNeeded(4)]
    assert events(r, b"user {6}\r\n") == [ContinuationNeeded(6)]
    assert events(r, b"passwd\r\n") == [
        FramedCommand((b"A1 LOGIN {4}", b"user", b" {6}", b"passwd", b""))]


def test_literal_data_may_hold_crlf_and_command_text():
    r = reader()
    assert events(r, b"A1 LOGIN {9}\r\n") == [ContinuationNeeded(9)]
    assert events(r, b"a\r\nB2 X\r\n pw\r\n") == [
        FramedCommand((b"A1 LOGIN {9}", b"a\r\nB2 X\r\n", b" pw"))]


def test_non_synchronizing_literals_need_no_continuation():
    # RFC 7888 §3 example
    assert events(reader(), b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n") == [
        FramedCommand((b"A001 LOGIN {11+}", b"FRED FOOBAR", b" {7+}", b"fat man", b""))]


def test_line_too_long_without_crlf_breaks_the_reader():
    r = reader(line_max=1000)
    assert events(r, b"A1 " + b"x" * 1000) == [LineTooLong()]
    assert r.broken
    assert events(r, b"\r\nA2 NOOP\r\n") == []


def test_line_too_long_with_crlf():
    assert events(reader(line_max=1000), b"A1 " + b"x" * 998 + b"\r\n") == [LineTooLong()]


def test_line_limit_counts_every_line_of_a_command():
    r = reader(line_max=1000)
    assert events(r, b"A1 X " + b"a" * 600 + b" {1+}\r\nz") == []
    assert events(r, b" " + b"b" * 600 + b"\r\n") == [LineTooLong()]


def test_line_at_the_limit_is_accepted():
    line = b"A1 " + b"x" * 997
    assert events(reader(line_max=1000), line + b"\r\n") == [FramedCommand((line,))]


def test_synchronizing_literal_too_big_is_refused_without_continuation():
    r = reader(literal_max=100)
    assert events(r, b"A1 LOGIN {101}\r\n") == [LiteralRefused(b"A1 LOGIN {101}", 101, True, False)]
    # The client did not send the literal; the next command is read normally.
    assert events(r, b"A2 NOOP\r\n") == [FramedCommand((b"A2 NOOP",))]


def test_refused_literal_sent_without_waiting_is_flagged():
    refused = events(reader(literal_max=100), b"A1 LOGIN {101}\r\n" + b"B2 LOGOUT\r\n")
    assert refused[0] == LiteralRefused(b"A1 LOGIN {101}", 101, True, True)


def test_literal_limit_counts_all_literals_of_a_command():
    r = reader(literal_max=100)
    assert events(r, b"A1 LOGIN {60}\r\n") == [ContinuationNeeded(60)]
    assert events(r, b"x" * 60 + b" {41}\r\n") == [LiteralRefused(b"A1 LOGIN {60}", 41, True, False)]


def test_huge_literal_count_is_refused():
    # Counts past number64 (RFC 9051 §9) are all one size: more than any literal.
    assert events(reader(literal_max=10**30), b"A1 LOGIN {99999999999999999999}\r\n") == [
        LiteralRefused(b"A1 LOGIN {99999999999999999999}", NUMBER64_MAX + 1, True, False)]


def test_non_synchronizing_literal_too_big_is_swallowed_with_the_rest_of_its_command():
    r = reader(literal_max=100)
    assert events(r, b"A1 LOGIN {150+}\r\n") == [LiteralRefused(b"A1 LOGIN {150+}", 150, False)]
    # 150 bytes of "commands" inside the literal never run, nor the rest of A1.
    payload = (b"X1 LOGOUT\r\n" * 15)[:150]
    assert events(r, payload[:70]) == []
    assert events(r, payload[70:] + b" more {3+}\r\nabc tail\r\nA2 NOOP\r\n") == [
        FramedCommand((b"A2 NOOP",))]


def test_discard_buffered_drops_pipelined_bytes():
    r = reader()
    r.feed(b"A1 STARTTLS\r\nA2 LOGIN a b\r\n")
    assert r.next_event() == FramedCommand((b"A1 STARTTLS",))
    assert r.discard_buffered() == len(b"A2 LOGIN a b\r\n")
    assert r.next_event() is None


# ---------------------------------------------------------------- arguments


def test_tag_and_command_name():
    c = cursor(b"a.1 uid fetch 1 FLAGS")
    assert read_tag(c) == b"a.1"
    assert read_command_name(c) == "UID FETCH"


@pytest.mark.parametrize("line", [b"", b" NOOP", b"+x NOOP", b"A1", b'"A1" NOOP', b"A{1 NOOP"])
def test_bad_tags(line):
    with pytest.raises(ParseError):
        read_tag(cursor(line))


def test_missing_command_name():
    c = cursor(b"A1 (")
    read_tag(c)
    with pytest.raises(ParseError):
        read_command_name(c)


def test_astring_forms():
    c = cursor(b'atom "quo\\"ted\\\\" {3}', b"lit", b" ]x")
    assert c.astring() == b"atom"
    c.expect_sp()
    assert c.astring() == b'quo"ted\\'
    c.expect_sp()
    assert c.astring() == b"lit"
    c.expect_sp()
    assert c.astring() == b"]x"
    c.expect_end()


def test_quoted_accepts_8bit():
    assert cursor('"pässword"'.encode()).quoted() == "pässword".encode()


@pytest.mark.parametrize("text", [b'"open', b'"bad \\x escape"', b'"nul\x00"', b"(", b""])
def test_bad_strings(text):
    with pytest.raises(ParseError):
        cursor(text).astring()


def test_nul_in_literal_is_refused():
    with pytest.raises(ParseError):
        cursor(b"{2}", b"a\x00", b"").astring()


def test_literal_marker_must_be_followed_by_its_data():
    with pytest.raises(ParseError):
        cursor(b"{2}").literal()


def test_numbers():
    assert cursor(b"4294967295").number() == 4294967295
    with pytest.raises(ParseError):
        cursor(b"4294967296").number()
    with pytest.raises(ParseError):
        cursor(b"0").nz_number()
    with pytest.raises(ParseError):
        cursor(b"x").number()


def test_expect_end_rejects_extra_arguments():
    c = cursor(b"a b")
    c.atom()
    with pytest.raises(ParseError):
        c.expect_end()


@pytest.mark.parametrize("text,ranges", [
    (b"1", ((1, 1),)),
    (b"*", ((None, None),)),
    (b"1:*", ((1, None),)),
    (b"4:2", ((4, 2),)),
    (b"1,3:5,*", ((1, 1), (3, 5), (None, None))),
])
def test_sequence_sets(text, ranges):
    c = cursor(text)
    assert c.sequence_set() == SequenceSet(ranges)
    c.expect_end()


@pytest.mark.parametrize("text", [b"0", b"1:0", b":", b"a", b"", b"4294967296", b"1,", b"-1"])
def test_bad_sequence_sets(text):
    with pytest.raises(ParseError):
        c = cursor(text)
        c.sequence_set()
        c.expect_end()


def test_sequence_set_bounds_reverse_ranges_and_replace_star():
    assert list(SequenceSet(((4, 2), (None, 3))).bounds(9)) == [(2, 4), (3, 9)]


def test_parenthesized_lists():
    assert cursor(b"(a b c)").parenthesized(ArgCursor.atom) == [b"a", b"b", b"c"]
    assert cursor(b"()").parenthesized(ArgCursor.atom) == []
    for bad in (b"(a  b)", b"(a", b"a)"):
        with pytest.raises(ParseError):
            cursor(bad).parenthesized(ArgCursor.atom)


def test_mailbox_names():
    assert cursor(b"inBoX").mailbox() == "INBOX"
    assert cursor(b"Inbox/sub").mailbox() == "Inbox/sub"
    assert cursor(b'"&ZeVnLIqe-"').mailbox() == "日本語"
    with pytest.raises(ParseError):
        cursor(b"&Jjo!").mailbox()


# ---------------------------------------------------------------- modified UTF-7


def test_mutf7_rfc3501_example():
    name = "~peter/mail/台北/日本語"
    assert mutf7.encode(name) == b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert mutf7.decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-") == name


def test_mutf7_ampersand_and_round_trip():
    for name in ("A&B", "Entwürfe", "😀 x", "&", "\x01"):
        assert mutf7.decode(mutf7.encode(name)) == name
    assert mutf7.encode("A&B") == b"A&-B"


@pytest.mark.parametrize("data", [
    b"&Jjo!",          # '!' is not modified BASE64, and no closing '-'
    b"&U,BTFw",        # not closed
    b"&AGE-",          # encodes 'a', printable ASCII
    b"&ZeV-&nLI-",     # adjacent runs
    b"&ZeX-",          # non-zero padding bits
    b"&2D1OAA-",       # high surrogate followed by no low surrogate
    b"caf\xc3\xa9",    # raw 8-bit
    b"&U/BTFw-",       # '/' instead of ','
])
def test_mutf7_rejects_non_canonical(data):
    with pytest.raises(mutf7.MUTF7Error):
        mutf7.decode(data)


# ---------------------------------------------------------------- sequence maps


def test_resolve_seqs_and_uids():
    box = SelectedMailbox(1, "INBOX", False, 7, 20, [3, 5, 9, 12])
    seqset = cursor(b"2:3,4").sequence_set()
    assert box.resolve_seqs(seqset) == [(2, 5), (3, 9), (4, 12)]
    assert box.resolve_seqs(cursor(b"*").sequence_set()) == [(4, 12)]
    assert box.resolve_uids(cursor(b"4:10").sequence_set()) == [(2, 5), (3, 9)]
    # RFC 3501 §9: 100:* includes the last message even though 100 > every UID.
    assert box.resolve_uids(cursor(b"100:*").sequence_set()) == [(4, 12)]
    assert box.resolve_uids(cursor(b"13:19").sequence_set()) == []
    with pytest.raises(ParseError):
        box.resolve_seqs(cursor(b"5").sequence_set())


def test_star_in_empty_mailbox():
    box = SelectedMailbox(1, "INBOX", False, 7, 20, [])
    with pytest.raises(ParseError):
        box.resolve_seqs(cursor(b"*").sequence_set())
    assert box.resolve_uids(cursor(b"1:*").sequence_set()) == []
