"""SMTP AUTH on the submission listeners (RFC 4954), replayed against SMTPSession (no I/O).

Each mechanism is run the way a client runs it: PLAIN (RFC 4616), LOGIN
(draft-murchison-sasl-login) and SCRAM-SHA-256 (RFC 5802, RFC 7677), the
last with a client computed here from RFC 5802 §3, independently of the
server's helpers. Then every failure reply, the 421 after repeated failures,
and the pipelining rules: a command pipelined after a successful AUTH runs,
a line that answers a pending challenge never runs as a command.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest

from mailserverd.auth.accounts import AuthThrottled, AuthUnavailable
from mailserverd.limits import Limits
from mailserverd.smtp.session import ListenerPolicy, Peer, SMTPSession
from session_fakes import FakeAuthenticator
from test_smtp_session import HOST, Client, FakeDelivery, transcript

ALICE, ALICE_PASSWORD = "alice@example.org", "alice's secret"
BOB, BOB_PASSWORD = "bob@example.org", "bob pw"
PASSWORDS = {ALICE: ALICE_PASSWORD, BOB: BOB_PASSWORD}


def b64(data: bytes | str) -> str:
    """Base64 text of ``data`` (str is UTF-8 encoded), as a client sends it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def plain(user: str = ALICE, password: str = ALICE_PASSWORD, authzid: str = "") -> str:
    """An RFC 4616 PLAIN message, base64: authzid NUL authcid NUL passwd."""
    return b64(f"{authzid}\0{user}\0{password}")


def make_submission(tls_active=True, allow_plaintext=False, delivery=None, authenticator=None,
                    kind="submission", starttls=True, **limit_overrides):
    """A submission session (AUTH offered and required) with the shared fakes.

    Returns (client, delivery, authenticator); the greeting is already taken.
    """
    delivery = delivery or FakeDelivery()
    authenticator = authenticator or FakeAuthenticator(dict(PASSWORDS))
    policy = ListenerPolicy(kind, starttls_available=starttls, auth_offered=True,
                            auth_required=True, allow_plaintext=allow_plaintext)
    session = SMTPSession(policy, delivery, Limits(**limit_overrides), HOST,
                          Peer("192.0.2.7", 40000), tls_active=tls_active,
                          authenticator=authenticator)
    client = Client(session)
    client.take()
    return client, delivery, authenticator


def ehlo_lines(name: str = "c", starttls: bool = False, auth: bool = True) -> str:
    """The S: lines of our EHLO reply on a submission listener (RFC 5321 §4.1.1.1, RFC 4954 §3)."""
    keywords = ["PIPELINING", "SIZE 52428800", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                "CHUNKING", "DSN", "LIMITS RCPTMAX=100"]
    keywords += ["STARTTLS"] if starttls else []
    keywords += ["AUTH SCRAM-SHA-256 PLAIN LOGIN"] if auth else []
    lines = [f"{HOST} Hello {name}"] + keywords
    return "\n".join(f"S: 250{'-' if n < len(lines) - 1 else ' '}{line}" for n, line in enumerate(lines))


def authenticate(client: Client, user: str = ALICE, password: str = ALICE_PASSWORD) -> None:
    """EHLO and a successful AUTH PLAIN with an initial response."""
    client.send(f"EHLO c\r\nAUTH PLAIN {plain(user, password)}\r\n".encode())
    assert client.take().endswith(b"235 2.7.0 Authentication successful\r\n")
    assert client.session.authenticated_user == user


def last_line(output: bytes) -> bytes:
    """The last reply line of ``output``, CRLF included."""
    return output[output.rstrip(b"\r\n").rfind(b"\r\n") + 2:]


def challenge_of(reply: bytes) -> bytes:
    """The decoded data of one ``334`` reply line (RFC 4954 §4)."""
    assert reply.startswith(b"334 ") and reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1, reply
    return base64.b64decode(reply[4:-2].strip(), validate=True)


# --- RFC 5802 client side, from §3 (SCRAM-SHA-256: RFC 7677)


