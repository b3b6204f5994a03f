"""Property tests of the SMTP server core: whatever the client sends, however it is cut.

(a) SMTPSession: arbitrary command scripts and raw bytes, fed in arbitrary
    chunks, never raise or log an unexpected error, only ever write well-formed
    reply lines (RFC 5321 §4.2), never act after Close, and keep the buffered
    input within a bound derived from the limits.
(b) MessageReader: dot-stuffed messages cut anywhere come back unstuffed and
    whole, and the end is found exactly at CRLF.CRLF (RFC 5321 §4.5.2).
(c) ChunkReader: exactly n octets are taken, however the input is cut (RFC 3030 §2).
(d) parse_parameters / decode_xtext (and the checks after them) raise nothing
    but ArgumentError.
"""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from mailserverd.limits import Limits
from mailserverd.smtp.commands import COMMANDS
from mailserverd.smtp.framing import ChunkReader, MessageReader
from mailserverd.smtp.params import (
    ArgumentError,
    Transaction,
    apply_mail_parameters,
    decode_xtext,
    parse_parameters,
    recipient_options,
)
from mailserverd.smtp.session import ListenerPolicy, Peer, SMTPSession
from session_fakes import FakeAuthenticator
from test_smtp_session import HOST, Client, FakeDelivery

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Small limits so that the edges are reached: short lines, few recipients, few failures.
FUZZ_LIMITS = dict(smtp_line_max=512, smtp_text_line_max=1000, message_size_max=64 * 1024,
                   smtp_recipients_max=3, smtp_bad_commands_max=15, smtp_auth_failures_max=2)

#: One reply line: code, "-" or " ", text without CR or LF, CRLF (RFC 5321 §4.2).
REPLY_LINE = re.compile(rb"[2-5]\d\d[ -][^\r\n]*\r\n")
#: A 3xx other than 334/354 is never sent; 334's text is base64 or empty.
REPLY_CODE = re.compile(rb"2\d\d|334|354|4\d\d|5\d\d")

PLAIN_ALICE = base64.b64encode(b"\0alice@example.org\0alice pw")

verbs = st.sampled_from(list(COMMANDS) + [b"XYZZY", b"", b"MAIL FROM:", b"RCPT TO:"]).flatmap(
    lambda verb: st.sampled_from([verb, verb.lower()]))
arguments = st.sampled_from([
    b"c", b"FROM:<a@example.net>", b"FROM:<alice@example.org>", b"FROM:<>", b"TO:<alice@example.org>",
    b"TO:<bob@example.org>", b"TO:<nobody@example.org>", b"TO:<x@elsewhere.example>", b"<Postmaster>",
    b"FROM:<j\xc3\xb6@ex\xc3\xa4mple.net>", b"TO:<\xc3\xbc@example.org>", b"FROM:<\xff@x>",
    b"SMTPUTF8", b"SIZE=10", b"SIZE=99999999999", b"BODY=8BITMIME", b"RET=HDRS", b"ENVID=a+2B",
    b"NOTIFY=SUCCESS,DELAY", b"NOTIFY=NEVER", b"ORCPT=rfc822;a+2Bb@x", b"AUTH=<>",
    b"0", b"1", b"5", b"12", b"LAST", b"99999999999999999999", b"-1",
    b"PLAIN", b"LOGIN", b"SCRAM-SHA-256", PLAIN_ALICE, b"=", b"*", b"biws",
])
command_lines = st.builds(lambda verb, args: b" ".join([verb, *args]), verbs,
                          st.lists(arguments, max_size=3))
