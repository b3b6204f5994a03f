"""Fuzz harness: the POP3 command parser (POP3Session's line framing, the command
table, argument splitting and numbers, AUTH exchanges).

Input (:func:`harness.split_input`): option bit 0 says TLS is active, bit 1
allows plaintext login, bit 2 logs in first (over TLS); then the piece size
and the client's bytes.

The session runs on the unit tests' in-memory maildrop holding three
messages. Allowed: any reply the session sends. A crash is an exception out
of the session, an unexpected exception it logs (answered ``-ERR [SYS/TEMP]``
by design, a bug all the same), or output that is not a sequence of
well-formed replies (RFC 1939 §3: status lines, dot-stuffed multi-line bodies
ending in ``.``).
"""

from __future__ import annotations

import atheris

from harness import logged_failures_raised, main, split_input

with atheris.instrument_imports(include=["mailserverd"]):
    from pop3_fakes import Harness
    from test_pop3_fuzz import ALICE, MESSAGES, split_replies

LOGIN = b"USER alice@example.test\r\nPASS s3cret pw\r\n"


def start_session(options: int) -> Harness:
    """A started session with the maildrop filled, logged in if the options say so."""
    logged_in = bool(options & 4)
    session = Harness(tls_active=bool(options & 1) or logged_in, allow_plaintext=bool(options & 2),
                      pop3_bad_commands_max=50)
    for raw in MESSAGES:
        session.store.add_message(ALICE, raw)
    if logged_in:
        session.send(LOGIN)
    return session


def test_one_input(data: bytes) -> None:
    options, pieces = split_input(data)
    with logged_failures_raised():
        session = start_session(options)
        output = session.sink.take()
        for piece in pieces:
            output += session.send(piece)
        session.session.connection_lost()
    split_replies(output)


if __name__ == "__main__":
    main(test_one_input)