class ScramClient:
    """The client half of SCRAM-SHA-256 without channel binding (gs2 header ``n,,``)."""

    def __init__(self, user: str, password: str, nonce: str | None = None):
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self.first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        """The client-final-message for ``server_first`` (checks the nonce prefix)."""
        attributes = dict(item.split("=", 1) for item in server_first.decode("ascii").split(","))
        assert attributes["r"].startswith(self.nonce) and len(attributes["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode("utf-8"),
                                     base64.b64decode(attributes["s"]), int(attributes["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={b64('n,,')},r={attributes['r']}"
        auth_message = ",".join((self.first_bare, server_first.decode("ascii"), without_proof)).encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        assert server_final == b"v=" + base64.b64encode(self.server_signature)


# --- each mechanism


def test_ehlo_offers_auth_over_tls_and_plain_initial_response_authenticates():
    client, delivery, authenticator = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: MAIL FROM:<{ALICE}>
        S: 530 5.7.0 Authentication required
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
        C: EHLO c
        {ehlo_lines(auth=False)}
        C: AUTH PLAIN {plain()}
        S: 503 5.5.1 Already authenticated
        C: MAIL FROM:<{ALICE}>
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<bob@example.org>
        S: 250 2.1.5 Recipient ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: hi
        C: .
        S: 250 2.0.0 Ok: queued as QID1
    """)
    assert authenticator.calls == [(ALICE, ALICE_PASSWORD, "192.0.2.7", "PLAIN")]
    [(sender, _, users, raw, info)] = delivery.delivered
    assert (sender, users, raw) == (ALICE, [BOB], b"hi\r\n")
    # RFC 3848 §2: ESMTPSA, authenticated over TLS
    assert (info.protocol, info.authenticated_user) == ("ESMTPSA", ALICE)


def test_plain_without_initial_response_gets_an_empty_challenge():
    client, _, _ = make_submission()
    client.send(b"EHLO c\r\nAUTH plain\r\n")
    reply = last_line(client.take())
    assert challenge_of(reply) == b""
    client.send(f"{plain()}\r\n".encode())
    assert client.take() == b"235 2.7.0 Authentication successful\r\n"
    assert client.session.authenticated_user == ALICE


def test_plain_with_matching_authzid_and_case_insensitive_user():
    client, _, _ = make_submission()
    client.send(f"EHLO c\r\nAUTH PLAIN {plain('Alice@Example.ORG', authzid=ALICE)}\r\n".encode())
    assert client.take().endswith(b"235 2.7.0 Authentication successful\r\n")
    assert client.session.authenticated_user == ALICE


def test_plain_with_another_authzid_is_refused():
    """RFC 4616 §2: no proxy authorization here; acting as another user is 535."""
    client, _, _ = make_submission()
    client.send(f"EHLO c\r\nAUTH PLAIN {plain(authzid=BOB)}\r\n".encode())
    assert client.take().endswith(b"535 5.7.8 Authentication credentials invalid\r\n")
    assert client.session.authenticated_user == ""


def test_login_with_and_without_initial_response():
    client, _, authenticator = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH LOGIN
        S: 334 {b64('Username:')}
        C: {b64(ALICE)}
        S: 334 {b64('Password:')}
        C: {b64(ALICE_PASSWORD)}
        S: 235 2.7.0 Authentication successful
    """)
    client, _, authenticator = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH LOGIN {b64(BOB)}
        S: 334 {b64('Password:')}
        C: {b64(BOB_PASSWORD)}
        S: 235 2.7.0 Authentication successful
    """)
    assert authenticator.calls == [(BOB, BOB_PASSWORD, "192.0.2.7", "LOGIN")]


@pytest.mark.parametrize("initial_response", [False, True])
def test_scram_sha_256_full_exchange_with_server_final_as_a_challenge(initial_response):
    """RFC 5802 §5 + RFC 4954 §4: the server-final "v=" goes out as a 334 that
    must be answered with an empty line before the 235."""
    client, delivery, _ = make_submission()
    scram = ScramClient(ALICE, ALICE_PASSWORD)
    client.send(b"EHLO c\r\n")
    client.take()
    if initial_response:
        client.send(f"AUTH SCRAM-SHA-256 {b64(scram.first())}\r\n".encode())
    else:
        client.send(b"AUTH SCRAM-SHA-256\r\n")
        assert challenge_of(client.take()) == b""
        client.send(f"{b64(scram.first())}\r\n".encode())
    server_first = challenge_of(client.take())
    client.send(f"{b64(scram.final(server_first))}\r\n".encode())
    scram.verify(challenge_of(client.take()))
    assert client.session.authenticated_user == ""  # not before the empty answer
    client.send(b"\r\nMAIL FROM:<alice@example.org>\r\n")
    assert client.take() == b"235 2.7.0 Authentication successful\r\n250 2.1.0 Sender ok\r\n"
    assert client.session.authenticated_user == ALICE


def scram_until_server_final(client: Client, user=ALICE, password=ALICE_PASSWORD) -> bytes:
    """Run SCRAM up to the server's answer to client-final; return that reply line."""
    scram = ScramClient(user, password)
    client.send(f"EHLO c\r\nAUTH SCRAM-SHA-256 {b64(scram.first())}\r\n".encode())
    server_first = challenge_of(last_line(client.take()))
    client.send(f"{b64(scram.final(server_first))}\r\n".encode())
    return client.take()


def test_scram_wrong_password_is_535():
    client, _, _ = make_submission()
    assert scram_until_server_final(client, password="wrong") == (
        b"535 5.7.8 Authentication credentials invalid\r\n")
    assert client.session.authenticated_user == ""


def test_scram_unknown_user_is_535_like_a_wrong_password():
    client, _, _ = make_submission()
    assert scram_until_server_final(client, user="nobody@example.org") == (
        b"535 5.7.8 Authentication credentials invalid\r\n")


def test_scram_server_final_answered_with_data_fails_and_the_line_is_not_a_command():
    client, _, _ = make_submission()
    assert scram_until_server_final(client).startswith(b"334 ")
    client.send(b"NOOP\r\n")  # not the empty answer: AUTH fails, NOOP is not run
    assert client.take() == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert client.session.authenticated_user == ""
    assert client.session.auth_failures == 1


def test_scram_server_final_answered_with_cancel_fails():
    client, _, _ = make_submission()
    assert scram_until_server_final(client).startswith(b"334 ")
    client.send(b"*\r\n")
    assert client.take() == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert client.session.authenticated_user == ""


# --- failure replies (RFC 4954 §4, §6)


def test_mechanisms_need_tls_unless_plaintext_is_allowed():
    client, _, _ = make_submission(tls_active=False)
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines(starttls=True, auth=False)}
        C: AUTH PLAIN {plain()}
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        C: AUTH LOGIN
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        C: AUTH SCRAM-SHA-256
        S: 538 5.7.11 Encryption required for requested authentication mechanism
        C: AUTH CRAM-MD5
        S: 504 5.5.4 Unrecognized authentication mechanism
        C: MAIL FROM:<{ALICE}>
        S: 530 5.7.0 Authentication required
    """)
    assert client.session.auth_failures == 0  # refusals before any exchange are not failures


def test_plaintext_allowed_authenticates_without_tls_as_esmtpa():
    client, delivery, _ = make_submission(tls_active=False, allow_plaintext=True)
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines(starttls=True)}
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<{ALICE}>
        C: RCPT TO:<{BOB}>
        C: DATA
        S: 250 2.1.0 Sender ok
        S: 250 2.1.5 Recipient ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: x
        C: .
        S: 250 2.0.0 Ok: queued as QID1
    """)
    assert delivery.delivered[0][4].protocol == "ESMTPA"  # RFC 3848 §2


def test_starttls_forgets_the_authentication():
    """RFC 3207 §4.2: after TLS starts the client must authenticate again."""
    client, _, _ = make_submission(tls_active=False, allow_plaintext=True)
    authenticate(client)
    client.send(b"STARTTLS\r\n")
    assert client.take() == b"220 2.0.0 Ready to start TLS\r\n"
    assert client.tls_starts == 1
    assert client.session.authenticated_user == ""
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: MAIL FROM:<{ALICE}>
        S: 530 5.7.0 Authentication required
    """)


def test_cancel_at_each_challenge():
    client, _, _ = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH LOGIN
        S: 334 {b64('Username:')}
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH LOGIN {b64(ALICE)}
        S: 334 {b64('Password:')}
        C: *
        S: 501 5.0.0 Authentication cancelled
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
    """)


