"""POP3 AUTH (RFC 5034) with PLAIN and SCRAM-SHA-256, UTF8 (RFC 6856) and [IN-USE] (RFC 2449 §8.1.2)."""

from __future__ import annotations

import base64

import pytest

from mailserverd.auth.accounts import AuthThrottled, AuthUnavailable
from mailserverd.pop3.commands import State
from mailserverd.pop3.maildrop import maildrop_locks
from mailserverd.store.errors import StoreTemporaryError

from pop3_fakes import HOSTNAME, Harness
from test_sasl import ScramClient

ALICE = "alice@example.test"
PASSWORD = "s3cret pw"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


PLAIN_ALICE = b64(b"\0" + ALICE.encode() + b"\0" + PASSWORD.encode())


def started(**kwargs) -> Harness:
    harness = Harness(**kwargs)
    harness.sink.take()
    return harness


# --- AUTH PLAIN -------------------------------------------------------------

def test_auth_plain_with_initial_response():
    h = started()
    h.store.add_message(ALICE, b"a\r\n")
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 1 messages (3 octets)
        C: STAT
        S: +OK 1 3
    """)
    assert h.auth.calls == [(ALICE, PASSWORD, "192.0.2.7", "PLAIN")]
    assert h.session.state is State.TRANSACTION


def test_auth_plain_with_continuation_and_lowercase_name():
    h = started()
    h.converse(f"""
        C: auth plain
        S: +
        C: {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)
    assert h.session.state is State.TRANSACTION


def test_auth_plain_pipelined_with_its_response_and_next_command():
    h = started()
    out = h.send(f"AUTH PLAIN\r\n{PLAIN_ALICE}\r\nSTAT\r\n".encode())
    assert out == b"+ \r\n+OK maildrop has 0 messages (0 octets)\r\n+OK 0 0\r\n"


def test_auth_plain_wrong_password_and_other_authzid():
    wrong = b64(b"\0" + ALICE.encode() + b"\0nope")
    other = b64(b"bob@example.test\0" + ALICE.encode() + b"\0" + PASSWORD.encode())
    h = started()
    h.converse(f"""
        C: AUTH PLAIN {wrong}
        S: -ERR [AUTH] authentication failed
        C: AUTH PLAIN {other}
        S: -ERR [AUTH] authentication failed
        C: AUTH PLAIN =
        S: -ERR malformed authentication exchange
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)


@pytest.mark.parametrize("error", [AuthThrottled("x"), AuthUnavailable("y")])
def test_auth_plain_throttled_or_unavailable_is_temporary(error):
    h = started()
    h.auth.error = error
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: -ERR [SYS/TEMP] authentication temporarily unavailable, try again later
    """)
    assert h.session.state is State.AUTHORIZATION


def test_auth_cancelled_with_star_then_session_goes_on():
    h = started()
    h.converse(f"""
        C: AUTH PLAIN
        S: +
        C: *
        S: -ERR authentication cancelled
        C: AUTH
        S: +OK SASL mechanisms follow
        S: SCRAM-SHA-256
        S: PLAIN
        S: .
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)


def test_auth_bad_base64_initial_response_and_continuation():
    h = started(pop3_bad_commands_max=2)
    h.converse(f"""
        C: AUTH PLAIN %%%
        S: -ERR invalid base64 in authentication exchange
        C: AUTH PLAIN
        S: +
        C: not base64!
        S: -ERR invalid base64 in authentication exchange
        C: AUTH PLAIN
        S: +
        C: AGFsaWNl=
        S: -ERR invalid base64 in authentication exchange
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)
    assert h.auth.calls == [(ALICE, PASSWORD, "192.0.2.7", "PLAIN")]
    assert h.sink.events == []


def test_auth_response_line_is_not_run_as_a_command():
    h = started()
    h.converse("""
        C: AUTH PLAIN
        S: +
        C: QUIT
        S: -ERR malformed authentication exchange
    """)  # "QUIT" is base64 too: it went to the mechanism, which refused its bytes
    assert h.sink.events == []


