"""IMAP session transcripts (C:/S:) against the sans-I/O core with fakes and a Clock."""

from __future__ import annotations

from mailserverd.auth.accounts import AuthThrottled, AuthUnavailable
from mailserverd.store.errors import StoreTemporaryError

from imap_fakes import HOSTNAME, PASSWORD, USER, Harness

SIMPLE = b"From: Bob <bob@example.test>\r\nSubject: hi\r\n\r\nHello\r\n"

from mailserverd.imap.session import BASE_CAPABILITIES  # noqa: E402
from mailserverd.limits import Limits as _Limits  # noqa: E402

#: The capabilities every session lists, and the AUTH= ones listed before login over TLS.
CAPS = " ".join(BASE_CAPABILITIES).encode() + b" APPENDLIMIT=%d" % _Limits().message_size_max
AUTH = b"AUTH=SCRAM-SHA-256 AUTH=PLAIN"


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1]


# ---------------------------------------------------------------- greeting, CAPABILITY


def test_greeting_before_tls_advertises_starttls_and_logindisabled():
    h = Harness(tls_active=False)
    assert h.greeting == (b"* OK [CAPABILITY " + CAPS + b" STARTTLS LOGINDISABLED] "
                          + HOSTNAME.encode() + b" ready\r\n")


def test_capability_over_tls():
    h = Harness(tls_active=True)
    assert h.c(b"a CAPABILITY\r\n") == (b"* CAPABILITY " + CAPS + b" " + AUTH + b"\r\n"
                                        b"a OK Capability completed\r\n")


def test_capability_with_plaintext_allowed_has_no_logindisabled():
    h = Harness(tls_active=False, allow_plaintext=True)
    assert h.c(b"a capability\r\n").startswith(b"* CAPABILITY " + CAPS + b" " + AUTH + b" STARTTLS\r\n")


def test_capability_takes_no_arguments():
    assert Harness().c(b"a CAPABILITY x\r\n") == b"a BAD Unexpected extra arguments\r\n"


def test_noop_and_logout():
    h = Harness()
    assert h.c(b"a NOOP\r\n") == b"a OK NOOP completed\r\n"
    assert h.c(b"b LOGOUT\r\n") == b"* BYE Logging out\r\nb OK Logout completed\r\n"
    assert h.closed
    assert h.c(b"c NOOP\r\n") == b""


# ---------------------------------------------------------------- STARTTLS


def test_starttls_then_capabilities_change():
    h = Harness(tls_active=False)
    assert h.c(b"a STARTTLS\r\n") == b"a OK Begin TLS negotiation now\r\n"
    assert h.out.events == ["start_tls"]
    assert h.c(b"b CAPABILITY\r\n") == b"* CAPABILITY " + CAPS + b" " + AUTH + b"\r\nb OK Capability completed\r\n"


