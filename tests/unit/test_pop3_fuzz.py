"""Property tests of the POP3 session: any bytes, cut anywhere, get one well-formed reply
per line and nothing ever raises or is logged as a failure."""

from __future__ import annotations

import base64
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher

from mailserverd.pop3.commands import COMMANDS, State

from pop3_fakes import Harness

ALICE = "alice@example.test"
MESSAGES = (b"Subject: a\r\n\r\n.\r\n..x\r\n", b"b\r\n", b"no final newline")
PLAIN_ALICE = base64.b64encode(b"\0alice@example.test\0s3cret pw")

#: Status texts of the multi-line replies; "+OK <n> octets" (RETR) is one too.
MULTI_LINE_TEXTS = (b"capability list follows", b"scan listing follows", b"unique-id listing follows",
                    b"top of message follows", b"SASL mechanisms follow")
RETR_STATUS = re.compile(rb"\+OK \d+ octets")

keywords = st.sampled_from([name for name in COMMANDS] + [b"XYZZY", b"APOP", b""]).flatmap(
    lambda name: st.sampled_from([name, name.lower(), name.capitalize()]))
arguments = st.sampled_from([
    b"1", b"2", b"3", b"0", b"99999999999999999999", b"-1", b"x", b"=", b"*", b"PLAIN", b"SCRAM-SHA-256",
    PLAIN_ALICE, ALICE.encode(), b"s3cret", b"pw", b"\0", b"\xff\xfe", b"\xc3\xa9",
])
command_lines = st.builds(lambda keyword, args: b" ".join([keyword, *args]),
                          keywords, st.lists(arguments, max_size=3))
random_lines = st.binary(max_size=60).map(lambda line: line.replace(b"\n", b""))
scripts = st.lists(st.tuples(st.one_of(command_lines, random_lines), st.sampled_from([b"\r\n", b"\n"])),
                   max_size=30)


def run(script: bytes, cuts: list[int], **kwargs):
    """Feed ``script`` cut at ``cuts``; returns (harness, output, logged failures)."""
    failures = []

    def observe(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        h = Harness(**kwargs)
        for raw in MESSAGES:
            h.store.add_message(ALICE, raw)
        h.sink.take()
        output = b""
        for start, end in zip([0, *cuts], [*cuts, len(script)]):
            output += h.send(script[start:end])
    finally:
        globalLogPublisher.removeObserver(observe)
    return h, output, failures


def split_replies(output: bytes) -> list[bytes]:
    """The status lines of ``output``, each multi-line body checked and skipped; asserts the framing."""
    lines = output.split(b"\r\n")
    assert lines.pop() == b"", "output does not end with CRLF"
    statuses = []
    position = 0
    while position < len(lines):
        status = lines[position]
        position += 1
        assert status.startswith((b"+OK", b"-ERR", b"+ ")), status
        statuses.append(status)
        if status.startswith(b"+OK ") and (status[4:] in MULTI_LINE_TEXTS or RETR_STATUS.fullmatch(status)):
            while lines[position] != b".":
                assert not lines[position].startswith(b".") or lines[position].startswith(b".."), "unstuffed dot"
                position += 1
            position += 1
    return statuses


def check_session(script_lines: list, cuts_for, tls_active: bool) -> None:
    script = b"".join(line + end for line, end in script_lines)
    whole, output, failures = run(script, [], tls_active=tls_active, pop3_bad_commands_max=8)
    assert failures == []
    statuses = split_replies(output)
    if whole.session.closed:
        assert whole.sink.events[-1] == "close"
        assert statuses[-1].endswith((b"signing off", b"too many bad commands, closing connection"))
        assert len(statuses) <= len(script_lines)
    elif "start_tls" in whole.sink.events:
        # RFC 2595 §4: what was sent in the same chunk behind STLS is thrown away.
        assert statuses[-1] == b"+OK begin TLS negotiation"
        assert len(statuses) <= len(script_lines)
    else:
        assert len(statuses) == len(script_lines)  # one reply (or challenge) per line
        assert whole.sink.events == []
    assert (whole.session.state is State.AUTHORIZATION) == (whole.session.maildrop is None)
    split, split_output, split_failures = run(script, cuts_for(len(script)), tls_active=tls_active,
                                              pop3_bad_commands_max=8)
    assert split_failures == []
    if "start_tls" in whole.sink.events:
        # Lines that arrive in a later chunk than STLS are read over TLS: compare up to STLS.
        assert split_output.startswith(output)
        return
    assert split_output == output
    assert (split.session.state, split.sink.events) == (whole.session.state, whole.sink.events)


@settings(max_examples=200, deadline=None)
@given(scripts, st.data(), st.booleans())
def test_any_input_gets_well_formed_replies_however_it_is_cut(script_lines, data, tls_active):
    def cuts_for(length: int) -> list[int]:
        return sorted(set(data.draw(st.lists(st.integers(0, length), max_size=12), label="cuts")))

    check_session(script_lines, cuts_for, tls_active)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(command_lines, st.just(b"\r\n")), max_size=20), st.data())
def test_commands_after_login_get_well_formed_replies(script_lines, data):
    login = [(b"USER alice@example.test", b"\r\n"), (b"PASS s3cret pw", b"\r\n")]

    def cuts_for(length: int) -> list[int]:
        return sorted(set(data.draw(st.lists(st.integers(0, length), max_size=12), label="cuts")))

    check_session(login + script_lines, cuts_for, tls_active=True)
