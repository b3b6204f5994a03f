"""Regression tests for what fuzzing the parsers (tests/fuzz/) found.

Each test replays the smallest input of one finding against the real session
or parser, and asserts on what a client or the operator would see.

Refusals retain sessions. Found while fuzzing fuzz_imap_command.py: its
memory grew with every input. The cause is not in the IMAP parser. Some
refusals are module-level exception instances (``RELAY_DENIED`` in
mailserverd/delivery/local.py; ``READ_ONLY_REFUSAL``, ``TRYCREATE``, ``TOOBIG``
in mailserverd/imap/commands/), and those are raised again and again. Python
puts each new raise's frames at the front of the same instance's
``__traceback__``. So the chain grows by a few frames per refusal, and those
frames hold the session that was refused, with its buffers. Nothing ever
frees them. A client that is refused over and over (an open-relay probe on
port 25 needs no login) made the daemon's memory grow without bound; each
refusal now raises a fresh copy (mailserverd.errors.fresh).
"""

from __future__ import annotations

import gc
import weakref

import pytest
from twisted.internet.task import Clock

from mailserverd.delivery.local import LocalDelivery
from mailserverd.limits import Limits
from mailserverd.smtp.session import ListenerPolicy, Peer, Send, SMTPSession

from imap_fakes import Harness
from test_smtp_local_delivery import HOST, store  # noqa: F401 (the real-store fixture)

def collected(sessions: list[weakref.ref]) -> list[bool]:
    """For each session, whether it is gone once nothing of ours refers to it."""
    gc.collect()
    return [ref() is None for ref in sessions]


def refused_smtp_session(delivery: LocalDelivery) -> weakref.ref:
    """One MX connection that asks to relay (RFC 5321 §3.6.2: refused 550), then ends."""
    session = SMTPSession(ListenerPolicy("smtp"), delivery, Limits(), HOST, Peer("192.0.2.7"))
    session.greeting()
    actions = session.data_received(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\n"
                                    b"RCPT TO:<victim@elsewhere.example>\r\nQUIT\r\n")
    sent = b"".join(action.data for action in actions if isinstance(action, Send))
    assert b"550 5.7.1 Relay access denied\r\n" in sent
    session.connection_lost()
    return weakref.ref(session)


def test_relay_refusals_do_not_retain_the_sessions(store):  # noqa: F811 (fixture)
    delivery = LocalDelivery(store, HOST, Clock())
    sessions = [refused_smtp_session(delivery) for _ in range(3)]
    assert collected(sessions) == [True, True, True]


#: IMAP commands refused with a module-level MailError, after the session's preamble.
IMAP_REFUSALS = {
    # RFC 9051 §6.3.3: EXAMINE opens read-only; STORE is refused NO [READ-ONLY].
    "store-after-examine": b"S EXAMINE INBOX\r\nA STORE 1 +FLAGS (\\Flagged)\r\n",
    # RFC 9051 §6.3.12: APPEND to a mailbox that does not exist: NO [TRYCREATE].
    "append-to-missing-mailbox": b"A APPEND Nowhere {5+}\r\nhello\r\n",
}
IMAP_ANSWERS = {"store-after-examine": b"A NO [READ-ONLY]", "append-to-missing-mailbox": b"A NO [TRYCREATE]"}


def refused_imap_session(script: bytes, answer: bytes) -> weakref.ref:
    """One logged-in IMAP connection whose command is refused with ``answer``, then ends."""
    harness = Harness()
    harness.store.add_message("alice@example.test", "INBOX", b"Subject: a\r\n\r\nb\r\n")
    harness.login()
    assert answer in harness.c(script)
    harness.session.connection_lost()
    return weakref.ref(harness.session)


@pytest.mark.parametrize("name", sorted(IMAP_REFUSALS))
def test_imap_refusals_do_not_retain_the_sessions(name):
    sessions = [refused_imap_session(IMAP_REFUSALS[name], IMAP_ANSWERS[name]) for _ in range(3)]
    assert collected(sessions) == [True, True, True]