def test_cancel_of_scram_before_client_first():
    client, _, _ = make_submission()
    client.send(b"EHLO c\r\n")
    client.take()
    client.send(b"AUTH SCRAM-SHA-256\r\n")
    assert challenge_of(client.take()) == b""
    client.send(b"*\r\nNOOP\r\n")
    assert client.take() == b"501 5.0.0 Authentication cancelled\r\n250 2.0.0 Ok\r\n"


def test_bad_base64_in_initial_response_and_in_a_response():
    client, _, _ = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH PLAIN not-base64!
        S: 501 5.5.2 Cannot decode the response
        C: AUTH PLAIN {plain()}=
        S: 501 5.5.2 Cannot decode the response
        C: AUTH LOGIN
        S: 334 {b64('Username:')}
        C: @@@@
        S: 501 5.5.2 Cannot decode the response
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
    """)


def test_empty_initial_response_and_malformed_plain_message():
    """RFC 4954 §4: "=" is an empty initial response; PLAIN needs authzid NUL authcid NUL passwd."""
    client, _, authenticator = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH PLAIN =
        S: 501 5.5.2 Malformed authentication response
        C: AUTH PLAIN {b64('no nul here')}
        S: 501 5.5.2 Malformed authentication response
    """)
    assert authenticator.calls == []
    assert client.session.auth_failures == 2