def test_auth_response_over_the_line_limit_ends_the_exchange():
    h = started(pop3_line_max=255)
    h.converse("""
        C: AUTH PLAIN
        S: +
    """)
    assert h.send(b"A" * 300 + b"\r\nNOOP\r\n") == (
        b"-ERR line too long\r\n-ERR command not valid in this state\r\n")
    assert h.auth.calls == []


# --- AUTH SCRAM-SHA-256 ------------------------------------------------------

def scram_exchange(h: Harness, client: ScramClient, *, initial: bool) -> bytes:
    """Run AUTH SCRAM-SHA-256 up to the server-final challenge; returns that line."""
    if initial:
        challenge = h.send(f"AUTH SCRAM-SHA-256 {b64(client.first())}\r\n".encode())
    else:
        assert h.send(b"AUTH SCRAM-SHA-256\r\n") == b"+ \r\n"
        challenge = h.send(f"{b64(client.first())}\r\n".encode())
    assert challenge.startswith(b"+ ") and challenge.endswith(b"\r\n")
    server_first = base64.b64decode(challenge[2:-2], validate=True)
    return h.send(f"{b64(client.final(server_first))}\r\n".encode())


@pytest.mark.parametrize("initial", [False, True])
def test_auth_scram_full_exchange(initial):
    h = started()
    h.store.add_message(ALICE, b"hello\r\n")
    client = ScramClient(ALICE, PASSWORD)
    server_final = scram_exchange(h, client, initial=initial)
    assert server_final.startswith(b"+ ")
    assert client.server_final_ok(base64.b64decode(server_final[2:-2], validate=True))
    assert h.session.state is State.AUTHORIZATION  # not before the client's empty answer
    h.converse("""
        C:
        S: +OK maildrop has 1 messages (7 octets)
        C: UIDL
        S: +OK unique-id listing follows
        S: 1 1700000000.1
        S: .
    """)
    assert h.auth.calls == [(ALICE, None, "192.0.2.7", "SCRAM-SHA-256")]


def test_auth_scram_wrong_password():
    h = started()
    assert scram_exchange(h, ScramClient(ALICE, "wrong"), initial=False) == (
        b"-ERR [AUTH] authentication failed\r\n")
    assert h.session.state is State.AUTHORIZATION


@pytest.mark.parametrize("answer", [b"*", b"Zm9v"])
def test_auth_scram_final_challenge_needs_an_empty_answer(answer):
    h = started()
    assert scram_exchange(h, ScramClient(ALICE, PASSWORD), initial=True).startswith(b"+ ")
    assert h.send(answer + b"\r\n") == b"-ERR [AUTH] authentication failed\r\n"
    assert h.session.state is State.AUTHORIZATION


def test_auth_scram_cancel_and_throttle():
    h = started()
    h.converse("""
        C: AUTH SCRAM-SHA-256
        S: +
        C: *
        S: -ERR authentication cancelled
    """)
    h.auth.error = AuthThrottled("x")
    client = ScramClient(ALICE, PASSWORD)
    assert h.send(f"AUTH SCRAM-SHA-256 {b64(client.first())}\r\n".encode()) == (
        b"-ERR [SYS/TEMP] authentication temporarily unavailable, try again later\r\n")


def test_auth_scram_malformed_client_first():
    h = started()
    h.converse(f"""
        C: AUTH SCRAM-SHA-256 {b64(b"p=tls-unique,,n=alice,r=abc")}
        S: -ERR malformed authentication exchange
    """)


# --- AUTH policy and listing -----------------------------------------------

def test_auth_refused_before_tls_unless_plaintext_allowed():
    h = started(tls_active=False)
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: -ERR [AUTH] authentication disallowed without TLS, use STLS
        C: AUTH SCRAM-SHA-256
        S: -ERR [AUTH] authentication disallowed without TLS, use STLS
        C: AUTH
        S: +OK SASL mechanisms follow
        S: .
    """)
    assert h.auth.calls == []
    h = started(tls_active=False, allow_plaintext=True)
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)


def test_auth_after_stls():
    h = started(tls_active=False)
    h.send(b"STLS\r\n")
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: +OK maildrop has 0 messages (0 octets)
    """)


