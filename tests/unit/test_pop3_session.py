"""POP3 session transcripts (C:/S:) against the sans-I/O core with an in-memory store."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel, globalLogPublisher

from mailserverd.auth.accounts import AuthThrottled, AuthUnavailable
from mailserverd.pop3.commands import BODY_CHUNK_SIZE, State, top_of_message
from mailserverd.store.errors import StoreTemporaryError

from pop3_fakes import HOSTNAME, Harness

ALICE = "alice@example.test"
CAPA_TAIL = """
    S: TOP
    S: UIDL
    S: RESP-CODES
    S: AUTH-RESP-CODE
    S: PIPELINING
    S: EXPIRE NEVER
    S: LOGIN-DELAY 0
    S: UTF8 USER
    S: IMPLEMENTATION mailserverd
    S: .
"""


def with_messages(*raws: bytes, **kwargs) -> Harness:
    harness = Harness(**kwargs)
    for raw in raws:
        harness.store.add_message(ALICE, raw)
    return harness


# --- greeting, CAPA, STLS, plaintext policy ------------------------------

def test_greeting_and_capa_before_tls():
    h = Harness(tls_active=False)
    h.converse(f"""
        S: +OK {HOSTNAME} POP3 server ready
        C: CAPA
        S: +OK capability list follows
        S: STLS
    """ + CAPA_TAIL)


def test_capa_under_tls_lists_user_not_stls():
    h = Harness(tls_active=True)
    h.sink.take()
    h.converse("""
        C: capa
        S: +OK capability list follows
        S: USER
        S: SASL SCRAM-SHA-256 PLAIN
    """ + CAPA_TAIL)


def test_capa_before_tls_lists_user_when_plaintext_allowed():
    h = Harness(tls_active=False, allow_plaintext=True)
    h.sink.take()
    h.converse("""
        C: CAPA
        S: +OK capability list follows
        S: STLS
        S: USER
        S: SASL SCRAM-SHA-256 PLAIN
    """ + CAPA_TAIL)


def test_user_and_pass_refused_before_tls():
    h = Harness(tls_active=False)
    h.sink.take()
    h.converse("""
        C: USER alice@example.test
        S: -ERR [AUTH] plaintext authentication disallowed without TLS, use STLS
        C: PASS s3cret pw
        S: -ERR [AUTH] plaintext authentication disallowed without TLS, use STLS
    """)
    assert h.auth.calls == []


def test_stls_then_capa_and_login():
    h = with_messages(b"Subject: hi\r\n\r\nbody\r\n", tls_active=False)
    h.sink.take()
    h.converse("""
        C: STLS
        S: +OK begin TLS negotiation
    """)
    assert h.sink.events[-1] == "start_tls"
    h.converse("""
        C: CAPA
        S: +OK capability list follows
        S: USER
        S: SASL SCRAM-SHA-256 PLAIN
    """ + CAPA_TAIL + """
        C: STLS
        S: -ERR command not permitted when TLS active
    """)
    assert h.login() == b"+OK send PASS\r\n+OK maildrop has 1 messages (21 octets)\r\n"


def test_stls_discards_pipelined_plaintext():
    # CVE-2011-0411 class: commands sent in clear behind STLS must never run.
    h = Harness(tls_active=False, allow_plaintext=True)
    h.sink.take()
    out = h.send(b"STLS\r\nUSER alice@example.test\r\nPASS s3cret pw\r\nCAPA\r\n")
    assert out == b"+OK begin TLS negotiation\r\n"
    assert h.sink.events == ["start_tls"]
    assert h.auth.calls == []
    assert h.session.pending_user is None
    # The first command over TLS is parsed from a clean buffer.
    assert h.send(b"NOOP\r\n") == b"-ERR command not valid in this state\r\n"


def test_stls_resets_pending_user():
    h = Harness(tls_active=False, allow_plaintext=True)
    h.sink.take()
    h.send(b"USER alice@example.test\r\n")
    h.send(b"STLS\r\n")
    assert h.send(b"PASS s3cret pw\r\n") == b"-ERR no USER given\r\n"
    assert h.auth.calls == []


def test_stls_not_allowed_in_transaction():
    h = with_messages(tls_active=True)
    h.login()
    assert h.send(b"STLS\r\n") == b"-ERR command not valid in this state\r\n"


# --- login ------------------------------------------------------------------

def test_login_ok_and_stat():
    h = with_messages(b"a\r\n", b"bb\r\n")
    h.sink.take()
    h.converse("""
        C: USER Alice@Example.test
        S: +OK send PASS
        C: PASS s3cret pw
        S: +OK maildrop has 2 messages (7 octets)
        C: STAT
        S: +OK 2 7
    """)
    assert h.auth.calls == [("Alice@Example.test", "s3cret pw", "192.0.2.7", "USER")]
    assert h.session.state is State.TRANSACTION


def test_login_failed_then_retry():
    h = with_messages(b"a\r\n")
    h.sink.take()
    h.converse("""
        C: USER alice@example.test
        S: +OK send PASS
        C: PASS wrong
        S: -ERR [AUTH] authentication failed
        C: PASS s3cret pw
        S: -ERR no USER given
        C: STAT
        S: -ERR command not valid in this state
        C: USER alice@example.test
        S: +OK send PASS
        C: PASS s3cret pw
        S: +OK maildrop has 1 messages (3 octets)
    """)


def test_unknown_user_gets_same_reply_as_wrong_password():
    h = Harness()
    h.sink.take()
    h.converse("""
        C: USER nobody@example.test
        S: +OK send PASS
        C: PASS whatever
        S: -ERR [AUTH] authentication failed
    """)


@pytest.mark.parametrize("error", [AuthThrottled("x"), AuthUnavailable("y")])
def test_throttled_or_unavailable_is_temporary(error):
    h = Harness()
    h.auth.error = error
    out = h.login()
    assert out == b"+OK send PASS\r\n-ERR [SYS/TEMP] authentication temporarily unavailable, try again later\r\n"


def test_pass_without_user_and_empty_pass():
    h = Harness()
    h.sink.take()
    h.converse("""
        C: PASS s3cret pw
        S: -ERR no USER given
        C: USER alice@example.test
        S: +OK send PASS
        C: PASS
        S: -ERR syntax: PASS password
    """)


def test_account_without_inbox_is_permanent_failure():
    h = Harness()
    del h.store.messages[ALICE]
    assert h.login().endswith(b"-ERR [SYS/PERM] mailbox unavailable\r\n")
    assert h.session.state is State.AUTHORIZATION


def test_store_error_at_login_is_temporary():
    h = Harness()
    h.store.messages[ALICE] = []

    def broken(user, name):
        raise StoreTemporaryError("disk")
    h.store.get_mailbox = broken
    assert h.login().endswith(b"-ERR [SYS/TEMP] temporary failure, try again later\r\n")
    assert h.session.state is State.AUTHORIZATION


def test_pipelined_commands_wait_for_authentication():
    h = with_messages(b"a\r\n")
    h.auth.hold = True
    h.sink.take()
    out = h.send(b"USER alice@example.test\r\nPASS s3cret pw\r\nSTAT\r\nQUIT\r\n")
    assert out == b"+OK send PASS\r\n"
    assert h.sink.events == ["pause"]  # reading stops while PASS waits
    h.auth.release()
    assert h.sink.take() == (
        b"+OK maildrop has 1 messages (3 octets)\r\n+OK 1 3\r\n"
        + f"+OK {HOSTNAME} POP3 server signing off\r\n".encode()
    )
    assert h.sink.events == ["pause", "resume", "close"]


# --- STAT / LIST / UIDL -------------------------------------------------------

def test_list_all_and_one_and_bad_numbers():
    h = with_messages(b"a\r\n", b"bb\r\n", b"ccc\r\n")
    h.login()
    h.converse("""
        C: LIST
        S: +OK scan listing follows
        S: 1 3
        S: 2 4
        S: 3 5
        S: .
        C: LIST 2
        S: +OK 2 4
        C: LIST 4
        S: -ERR no such message
        C: LIST 0
        S: -ERR no such message
        C: LIST x
        S: -ERR syntax: LIST [msg]
        C: LIST -1
        S: -ERR syntax: LIST [msg]
        C: LIST 1 2
        S: -ERR syntax: LIST [msg]
        C: LIST 99999999999999999999999
        S: -ERR no such message
    """)


def test_uidl_stable_ids():
    h = with_messages(b"a\r\n", b"bb\r\n")
    h.login()
    h.converse("""
        C: UIDL
        S: +OK unique-id listing follows
        S: 1 1700000000.1
        S: 2 1700000000.2
        S: .
        C: UIDL 2
        S: +OK 2 1700000000.2
    """)


def test_new_mail_not_seen_until_next_session():
    h = with_messages(b"a\r\n")
    h.login()
    h.store.add_message(ALICE, b"late\r\n")
    assert h.send(b"STAT\r\n") == b"+OK 1 3\r\n"
    assert h.send(b"LIST 2\r\n") == b"-ERR no such message\r\n"


# --- RETR / TOP -----------------------------------------------------------

def test_retr_is_byte_exact_with_dot_stuffing():
    raw = b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend\r\n"
    h = with_messages(raw)
    h.login()
    h.converse(f"""
        C: RETR 1
        S: +OK {len(raw)} octets
        S: Subject: dots
        S:
        S: ..
        S: ...
        S: ..x
        S: end
        S: .
    """)


def test_retr_dot_line_at_every_chunk_boundary():
    # Lines of exactly BODY_CHUNK_SIZE bytes put a "." line at the start of every chunk.
    filler = b"x" * (BODY_CHUNK_SIZE - 5) + b"\r\n"
    raw = b"Subject: big\r\n" + b"\r\n" * (BODY_CHUNK_SIZE - 16) + (b".\r\n" + filler) * 4 + b".\r\n"
    h = with_messages(raw)
    h.login()
    out = h.send(b"RETR 1\r\n")
    expected_body = raw.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    assert raw.count(b"\r\n.\r\n") == 5
    assert out == b"+OK %d octets\r\n" % len(raw) + expected_body + b".\r\n"


def test_retr_message_without_final_crlf():
    h = with_messages(b"Subject: x\r\n\r\nno end")
    h.login()
    assert h.send(b"RETR 1\r\n") == b"+OK 20 octets\r\nSubject: x\r\n\r\nno end\r\n.\r\n"


def test_retr_errors():
    h = with_messages(b"a\r\n")
    h.login()
    h.converse("""
        C: RETR
        S: -ERR syntax: RETR msg
        C: RETR 2
        S: -ERR no such message
    """)
    h.store.read_error = StoreTemporaryError("io")
    assert h.send(b"RETR 1\r\n") == b"-ERR [SYS/TEMP] temporary failure, try again later\r\n"


def test_retr_stream_blocks_pipelined_commands():
    h = with_messages(b"one\r\n", b"two\r\n")
    h.login()
    h.sink.hold_streams = True
    assert h.send(b"RETR 1\r\nRETR 2\r\nNOOP\r\n") == b"+OK 5 octets\r\n"
    assert h.sink.events[-1] == "pause"
    h.sink.finish_streams()  # body 1 done -> RETR 2 runs, its body held
    assert h.sink.take() == b"one\r\n.\r\n+OK 5 octets\r\n"
    h.sink.finish_streams()
    assert h.sink.take() == b"two\r\n.\r\n+OK\r\n"
    assert h.sink.events[-1] == "resume"


def test_top():
    raw = b"Subject: t\r\nX: y\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    h = with_messages(raw)
    h.login()
    h.converse("""
        C: TOP 1 0
        S: +OK top of message follows
        S: Subject: t
        S: X: y
        S:
        S: .
        C: TOP 1 2
        S: +OK top of message follows
        S: Subject: t
        S: X: y
        S:
        S: l1
        S: ..l2
        S: .
        C: TOP 1
        S: -ERR syntax: TOP msg n
    """)


def test_top_of_message_edges():
    assert top_of_message(b"A: b\r\n", 5) == b"A: b\r\n"
    assert top_of_message(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"
    assert top_of_message(b"A: b\r\n\r\nx", 10) == b"A: b\r\n\r\nx"


# --- DELE / RSET / QUIT ----------------------------------------------------

def test_dele_rset_and_listing():
    h = with_messages(b"a\r\n", b"bb\r\n")
    h.login()
    h.converse("""
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 1
        S: -ERR message 1 already deleted
        C: DELE 3
        S: -ERR no such message
        C: LIST
        S: +OK scan listing follows
        S: 2 4
        S: .
        C: RETR 1
        S: -ERR no such message
        C: STAT
        S: +OK 1 4
        C: RSET
        S: +OK maildrop has 2 messages (7 octets)
        C: NOOP
        S: +OK
    """)


def test_quit_expunges_marked_messages_before_ok():
    h = with_messages(b"a\r\n", b"bb\r\n", b"ccc\r\n")
    h.login()
    h.send(b"DELE 1\r\nDELE 3\r\n")
    h.store.hold_writes = True
    assert h.send(b"QUIT\r\n") == b""  # nothing before the flag write is durable
    assert h.session.state is State.UPDATE
    h.store.held.pop(0).callback(None)  # store_flags committed; expunge starts
    assert h.sink.take() == b""
    h.store.held.pop(0).callback(None)  # expunge committed
    assert h.sink.take() == f"+OK {HOSTNAME} POP3 server signing off\r\n".encode()
    assert h.sink.events[-1] == "close"
    assert h.store.calls == [
        ("store_flags", ALICE, 7, (1, 3), "+", ("\\Deleted",)),
        ("expunge", ALICE, 7, (1, 3)),
    ]
    assert [m.uid for m in h.store.messages[ALICE]] == [2]


def test_quit_store_failure_reports_not_removed():
    h = with_messages(b"a\r\n")
    h.login()
    h.send(b"DELE 1\r\n")
    h.store.write_error = StoreTemporaryError("full")
    assert h.send(b"QUIT\r\n") == b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"
    assert h.sink.events[-1] == "close"


def test_dropped_connection_expunges_nothing():
    h = with_messages(b"a\r\n")
    h.login()
    h.send(b"DELE 1\r\n")
    h.session.connection_lost()
    assert h.store.calls == []
    assert len(h.store.messages[ALICE]) == 1
    assert h.send(b"QUIT\r\n") == b""


def test_quit_in_authorization_and_without_deletions():
    h = Harness()
    h.sink.take()
    assert h.send(b"QUIT\r\nNOOP\r\n") == f"+OK {HOSTNAME} POP3 server signing off\r\n".encode()
    assert h.sink.events == ["close"]
    h = with_messages(b"a\r\n")
    h.login()
    assert h.send(b"QUIT\r\n").startswith(b"+OK")
    assert h.store.calls == []


# --- limits -------------------------------------------------------------------

def test_line_too_long_is_skipped_and_resynchronised():
    h = Harness(pop3_line_max=255)
    h.sink.take()
    assert h.send(b"NOOP " + b"x" * 250) == b""
    assert h.send(b"x" * 10) == b"-ERR line too long\r\n"
    assert len(h.session._input) == 0  # nothing of the long line is kept
    assert h.send(b"y" * 10000) == b""
    assert h.send(b"USER evil\r\nCAPA\r\n").startswith(b"+OK capability list follows\r\n")


def test_line_too_long_within_one_chunk():
    h = Harness(pop3_line_max=255)
    h.sink.take()
    out = h.send(b"USER " + b"a" * 300 + b"\r\nNOOP\r\n")
    assert out == b"-ERR line too long\r\n-ERR command not valid in this state\r\n"


def test_line_of_exactly_the_limit_is_accepted():
    h = Harness(pop3_line_max=255)
    h.sink.take()
    line = b"USER " + b"a" * 250
    assert len(line) == 255
    assert h.send(line + b"\r") == b""
    assert h.send(b"\n") == b"+OK send PASS\r\n"


def test_bad_command_limit_closes():
    h = Harness(pop3_bad_commands_max=3)
    h.sink.take()
    h.converse("""
        C: FOO
        S: -ERR unknown command
        C: STAT
        S: -ERR command not valid in this state
        C: LIST 1
        S: -ERR too many bad commands, closing connection
    """)
    assert h.sink.events == ["close"]
    assert h.send(b"CAPA\r\n") == b""


def test_failed_logins_are_not_bad_commands():
    h = Harness(pop3_bad_commands_max=2)
    h.sink.take()
    for _ in range(3):
        assert h.send(b"USER a@example.test\r\nPASS no\r\n").endswith(b"[AUTH] authentication failed\r\n")
    assert h.sink.events == []


def test_idle_timeout_closes_without_reply():
    h = Harness(pop3_idle_timeout=600)
    h.sink.take()
    h.clock.advance(599)
    h.send(b"NOOP\r\n")  # activity restarts the timer
    h.clock.advance(599)
    assert h.sink.events == []
    h.clock.advance(1)
    assert h.sink.events == ["close"]
    assert h.sink.take() == b""  # RFC 1939 §3: no response


def test_idle_timer_stopped_while_command_waits():
    h = Harness(pop3_idle_timeout=600)
    h.auth.hold = True
    h.send(b"USER alice@example.test\r\nPASS s3cret pw\r\n")
    assert h.clock.getDelayedCalls() == []
    h.auth.release()
    assert [c.getTime() for c in h.clock.getDelayedCalls()] == [600]


def test_connection_lost_cancels_timer_and_logs_one_line():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = with_messages(b"a\r\n")
        h.login()
        h.session.connection_lost()
        h.session.connection_lost()
    finally:
        globalLogPublisher.removeObserver(events.append)
    lines = [e for e in events if e.get("log_namespace") == "mailserverd.pop3"]
    assert len(lines) == 1
    assert lines[0]["log_format"].startswith("connection ")
    assert (lines[0]["peer"], lines[0]["tls"], lines[0]["user"]) == ("192.0.2.7", True, ALICE)
    assert h.clock.getDelayedCalls() == []


def test_unexpected_exception_is_logged_and_connection_survives():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h = with_messages(b"a\r\n")
        h.login()
        h.store.read_error = ZeroDivisionError("bug")
        out = h.send(b"RETR 1\r\nNOOP\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert out == b"-ERR [SYS/TEMP] temporary failure, try again later\r\n+OK\r\n"
    failures = [e for e in events if e.get("log_failure") is not None]
    assert len(failures) == 1 and failures[0]["log_level"] is LogLevel.critical
    assert failures[0]["log_failure"].check(ZeroDivisionError)
    assert h.sink.events == []


def test_commands_are_case_insensitive_and_unknown_rejected():
    h = Harness()
    h.sink.take()
    h.converse("""
        C: user alice@example.test
        S: +OK send PASS
        C: APOP alice c4c9334bac560ecc979e58001b3e22fb
        S: -ERR unknown command
        C: XTND XLST
        S: -ERR unknown command
    """)
    assert h.send(b"\r\n") == b"-ERR unknown command\r\n"