def test_starttls_discards_pipelined_plaintext():
    # CVE-2011-0411 class: the LOGIN was injected in clear before the handshake.
    h = Harness(tls_active=False, allow_plaintext=True)
    reply = h.c(b"a STARTTLS\r\nb LOGIN alice@example.test \"correct horse\"\r\n")
    assert reply == b"a OK Begin TLS negotiation now\r\n"
    assert h.auth.calls == []
    assert h.c(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"
    assert h.session.user is None


def test_starttls_refused_over_tls():
    assert Harness(tls_active=True).c(b"a STARTTLS\r\n") == b"a BAD TLS is already active\r\n"


def test_starttls_refused_after_login():
    h = Harness(tls_active=False, allow_plaintext=True)
    h.login()
    assert h.c(b"a STARTTLS\r\n") == b"a BAD STARTTLS is not allowed in this state\r\n"


# ---------------------------------------------------------------- LOGIN


def test_login_refused_before_tls():
    h = Harness(tls_active=False)
    assert h.c(b'a LOGIN alice@example.test "correct horse"\r\n') == (
        b"a NO [PRIVACYREQUIRED] Log in over TLS (use STARTTLS)\r\n")
    assert h.auth.calls == []


def test_login_ok_reports_capabilities():
    h = Harness()
    assert h.c(b'a LOGIN Alice@Example.test "correct horse"\r\n') == (
        b"a OK [CAPABILITY " + CAPS + b"] Logged in\r\n")
    assert h.session.user == USER
    assert h.auth.calls == [("Alice@Example.test", PASSWORD, "192.0.2.7", "LOGIN")]


def test_login_with_literals():
    h = Harness()
    assert h.c(b"a LOGIN {18}\r\n") == b"+ Ready for literal data\r\n"
    assert h.c(b"alice@example.test {13}\r\n") == b"+ Ready for literal data\r\n"
    assert h.c(b"correct horse\r\n").startswith(b"a OK")


def test_login_with_non_synchronizing_literals():
    h = Harness()
    assert h.c(b"a LOGIN {18+}\r\nalice@example.test {13+}\r\ncorrect horse\r\n").startswith(b"a OK")


def test_login_failed():
    h = Harness()
    assert h.c(b"a LOGIN alice@example.test wrong\r\n") == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert h.session.user is None


def test_login_throttled_and_unavailable():
    h = Harness()
    h.auth.error = AuthThrottled("x")
    assert h.c(b"a LOGIN u p\r\n").startswith(b"a NO [UNAVAILABLE] ")
    h.auth.error = AuthUnavailable("x")
    assert h.c(b"b LOGIN u p\r\n").startswith(b"b NO [UNAVAILABLE] ")


def test_login_syntax_errors():
    h = Harness()
    assert h.c(b"a LOGIN onlyuser\r\n") == b"a BAD Expected a space between arguments\r\n"
    assert h.c(b'b LOGIN "open\r\n') == b"b BAD Quoted string not closed\r\n"


def test_login_twice_is_bad():
    h = Harness()
    h.login()
    assert h.c(b"a LOGIN u p\r\n") == b"a BAD LOGIN is not allowed in this state\r\n"


def test_pipelined_command_waits_for_pending_login():
    h = Harness()
    h.auth.hold = True
    assert h.c(b'a LOGIN alice@example.test "correct horse"\r\nb SELECT INBOX\r\n') == b""
    h.auth.release()
    reply = h.out.take()
    assert reply.startswith(b"a OK [CAPABILITY")
    assert reply.endswith(b"b OK [READ-WRITE] Select completed\r\n")


def test_output_after_disconnect_is_dropped():
    h = Harness()
    h.auth.hold = True
    h.c(b'a LOGIN alice@example.test "correct horse"\r\n')
    h.session.connection_lost()
    h.auth.release()
    assert h.out.take() == b""


# ---------------------------------------------------------------- states and errors


def test_commands_need_the_right_state():
    h = Harness()
    assert h.c(b"a SELECT INBOX\r\n") == b"a BAD Log in first\r\n"
    h.login()
    assert h.c(b"b FETCH 1 FLAGS\r\n") == b"b BAD No mailbox selected\r\n"


def test_unknown_commands():
    h = Harness()
    assert h.c(b"a FROB\r\n") == b"a BAD Unknown command\r\n"
    assert h.c(b"c UID FROB 1\r\n") == b"c BAD Unknown command\r\n"


def test_missing_tag_gets_untagged_bad():
    h = Harness()
    assert h.c(b"(\r\n") == b"* BAD Missing or invalid tag\r\n"
    assert h.c(b"\r\n") == b""  # empty lines are ignored


def test_bad_command_limit_closes():
    h = Harness(imap_bad_commands_max=3)
    assert h.c(b"a X\r\nb X\r\n") == b"a BAD Unknown command\r\nb BAD Unknown command\r\n"
    assert not h.closed
    assert h.c(b"c X\r\nd NOOP\r\n") == b"c BAD Unknown command\r\n* BYE Too many invalid commands\r\n"
    assert h.closed


def test_too_long_line_closes():
    h = Harness(imap_line_max=1000)
    reply = h.c(b"a NOOP " + b"x" * 2000)
    assert reply == b"* BAD [TOOBIG] Command line too long\r\n* BYE Too long command line\r\n"
    assert h.closed


def test_literal_too_big_is_refused_and_never_run():
    h = Harness(imap_literal_max=1024)
    h.login()
    assert h.c(b"a SELECT {2000}\r\n") == b"a BAD [TOOBIG] Literal too big\r\n"
    assert h.c(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_literal_too_big_sent_without_waiting_closes():
    h = Harness(imap_literal_max=1024)
    h.login()
    reply = h.c(b"a SELECT {2000}\r\nb LOGOUT\r\n")
    assert reply == b"a BAD [TOOBIG] Literal too big\r\n* BYE Literal sent without waiting for continuation\r\n"
    assert h.closed


def test_non_synchronizing_literal_too_big_is_swallowed():
    h = Harness(imap_literal_max=1024)
    h.login()
    injected = (b"x LOGOUT\r\n" * 200)[:2000]
    reply = h.c(b"a SELECT {2000+}\r\n" + injected + b"\r\nb NOOP\r\n")
    assert reply == b"a BAD [TOOBIG] Literal too big\r\nb OK NOOP completed\r\n"
    assert not h.closed


def test_literals_before_login_are_limited_to_a_line():
    h = Harness(imap_line_max=1000)
    assert h.c(b"a LOGIN {1001}\r\n") == b"a BAD [TOOBIG] Literal too big\r\n"
    assert h.c(b"a LOGIN {1000}\r\n") == b"+ Ready for literal data\r\n"


def test_unexpected_exception_is_a_temporary_no_and_the_session_survives():
    h = Harness()
    h.login()

    def broken(user, name):
        raise RuntimeError("bug")

    h.store.get_mailbox = broken
    assert h.c(b"a SELECT INBOX\r\n") == b"a NO [UNAVAILABLE] Internal error, try again later\r\n"
    assert h.c(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_store_errors_are_mapped():
    h = Harness()
    h.login()

    def unavailable(user, name):
        raise StoreTemporaryError("map full")

    h.store.get_mailbox = unavailable
    assert h.c(b"a SELECT INBOX\r\n") == (
        b"a NO [UNAVAILABLE] Temporary storage failure, try again later\r\n")


# ---------------------------------------------------------------- timeouts


def test_unauthenticated_timeout():
    h = Harness(imap_unauth_timeout=60)
    h.clock.advance(59)
    h.c(b"a NOOP\r\n")
    assert not h.closed
    h.clock.advance(1)
    assert h.out.take() == b"* BYE Autologout; idle for too long\r\n"
    assert h.closed


def test_login_stops_the_unauthenticated_timer():
    h = Harness(imap_unauth_timeout=60, imap_idle_timeout=600)
    h.login()
    h.clock.advance(599)
    assert not h.closed
    h.clock.advance(1)
    assert h.closed


def test_idle_timer_restarts_on_input():
    h = Harness(imap_idle_timeout=600)
    h.login()
    h.clock.advance(500)
    h.c(b"a NOOP\r\n")
    h.clock.advance(500)
    assert not h.closed
    h.clock.advance(100)
    assert h.out.take().endswith(b"* BYE Autologout; idle for too long\r\n")
    assert h.closed
    assert h.clock.getDelayedCalls() == []


def test_logout_cancels_timers():
    h = Harness()
    h.c(b"a LOGOUT\r\n")
    assert h.clock.getDelayedCalls() == []


# ---------------------------------------------------------------- SELECT / EXAMINE


def test_select_response_lines():
    h = Harness()
    h.store.add_message(USER, "INBOX", SIMPLE, flags={"\\Seen"})
    h.store.add_message(USER, "INBOX", SIMPLE, flags={"$Label"})
    h.store.add_message(USER, "INBOX", SIMPLE)
    box = h.store.boxes[USER]["INBOX"]
    h.login()
    assert lines(h.c(b"a SELECT inbox\r\n")) == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)",
        b"* 3 EXISTS",
        b"* 0 RECENT",
        b"* OK [UNSEEN 2] Message 2 is the first unseen",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label \\*)] Flags permitted",
        b"* OK [UIDVALIDITY %d] UIDs valid" % box["uidvalidity"],
        b"* OK [UIDNEXT 4] Predicted next UID",
        b"* OK [MAILBOXID (F%x-%x)] Mailbox ID" % (box["uidvalidity"], box["id"]),
        b"a OK [READ-WRITE] Select completed",
    ]
    assert h.session.selected.uids == [1, 2, 3]


