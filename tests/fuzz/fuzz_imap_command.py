"""Fuzz harness: the IMAP command parser (mailserverd.imap.parser's CommandReader and
ArgCursor, the session's framing of literals, each command's argument parsing).

Input (:func:`harness.split_input`): option bits 0-1 choose where the client
starts (not authenticated, logged in, INBOX selected, INBOX examined: these
three over TLS), bit 2 says TLS is active, bit 3 allows plaintext login, bit 4
enables IMAP4rev2;
then the piece size and the client's bytes.

The session runs on the unit tests' in-memory store, which holds a few
messages; a store method that fake lacks answers as a real store that is
temporarily unavailable would (a StoreError, answered NO), so that every
command gets as far as its arguments take it. Allowed: any response the
session sends (BAD for a ParseError, NO for a MailError or store error). A
crash is an exception out of the session, or an unexpected exception it logs
(answered ``NO [SERVERBUG]``-style by design, a bug all the same).
"""

from __future__ import annotations

import atheris

from harness import fill_inbox, logged_failures_raised, main, split_input

with atheris.instrument_imports(include=["mailserverd"]):
    from mailserverd.imap.session import ImapSession
    from mailserverd.store.errors import StoreTemporaryError
    from imap_fakes import PASSWORD, USER, FakeMailStore, RecordingOutput, make_ctx
    from session_fakes import FakeAuthenticator

#: Small limits, so that the fuzzer reaches them (the real defaults are far larger).
LIMITS = dict(imap_line_max=1000, imap_literal_max=1024, message_size_max=64 * 1024,
              imap_append_bytes_max=64 * 1024, imap_bad_commands_max=50)

LOGIN = b'L LOGIN %s "%s"\r\n' % (USER.encode(), PASSWORD.encode())
PREAMBLES = (b"", LOGIN, LOGIN + b"S SELECT INBOX\r\n", LOGIN + b"S EXAMINE INBOX\r\n")


class UnavailableWhereFake(FakeMailStore):
    """The unit tests' in-memory store; what it does not implement fails as a
    real store's temporary error does, so that only the session is fuzzed."""

    def __getattr__(self, name: str):
        def unavailable(*args, **kwargs):
            raise StoreTemporaryError(f"{name} is not in the fuzzing store")
        return unavailable

    def store_flags(self, user, mailbox_id, uids, mode, flags, unchanged_since=None):
        if mode != "+":  # the fake only adds flags
            raise StoreTemporaryError("only +FLAGS in the fuzzing store")
        return super().store_flags(user, mailbox_id, uids, mode, flags, unchanged_since)


def start_session(options: int) -> tuple[ImapSession, RecordingOutput]:
    """A started session, with the preamble the option bits choose already run."""
    store = UnavailableWhereFake()
    fill_inbox(store, USER)
    ctx = make_ctx(store, FakeAuthenticator({USER: PASSWORD}), bool(options & 8), **LIMITS)
    output = RecordingOutput()
    session = ImapSession(ctx, output, client_ip="192.0.2.7", tls_active=bool(options & 7))
    session.start()
    session.data_received(PREAMBLES[options & 3])
    if options & 16:
        session.enabled.add("IMAP4REV2")
    return session, output


def test_one_input(data: bytes) -> None:
    options, pieces = split_input(data)
    with logged_failures_raised():
        session, output = start_session(options)
        for piece in pieces:
            session.data_received(piece)
        session.connection_lost()


if __name__ == "__main__":
    main(test_one_input)