def test_auth_lists_and_refuses_unknown_mechanisms():
    h = started()
    h.converse("""
        C: AUTH
        S: +OK SASL mechanisms follow
        S: SCRAM-SHA-256
        S: PLAIN
        S: .
        C: AUTH LOGIN
        S: -ERR unsupported authentication mechanism
        C: AUTH CRAM-MD5 Zm9v
        S: -ERR unsupported authentication mechanism
        C: AUTH PLAIN a b
        S: -ERR syntax: AUTH [mechanism [initial-response]]
    """)


def test_auth_not_valid_in_transaction():
    h = started()
    h.login()
    h.converse(f"""
        C: AUTH PLAIN {PLAIN_ALICE}
        S: -ERR command not valid in this state
    """)


def test_auth_forgets_a_pending_user():
    h = started()
    h.converse("""
        C: USER alice@example.test
        S: +OK send PASS
        C: AUTH PLAIN
        S: +
        C: *
        S: -ERR authentication cancelled
        C: PASS s3cret pw
        S: -ERR no USER given
    """)


def test_capa_in_transaction_still_lists_sasl_and_user_but_not_stls():
    h = started(tls_active=False, allow_plaintext=True)
    h.login()
    out = h.send(b"CAPA\r\n")
    assert b"\r\nUSER\r\nSASL SCRAM-SHA-256 PLAIN\r\n" in out  # RFC 2449 §5: both states
    assert b"STLS" not in out


def test_connection_dropped_during_auth_enters_nothing():
    h = started()
    h.auth.hold = True
    h.send(f"AUTH PLAIN {PLAIN_ALICE}\r\n".encode())
    h.session.connection_lost()
    h.auth.release()
    assert h.session.state is State.AUTHORIZATION
    assert maildrop_locks(h.ctx).holder(ALICE) is None


# --- UTF8 -------------------------------------------------------------------

def test_utf8_command_then_stls_refused():
    h = started(tls_active=False)
    h.converse("""
        C: UTF8
        S: +OK UTF8 enabled
        C: STLS
        S: -ERR STLS not permitted after UTF8
        C: UTF8 now
        S: -ERR syntax: UTF8
    """)
    assert h.session.utf8_mode
    assert b"STLS" not in h.send(b"CAPA\r\n")
    assert h.sink.events == []


def test_utf8_not_valid_in_transaction():
    h = started()
    h.login()
    assert h.send(b"UTF8\r\n") == b"-ERR command not valid in this state\r\n"


@pytest.mark.parametrize("utf8_first", [False, True])
def test_utf8_user_name_and_password(utf8_first):
    # RFC 6856 §2.2: with "UTF8 USER" announced, UTF-8 credentials may come before UTF8 too.
    user, password = "jörg@exämple.test", "pässwörd ü"
    h = started(passwords={user: password})
    if utf8_first:
        assert h.send(b"UTF8\r\n") == b"+OK UTF8 enabled\r\n"
    out = h.send(f"USER {user}\r\nPASS {password}\r\n".encode("utf-8"))
    assert out == b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n"
    assert h.auth.calls == [(user, password, "192.0.2.7", "USER")]


def test_utf8_in_auth_plain():
    user, password = "jörg@exämple.test", "pässwörd"
    h = started(passwords={user: password})
    response = b64(b"\0" + user.encode() + b"\0" + password.encode())
    h.converse(f"""
        C: UTF8
        S: +OK UTF8 enabled
        C: AUTH PLAIN {response}
        S: +OK maildrop has 0 messages (0 octets)
    """)


def test_invalid_utf8_user_and_password_refused():
    # RFC 6856 §2.2: names and passwords that are not UTF-8 (RFC 3629) are rejected.
    h = started()
    assert h.send(b"USER al\xffce@example.test\r\n") == b"-ERR syntax: USER name\r\n"
    out = h.send(b"USER alice@example.test\r\nPASS s3cret\xc3\r\n")
    assert out == b"+OK send PASS\r\n-ERR [AUTH] authentication failed\r\n"
    assert h.auth.calls == []


# --- [IN-USE] ---------------------------------------------------------------

def second_connection(first: Harness, **kwargs) -> Harness:
    second = Harness(ctx=first.ctx, **kwargs)
    second.sink.take()
    return second


