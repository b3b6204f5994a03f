"""Hostile and malformed POP3 input: every bad line gets -ERR and the session goes on
until ``pop3_bad_commands_max``; nothing raises."""

from __future__ import annotations

import pytest

from mailserverd.auth.sasl import decode_response
from mailserverd.pop3.commands import COMMANDS, CommandSyntaxError, State, parse_number

from pop3_fakes import Harness

ALICE = "alice@example.test"
HUGE = b"99999999999999999999"


def logged_in(*raws: bytes, **limits) -> Harness:
    harness = Harness(**limits)
    for raw in raws:
        harness.store.add_message(ALICE, raw)
    harness.login()
    return harness


# --- malformed commands ----------------------------------------------------

MALFORMED_IN_TRANSACTION = [
    (b"STAT 1", "STAT"),
    (b"LIST 1 2", "LIST [msg]"),
    (b"LIST one", "LIST [msg]"),
    (b"UIDL -1", "UIDL [msg]"),
    (b"RETR", "RETR msg"),
    (b"RETR 1 2", "RETR msg"),
    (b"RETR +1", "RETR msg"),
    (b"TOP 1", "TOP msg n"),
    (b"TOP 1 -2", "TOP msg n"),
    (b"TOP 1 \xff", "TOP msg n"),
    (b"DELE", "DELE msg"),
    (b"DELE 0x1", "DELE msg"),
    (b"RSET now", "RSET"),
    (b"NOOP noop", "NOOP"),
    (b"QUIT now", "QUIT"),
    (b"CAPA all", "CAPA"),
]


@pytest.mark.parametrize("line, syntax", MALFORMED_IN_TRANSACTION)
def test_malformed_command_in_transaction_gets_its_syntax(line, syntax):
    h = logged_in(b"a\r\n")
    assert h.send(line + b"\r\n") == f"-ERR syntax: {syntax}\r\n".encode()
    assert h.send(b"NOOP\r\n") == b"+OK\r\n"
    assert h.session.state is State.TRANSACTION


@pytest.mark.parametrize("line, syntax", [
    (b"USER", "USER name"),
    (b"USER a b", "USER name"),
    (b"USER \xc3\x28", "USER name"),
    (b"STLS now", "STLS"),
    (b"UTF8 on", "UTF8"),
    (b"AUTH PLAIN x y", "AUTH [mechanism [initial-response]]"),
])
def test_malformed_command_in_authorization_gets_its_syntax(line, syntax):
    h = Harness()
    h.sink.take()
    assert h.send(line + b"\r\n") == f"-ERR syntax: {syntax}\r\n".encode()
    assert h.login().endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")


def test_every_table_command_has_a_transcript_here_or_in_the_session_tests():
    covered = {line.split()[0] for line, _ in MALFORMED_IN_TRANSACTION} | {b"USER", b"PASS", b"AUTH", b"UTF8", b"STLS"}
    assert covered == set(COMMANDS)


def test_bad_commands_close_only_at_the_limit():
    h = logged_in(b"a\r\n", pop3_bad_commands_max=4)
    h.converse("""
        C: RETR x
        S: -ERR syntax: RETR msg
        C: USER alice@example.test
        S: -ERR command not valid in this state
        C: XYZZY
        S: -ERR unknown command
    """)
    assert h.sink.events == []
    h.converse("""
        C: STAT
        S: +OK 1 3
        C: RETR 1 1
        S: -ERR too many bad commands, closing connection
    """)
    assert h.sink.events == ["close"]
    assert h.store.calls == []  # closing for bad commands is not QUIT: nothing removed


# --- commands in the wrong state -------------------------------------------

@pytest.mark.parametrize("line", [b"STAT", b"LIST", b"UIDL 1", b"RETR 1", b"TOP 1 1", b"DELE 1", b"RSET", b"NOOP"])
def test_transaction_commands_refused_before_login(line):
    h = Harness()
    h.sink.take()
    assert h.send(line + b"\r\n") == b"-ERR command not valid in this state\r\n"
    assert h.session.state is State.AUTHORIZATION


@pytest.mark.parametrize("line", [b"USER alice@example.test", b"PASS x", b"AUTH PLAIN", b"UTF8", b"STLS"])
def test_authorization_commands_refused_after_login(line):
    h = logged_in()
    assert h.send(line + b"\r\n") == b"-ERR command not valid in this state\r\n"
    assert h.send(b"STAT\r\n") == b"+OK 0 0\r\n"