def test_bad_credentials_535():
    client, _, authenticator = make_submission()
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: AUTH PLAIN {plain(password='wrong')}
        S: 535 5.7.8 Authentication credentials invalid
        C: AUTH PLAIN {plain(user='nobody@example.org')}
        S: 535 5.7.8 Authentication credentials invalid
        C: MAIL FROM:<{ALICE}>
        S: 530 5.7.0 Authentication required
    """)
    assert len(authenticator.calls) == 2
    assert client.session.authenticated_user == ""


@pytest.mark.parametrize("error", [AuthThrottled("too many"), AuthUnavailable("pool full")])
def test_throttled_or_unavailable_is_454(error):
    client, _, authenticator = make_submission()
    authenticator.error = error
    client.send(f"EHLO c\r\nAUTH PLAIN {plain()}\r\n".encode())
    assert client.take().endswith(b"454 4.7.0 Temporary authentication failure\r\n")
    client.send(b"AUTH SCRAM-SHA-256 " + b64(ScramClient(ALICE, ALICE_PASSWORD).first()).encode() + b"\r\n")
    assert client.take() == b"454 4.7.0 Temporary authentication failure\r\n"  # check_throttle
    assert client.session.authenticated_user == ""


def test_repeated_failures_get_421_and_close():
    """smtp_auth_failures_max failed exchanges: the last one is answered 421 4.7.0, then close."""
    client, _, authenticator = make_submission()
    client.send(b"EHLO c\r\n")
    client.take()
    for _ in range(2):
        client.send(f"AUTH PLAIN {plain(password='guess')}\r\n".encode())
        assert client.take() == b"535 5.7.8 Authentication credentials invalid\r\n"
        assert not client.closed
    client.send(f"AUTH PLAIN {plain(password='guess')}\r\nAUTH PLAIN {plain()}\r\n".encode())
    assert client.take() == b"421 4.7.0 Too many authentication failures, closing connection\r\n"
    assert client.closed
    assert len(authenticator.calls) == 3  # the pipelined fourth AUTH never ran


def test_failure_limit_is_the_named_limit_and_counts_every_mechanism():
    client, _, _ = make_submission(smtp_auth_failures_max=2)
    client.send(b"EHLO c\r\n")
    client.take()
    client.send(f"AUTH LOGIN {b64(ALICE)}\r\n{b64('wrong')}\r\n".encode())
    assert client.take() == (f"334 {b64('Password:')}\r\n".encode()
                             + b"535 5.7.8 Authentication credentials invalid\r\n")
    assert scram_until_server_final(client, password="wrong").endswith(
        b"421 4.7.0 Too many authentication failures, closing connection\r\n")
    assert client.closed


def test_cancel_and_bad_base64_do_not_count_as_failures():
    client, _, _ = make_submission(smtp_auth_failures_max=1)
    client.send(b"EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n!!!!\r\nNOOP\r\n")
    assert client.take().endswith(b"501 5.0.0 Authentication cancelled\r\n334 VXNlcm5hbWU6\r\n"
                                  b"501 5.5.2 Cannot decode the response\r\n250 2.0.0 Ok\r\n")
    assert not client.closed


def test_auth_sequence_and_syntax_errors():
    client, _, _ = make_submission()
    transcript(client, f"""
        C: AUTH PLAIN {plain()}
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO c
        {ehlo_lines()}
        C: AUTH
        S: 501 5.5.4 Syntax: AUTH mechanism [initial-response]
        C: AUTH PLAIN {plain()} extra
        S: 501 5.5.4 Syntax: AUTH mechanism [initial-response]
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<{ALICE}>
        S: 250 2.1.0 Sender ok
        C: AUTH PLAIN {plain(BOB, BOB_PASSWORD)}
        S: 503 5.5.1 AUTH not permitted during a mail transaction
        C: RCPT TO:<{BOB}>
        S: 250 2.1.5 Recipient ok
        C: AUTH PLAIN {plain(BOB, BOB_PASSWORD)}
        S: 503 5.5.1 AUTH not permitted during a mail transaction
    """)
    assert client.session.authenticated_user == ALICE


def test_mx_listener_refuses_auth():
    """Port 25 offers no AUTH (policy): 503 whatever the mechanism, even over TLS."""
    authenticator = FakeAuthenticator(dict(PASSWORDS))
    session = SMTPSession(ListenerPolicy("smtp"), FakeDelivery(), Limits(), HOST,
                          Peer("192.0.2.7"), tls_active=True, authenticator=authenticator)
    client = Client(session)
    client.take()
    client.send(f"EHLO c\r\nAUTH PLAIN {plain()}\r\nAUTH LOGIN\r\n".encode())
    output = client.take()
    assert b"AUTH" not in output.split(b"\r\n503", 1)[0]  # not advertised by EHLO
    assert output.endswith(b"503 5.5.1 Authentication not enabled\r\n" * 2)
    assert authenticator.calls == []
    assert client.session.authenticated_user == ""


# --- pipelining (RFC 2920 §3.1, RFC 4954 §4)


def test_mail_pipelined_after_plain_initial_response_runs_after_235():
    client, _, _ = make_submission()
    client.send(f"EHLO c\r\nAUTH PLAIN {plain()}\r\nMAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\n".encode())
    assert client.take().endswith(b"235 2.7.0 Authentication successful\r\n"
                                  b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n")


def test_mail_pipelined_after_a_slow_password_check_waits_for_it():
    client, _, authenticator = make_submission()
    authenticator.hold = True
    client.send(f"EHLO c\r\nAUTH PLAIN {plain()}\r\nMAIL FROM:<{ALICE}>\r\n".encode())
    assert client.take().endswith(b"LOGIN\r\n")  # the EHLO reply, nothing after it yet
    assert client.session.waiting
    client.send(f"RCPT TO:<{BOB}>\r\n".encode())
    assert client.take() == b""
    authenticator.release()
    assert client.take() == (b"235 2.7.0 Authentication successful\r\n"
                             b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n")


def test_mail_pipelined_after_a_failed_auth_is_refused():
    client, _, authenticator = make_submission()
    authenticator.hold = True
    client.send(f"EHLO c\r\nAUTH PLAIN {plain(password='x')}\r\nMAIL FROM:<{ALICE}>\r\n".encode())
    authenticator.release()
    assert client.take().endswith(b"535 5.7.8 Authentication credentials invalid\r\n"
                                  b"530 5.7.0 Authentication required\r\n")


def test_lines_answering_a_challenge_never_run_as_commands():
    """"QUIT" is valid base64 of valid UTF-8: pipelined after AUTH LOGIN it is the user name."""
    client, _, authenticator = make_submission()
    client.send(b"EHLO c\r\nAUTH LOGIN\r\nQUIT\r\nMAIL FROM:<alice@example.org>\r\n")
    assert client.take().endswith(f"334 {b64('Username:')}\r\n334 {b64('Password:')}\r\n"
                                  "501 5.5.2 Cannot decode the response\r\n".encode())
    assert not client.closed
    assert client.session.transaction is None
    assert authenticator.calls == []
    # the exchange is over: commands run again
    client.send(b"NOOP\r\n")
    assert client.take() == b"250 2.0.0 Ok\r\n"


def test_line_pipelined_after_an_initial_response_is_the_next_answer():
    """SCRAM's client-first as initial response: the pipelined RSET is read as the
    client-final-message (and refused as such), never run as RSET."""
    client, _, _ = make_submission()
    scram = ScramClient(ALICE, ALICE_PASSWORD)
    client.send(b"EHLO c\r\n")
    client.take()
    client.send(f"AUTH SCRAM-SHA-256 {b64(scram.first())}\r\nRSET\r\n".encode())
    first, second = client.take().split(b"\r\n")[:2]
    assert challenge_of(first + b"\r\n").startswith(f"r={scram.nonce}".encode())
    assert second == b"501 5.5.2 Malformed authentication response"
    assert client.session.auth_failures == 1


# --- core bug A (see the test report): a 500 for an over-long line must end a pending
# exchange, or the client's next command is read as a SASL response.


@pytest.mark.parametrize("pieces", [1, 7])
def test_over_long_response_line_ends_the_exchange(pieces):
    client, _, _ = make_submission(smtp_line_max=512)
    client.send(b"EHLO c\r\nAUTH LOGIN\r\n")
    assert client.take().endswith(f"334 {b64('Username:')}\r\n".encode())
    line = b"QUFB" * 150 + b"\r\n"  # 602 octets of base64: over the line limit
    step = -(-len(line) // pieces)
    for start in range(0, len(line), step):
        client.send(line[start:start + step])
    assert client.take() == b"500 5.5.2 Line too long\r\n"
    # RFC 4954 §4: any reply but 334 ends the exchange; the client's next line is a command.
    client.send(b"NOOP\r\n")
    assert client.take() == b"250 2.0.0 Ok\r\n"
    assert client.session.auth_failures == 0
