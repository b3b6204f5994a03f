"""Fuzz harness: the SMTP command parser (SMTPSession's line framing, the command
table, the MAIL/RCPT parameters, AUTH exchanges, BDAT arguments).

Input (:func:`harness.split_input`): option bits 0-1 choose the listener (smtp,
submission, smtps, smtp), bit 2 says TLS is active, bit 3 allows plaintext AUTH,
bit 4 makes recipient lookups, deliveries and password checks wait (they are
released after each piece); then the piece size and the client's bytes.

Allowed: any reply the session sends. A crash is an exception out of the
session, an unexpected exception it logs (answered 451 by design, a bug all
the same), a malformed reply line (RFC 5321 §4.2), an action after Close, or
more input buffered than the session's documented bound.
"""

from __future__ import annotations

import atheris

from harness import logged_failures_raised, main, split_input

with atheris.instrument_imports(include=["mailserverd"]):
    from mailserverd.limits import Limits
    from mailserverd.smtp.session import ListenerPolicy, Peer, SMTPSession
    from session_fakes import FakeAuthenticator
    from test_smtp_fuzz import FUZZ_LIMITS, check_output, input_bound
    from test_smtp_session import HOST, Client, FakeDelivery

KINDS = ("smtp", "submission", "smtps", "smtp")
PASSWORDS = {"alice@example.org": "alice pw"}


def make_session(options: int) -> tuple[SMTPSession, FakeDelivery, FakeAuthenticator]:
    """A session on the listener the option bits choose, with its fakes."""
    kind = KINDS[options & 3]
    submission = kind != "smtp"
    hold = bool(options & 16)
    delivery = FakeDelivery(hold_delivery=hold, hold_recipients=hold)
    authenticator = FakeAuthenticator(dict(PASSWORDS))
    authenticator.hold = hold
    policy = ListenerPolicy(kind, starttls_available=kind != "smtps", auth_offered=submission,
                            auth_required=submission, allow_plaintext=bool(options & 8))
    session = SMTPSession(policy, delivery, Limits(**FUZZ_LIMITS), HOST, Peer("192.0.2.7"),
                          tls_active=bool(options & 4), authenticator=authenticator)
    return session, delivery, authenticator


def release(delivery: FakeDelivery, authenticator: FakeAuthenticator) -> None:
    """Fire everything the fakes hold, as the store and the password checks would."""
    while delivery.pending or authenticator.held:
        if delivery.pending:
            delivery.release()
        authenticator.release()


def test_one_input(data: bytes) -> None:
    options, pieces = split_input(data)
    with logged_failures_raised():
        session, delivery, authenticator = make_session(options)
        client = Client(session)  # asserts that nothing is done after a Close
        for piece in pieces:
            client.send(piece)
            assert len(session._input) <= input_bound(session), len(session._input)
            release(delivery, authenticator)
        client.perform(session.timed_out())
    assert session.closed and client.closed
    check_output(bytes(client.output))


if __name__ == "__main__":
    main(test_one_input)