# --- NUL and other bytes ----------------------------------------------------

@pytest.mark.parametrize("line", [b"US\0ER alice@example.test", b"USER alice\0@example.test", b"\0", b"NOOP\0"])
def test_nul_in_a_command_is_refused(line):
    h = Harness()
    h.sink.take()
    assert h.send(line + b"\r\n") == b"-ERR NUL byte in command\r\n"
    assert h.session.pending_user is None
    assert h.login().endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")


def test_nul_in_a_password_never_reaches_the_authenticator():
    h = Harness()
    h.sink.take()
    out = h.send(b"USER alice@example.test\r\nPASS s3cret\0pw\r\n")
    assert out == b"+OK send PASS\r\n-ERR NUL byte in command\r\n"
    assert h.auth.calls == []


def test_bare_lf_and_binary_garbage():
    h = Harness()
    h.sink.take()
    assert h.send(b"\xff\xfe\x80 \x01\x02\r\nCAPA\n").startswith(
        b"-ERR unknown command\r\n+OK capability list follows\r\n")


# --- huge and odd numbers ----------------------------------------------------

@pytest.mark.parametrize("command", [b"LIST", b"UIDL", b"RETR", b"DELE"])
def test_huge_message_number_is_no_such_message(command):
    h = logged_in(b"a\r\n")
    assert h.send(command + b" " + HUGE + b"\r\n") == b"-ERR no such message\r\n"
    assert h.send(b"TOP " + HUGE + b" 0\r\n") == b"-ERR no such message\r\n"


def test_number_longer_than_pythons_int_conversion_limit():
    # int() refuses more than 4300 digits; such a number must still be "no such message".
    h = logged_in(b"a\r\n", pop3_line_max=10000)
    assert h.send(b"RETR " + b"9" * 5000 + b"\r\n") == b"-ERR no such message\r\n"


def test_huge_top_line_count_and_leading_zeros():
    raw = b"Subject: x\r\n\r\nl1\r\nl2\r\n"
    h = logged_in(raw)
    assert h.send(b"TOP 1 " + HUGE + b"\r\n") == b"+OK top of message follows\r\n" + raw + b".\r\n"
    assert h.send(b"LIST 0001\r\n") == b"+OK 1 %d\r\n" % len(raw)
    assert h.send(b"LIST " + b"0" * 40 + b"1\r\n") == b"+OK 1 %d\r\n" % len(raw)


def test_parse_number():
    assert parse_number(b"0") == 0
    assert parse_number(b"007") == 7
    assert parse_number(b"9" * 18) == int("9" * 18)
    assert parse_number(b"9" * 19) > 10 ** 17
    for bad in (b"", b"-1", b"+1", b"1.0", b" 1", "١".encode()):
        with pytest.raises(CommandSyntaxError):
            parse_number(bad)


# --- long lines ---------------------------------------------------------------

def test_long_line_in_transaction_then_commands_go_on():
    h = logged_in(b"a\r\n", pop3_line_max=255)
    out = h.send(b"RETR " + b"1" * 1000 + b"\r\nSTAT\r\n")
    assert out == b"-ERR line too long\r\n+OK 1 3\r\n"


def test_long_line_split_over_many_chunks_is_one_error():
    h = Harness(pop3_line_max=255)
    h.sink.take()
    out = b"".join(h.send(b"x" * 100) for _ in range(30))
    assert out == b"-ERR line too long\r\n"
    assert h.send(b"\r\nAUTH\r\n").startswith(b"+OK SASL mechanisms follow\r\n")


# --- base64 of AUTH responses ---------------------------------------------

@pytest.mark.parametrize("line, decoded", [
    (b"", b""),
    (b"Zm9v", b"foo"),
    (b"Zm8=", b"fo"),
    (b"Zg==", b"f"),
    (b"Zm8", None),
    (b"Zm8==", None),
    (b"AGFsaWNl=", None),
    (b"=Zm9", None),
    (b"Zm 9v", None),
    (b"Zm9v\t", None),
    (b"Zm9v\0", None),
    (b"\xc3\xa9AAA", None),
])
def test_decode_response_is_strict_base64(line, decoded):
    assert decode_response(line) == decoded