def test_examine_is_read_only_and_empty_mailbox_has_no_unseen():
    h = Harness()
    h.login()
    reply = lines(h.c(b"a EXAMINE INBOX\r\n"))
    assert b"* 0 EXISTS" in reply
    assert not any(b"UNSEEN" in line for line in reply)
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox" in reply
    assert reply[-1] == b"a OK [READ-ONLY] Examine completed"


def test_select_modified_utf7_name():
    h = Harness()
    h.store.add_mailbox(USER, "日本語")
    h.login()
    assert h.c(b"a SELECT &ZeVnLIqe-\r\n").endswith(b"a OK [READ-WRITE] Select completed\r\n")
    assert h.c(b"b SELECT &ZeVnLIqe\r\n").startswith(b"b BAD Mailbox name is not valid modified UTF-7")


def test_select_missing_mailbox_deselects():
    h = Harness()
    h.select()
    # RFC 9051 §6.3.2, RFC 7162 §3.2.11: closing the selected mailbox says CLOSED.
    assert h.c(b"a SELECT nosuch\r\n") == (b"* OK [CLOSED] Previous mailbox closed\r\n"
                                            b"a NO [NONEXISTENT] Mailbox doesn't exist\r\n")
    assert h.session.selected is None
    assert h.c(b"b FETCH 1 FLAGS\r\n") == b"b BAD No mailbox selected\r\n"


# NOOP reporting other sessions' changes (EXPUNGE, EXISTS, FETCH) needs the store's
# change log: tests/unit/test_imap_condstore.py runs it on the real store.


def test_continuation_for_a_later_command_waits_for_the_earlier_one():
    h = Harness()
    h.auth.hold = True
    assert h.c(b'a LOGIN alice@example.test "correct horse"\r\nb SELECT {5}\r\n') == b""
    h.auth.release()
    assert h.out.take().endswith(b"a OK [CAPABILITY " + CAPS + b"] Logged in\r\n+ Ready for literal data\r\n")
    assert h.c(b"INBOX\r\n").endswith(b"b OK [READ-WRITE] Select completed\r\n")