raw_lines = st.binary(max_size=80)
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
scripts = st.lists(st.tuples(st.one_of(command_lines, command_lines, raw_lines), line_ends),
                   max_size=40).map(lambda pairs: b"".join(line + end for line, end in pairs))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` split at ``points`` (each clipped to the data, duplicates ignored)."""
    points = sorted({min(point, len(data)) for point in points})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


class LoggedFailures:
    """Collects log events that carry a failure (an unexpected exception) while in use."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        if event.get("log_failure") is not None:
            self.events.append(event)

    def __enter__(self) -> "LoggedFailures":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc_info) -> None:
        globalLogPublisher.removeObserver(self)


def check_output(output: bytes) -> None:
    """Every byte written is part of a well-formed reply line with a sendable code."""
    position = 0
    for match in REPLY_LINE.finditer(output):
        assert match.start() == position, output[position:match.start() + 20]
        assert REPLY_CODE.fullmatch(match.group()[:3]), match.group()
        position = match.end()
    assert position == len(output), output[position:]


def input_bound(session: SMTPSession) -> int:
    """What the session may hold: one command line when it is reading, one full
    pipelined group of maximal lines while a command waits (session docstring)."""
    limits = session.limits
    if session.waiting:
        return (limits.smtp_recipients_max + 4) * limits.smtp_line_max
    return limits.smtp_line_max


@SETTINGS
@given(script=scripts, data=st.data(),
       kind=st.sampled_from(["smtp", "submission", "smtps"]), tls_active=st.booleans(),
       allow_plaintext=st.booleans(), hold=st.booleans())
def test_any_bytes_cut_anywhere_get_well_formed_replies(script, data, kind, tls_active,
                                                        allow_plaintext, hold):
    submission = kind != "smtp"
    delivery = FakeDelivery(hold_delivery=hold, hold_recipients=hold)
    authenticator = FakeAuthenticator({"alice@example.org": "alice pw"})
    authenticator.hold = hold
    policy = ListenerPolicy(kind, starttls_available=kind != "smtps", auth_offered=submission,
                            auth_required=submission, allow_plaintext=allow_plaintext)
    with LoggedFailures() as failures:
        session = SMTPSession(policy, delivery, Limits(**FUZZ_LIMITS), HOST, Peer("192.0.2.7"),
                              tls_active=tls_active, authenticator=authenticator)
        client = Client(session)  # asserts that nothing is done after a Close
        points = data.draw(st.lists(st.integers(0, len(script)), max_size=12), label="cuts")
        for piece in cut(script, points):
            client.send(piece)
            assert len(session._input) <= input_bound(session)
            if hold and data.draw(st.booleans(), label="release"):
                while delivery.pending:
                    delivery.release()
                authenticator.release()
                assert len(session._input) <= input_bound(session)
        while delivery.pending or authenticator.held:  # let everything finish
            if delivery.pending:
                delivery.release()
            authenticator.release()
        client.perform(session.timed_out())
    assert failures.events == []
    assert session.closed and client.closed
    check_output(bytes(client.output))


def replay(script: bytes, pieces: list[bytes], kind: str, tls_active: bool) -> bytes:
    """Everything written for ``pieces`` (no held Deferreds), checking the input bound."""
    submission = kind != "smtp"
    policy = ListenerPolicy(kind, starttls_available=kind != "smtps", auth_offered=submission,
                            auth_required=submission, allow_plaintext=True)
    session = SMTPSession(policy, FakeDelivery(), Limits(**FUZZ_LIMITS), HOST, Peer("192.0.2.7"),
                          tls_active=tls_active,
                          authenticator=FakeAuthenticator({"alice@example.org": "alice pw"}))
    client = Client(session)
    for piece in pieces:
        client.send(piece)
        assert len(session._input) <= input_bound(session)
    return bytes(client.output)


STARTTLS_READY = b"220 2.0.0 Ready to start TLS\r\n"


@SETTINGS
@given(script=scripts, data=st.data(), kind=st.sampled_from(["smtp", "submission"]),
       tls_active=st.booleans())
def test_replies_do_not_depend_on_how_the_input_is_cut(script, data, kind, tls_active):
    """The same bytes give the same replies, in one piece or cut anywhere. Two exceptions
    are part of the design: what follows STARTTLS in the same piece is dropped (RFC 3207
    §4.2), and a run without LF longer than smtp_text_line_max is cut off (421) only when
    it arrives without its LF."""
    with LoggedFailures() as failures:
        whole = replay(script, [script], kind, tls_active)
        points = data.draw(st.lists(st.integers(0, len(script)), max_size=12), label="cuts")
        pieces = replay(script, cut(script, points), kind, tls_active)
    assert failures.events == []
    if max(map(len, script.split(b"\n"))) > FUZZ_LIMITS["smtp_text_line_max"]:
        return
    if STARTTLS_READY in whole:
        prefix = whole[:whole.index(STARTTLS_READY) + len(STARTTLS_READY)]
        assert pieces.startswith(prefix)
    else:
        assert pieces == whole


# --- (b) the DATA framer

text_lines = st.lists(
    st.binary(max_size=40).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b"")) |
    st.sampled_from([b".", b"..", b".x", b"", b". ", b"...\x00"]),
    max_size=20)


def dot_stuff(text: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line that starts with "." gets one more."""
    return b"".join(b"." + line if line.startswith(b".") else line
                    for line in text.splitlines(keepends=True))


@SETTINGS
@given(lines=text_lines, trailer=st.binary(max_size=30), data=st.data())
def test_message_reader_unstuffs_and_stops_exactly_at_the_end(lines, trailer, data):
    original = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(original) + b".\r\n" + trailer
    points = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    reader = MessageReader(size_max=1 << 20, line_max=1000)
    consumed = 0
    for piece in cut(wire, points):
        used = reader.feed(piece)
        assert 0 <= used <= len(piece)
        if reader.done:
            consumed += used
            break
        assert used == len(piece)  # before the end everything is taken
        consumed += used
    assert reader.done
    assert consumed == len(wire) - len(trailer)  # not one octet of what follows
    assert reader.rejection is None
    assert reader.message() == original
    assert reader.feed(b"more") == 0


@SETTINGS
@given(lines=text_lines.filter(lambda lines: b"." not in lines), data=st.data())
def test_message_reader_drops_the_first_dot_of_every_line(lines, data):
    """RFC 5321 §4.5.2: the receiver drops a leading "." whether or not the sender stuffed."""
    wire = b"".join(line + b"\r\n" for line in lines) + b".\r\n"
    expected = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    points = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    reader = MessageReader(size_max=1 << 20, line_max=1000)
    assert sum(reader.feed(piece) for piece in cut(wire, points)) == len(wire)
    assert reader.done and reader.rejection is None
    assert reader.message() == expected


@SETTINGS
@given(body=st.binary(max_size=200), data=st.data())
def test_message_reader_end_is_only_crlf_dot_crlf(body, data):
    """On any input, the end found is a "." line after a CRLF (or at the very start)."""
    wire = body + b"\r\n.\r\n"
    points = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    reader = MessageReader(size_max=1 << 20, line_max=1000)
    consumed = 0
    for piece in cut(wire, points):
        consumed += reader.feed(piece)
        if reader.done:
            break
    assert reader.done
    end = wire[:consumed]
    assert end.endswith(b".\r\n")
    assert end == b".\r\n" or end.endswith(b"\r\n.\r\n")
    # the first such end: no earlier CRLF.CRLF, and no "." line right at the start
    assert b"\r\n.\r\n" not in end[:-3] and (end == b".\r\n" or not wire.startswith(b".\r\n"))


# --- (c) the BDAT chunk reader


@SETTINGS
@given(size=st.integers(0, 300), extra=st.binary(max_size=50), keep=st.booleans(), data=st.data())
def test_chunk_reader_takes_exactly_n_octets(size, extra, keep, data):
    chunk = data.draw(st.binary(min_size=size, max_size=size), label="chunk")
    wire = chunk + extra
    points = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    into = bytearray(b"before") if keep else None
    reader = ChunkReader(size, into)
    consumed = 0
    for piece in cut(wire, points):
        used = reader.feed(piece)
        assert used == min(len(piece), size - consumed)
        consumed += used
        assert reader.done == (consumed == size)
    assert consumed == size
    assert reader.done and reader.feed(b"x") == 0
    if keep:
        assert into == b"before" + chunk


# --- (d) parameter parsing

parameter_words = st.sampled_from([
    b"SIZE", b"BODY", b"SMTPUTF8", b"RET", b"ENVID", b"AUTH", b"NOTIFY", b"ORCPT", b"X-FOO", b"",
]).flatmap(lambda word: st.sampled_from([word, word.lower()]))
parameter_values = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"", b"10", b"\xd9\xa3", b"\xc2\xb2", b"7BIT", b"8bitmime", b"FULL", b"hdrs",
                     b"a+2B", b"+", b"+2", b"=", b"<>", b"NEVER", b"SUCCESS,FAILURE", b",",
                     b"rfc822;a@b", b"utf-8;\xc3\xa9@b", b"rfc822;", b";", b"x" * 101]))
parameter_items = st.one_of(
    st.builds(lambda word, value: word + b"=" + value, parameter_words, parameter_values),
    parameter_words, st.binary(max_size=15))
parameter_texts = st.lists(parameter_items, max_size=5).map(lambda items: b"".join(b" " + i for i in items))
ALL_OFFERED = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "DSN"})


@SETTINGS
@given(text=st.one_of(parameter_texts, st.binary(max_size=60)), utf8=st.booleans())
def test_parameters_raise_only_argument_error(text, utf8):
    try:
        params = parse_parameters(text, "MAIL FROM:<address>", utf8=utf8)
    except ArgumentError as error:
        assert error.reply.code == 501
        return
    assert all(name == name.upper() and name.isascii() for name in params)
    if not utf8:  # MAIL parameters are parsed as ASCII (commands.smtp_mail)
        try:
            apply_mail_parameters(Transaction(sender=""), params, 1000, ALL_OFFERED)
        except ArgumentError as error:
            assert error.reply.code in (501, 555)
    try:
        recipient_options(params, ALL_OFFERED)
    except ArgumentError as error:
        assert error.reply.code in (501, 555)


def encode_xtext(text: str) -> str:
    """RFC 3461 §4: "+", "=" and anything outside 33..126 as "+" and two upper-case hex digits."""
    return "".join(char if 33 <= ord(char) <= 126 and char not in "+=" else f"+{ord(char):02X}"
                   for char in text)


@SETTINGS
@given(value=st.text(max_size=40))
def test_decode_xtext_raises_only_argument_error(value):
    try:
        decode_xtext(value, "ENVID")
    except ArgumentError as error:
        assert error.reply.code == 501


@SETTINGS
@given(text=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40))
def test_xtext_round_trip(text):
    assert decode_xtext(encode_xtext(text), "ORCPT") == text


@SETTINGS
@given(text=st.text(st.characters(max_codepoint=255), min_size=1, max_size=40).filter(
    lambda text: not all(32 <= ord(char) <= 126 for char in text)))
def test_xtext_refuses_control_and_non_ascii_characters(text):
    # RFC 3461 §4.2, §4.4: the decoded value is printable US-ASCII.
    with pytest.raises(ArgumentError):
        decode_xtext(encode_xtext(text), "ENVID")