def test_second_session_gets_in_use_until_first_quits():
    first = started()
    first.store.add_message(ALICE, b"a\r\n")
    first.login()
    second = second_connection(first)
    second.converse(f"""
        C: USER alice@example.test
        S: +OK send PASS
        C: PASS s3cret pw
        S: -ERR [IN-USE] maildrop already in use by another session
        C: STAT
        S: -ERR command not valid in this state
        C: AUTH PLAIN {PLAIN_ALICE}
        S: -ERR [IN-USE] maildrop already in use by another session
    """)
    assert second.session.state is State.AUTHORIZATION
    first.send(b"DELE 1\r\nQUIT\r\n")
    assert second.login() == b"+OK send PASS\r\n+OK maildrop has 0 messages (0 octets)\r\n"


def test_in_use_ends_with_a_dropped_connection_or_idle_timeout():
    first = started()
    first.login()
    first.session.connection_lost()
    second = second_connection(first)
    assert second.login().endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")
    idle_timeout = second.ctx.config.limits.pop3_idle_timeout
    second.clock.advance(idle_timeout - 1)
    third = second_connection(first)
    assert third.login().endswith(b"-ERR [IN-USE] maildrop already in use by another session\r\n")
    second.clock.advance(1)  # the clock is shared: only the second session has been idle so long
    assert (second.sink.events, third.sink.events) == (["close"], [])
    assert third.login().endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")


def test_lock_held_until_update_of_a_dropped_quit_finishes():
    first = started()
    first.store.add_message(ALICE, b"a\r\n")
    first.store.add_message(ALICE, b"bb\r\n")
    first.login()
    first.send(b"DELE 1\r\n")
    first.store.hold_writes = True
    first.send(b"QUIT\r\n")
    first.session.connection_lost()  # the client gave up waiting for QUIT's +OK
    second = second_connection(first)
    assert second.login().endswith(b"-ERR [IN-USE] maildrop already in use by another session\r\n")
    first.store.hold_writes = False
    while first.store.held:
        first.store.held.pop(0).callback(None)
    assert second.login().endswith(b"+OK maildrop has 1 messages (4 octets)\r\n")


def test_failed_maildrop_open_releases_the_lock():
    first = started()
    real_get_mailbox = first.store.get_mailbox

    def broken(user, name):
        raise StoreTemporaryError("disk")
    first.store.get_mailbox = broken
    assert first.login().endswith(b"-ERR [SYS/TEMP] temporary failure, try again later\r\n")
    first.store.get_mailbox = real_get_mailbox
    second = second_connection(first)
    assert second.login().endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")


def test_other_users_are_not_locked_out():
    first = started(passwords={ALICE: PASSWORD, "bob@example.test": "pw2"})
    first.login()
    second = second_connection(first)
    assert second.login("bob@example.test", "pw2").endswith(b"+OK maildrop has 0 messages (0 octets)\r\n")
    assert f"+OK {HOSTNAME}".encode() in first.send(b"QUIT\r\n")


@pytest.mark.parametrize("utf8_mode", [False, True])
def test_message_with_utf8_headers_needs_utf8_mode(utf8_mode):
    # RFC 6856 §2.1: outside UTF-8 mode a message with UTF-8 headers is not sent as is.
    h = started()
    international = "Subject: grüße\r\n\r\nbody\r\n".encode("utf-8")
    eight_bit_body = "Subject: plain\r\n\r\ncafé\r\n".encode("utf-8")
    h.store.add_message(ALICE, international)
    h.store.add_message(ALICE, eight_bit_body)
    if utf8_mode:
        assert h.send(b"UTF8\r\n") == b"+OK UTF8 enabled\r\n"
    h.login()
    retr_1 = h.send(b"RETR 1\r\n")
    top_1 = h.send(b"TOP 1 0\r\n")
    if utf8_mode:
        assert retr_1.endswith(international + b".\r\n")
        assert top_1.startswith(b"+OK")
    else:
        assert retr_1 == b"-ERR [UTF8] message has UTF-8 headers, issue UTF8 first\r\n"
        assert top_1 == retr_1
    assert h.send(b"RETR 2\r\n").endswith(eight_bit_body + b".\r\n")  # 8BITMIME bodies go as stored
