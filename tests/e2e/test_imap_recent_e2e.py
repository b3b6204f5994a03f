"""End to end: \\Recent (RFC 3501 §2.3.2) through the real daemon, SMTP delivery
and imaplib over TLS: one session gets a new message as recent, and a restart
of the daemon does not make it recent again."""

from __future__ import annotations

import imaplib

import pytest

from clients import make_message, smtp_send

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


def connect(daemon) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    client.login(ALICE, daemon.users[ALICE])
    return client


def select_recent(daemon, readonly: bool = False) -> tuple[list[bytes], bytes]:
    """SELECT (or EXAMINE) INBOX in a new session: its ``* n RECENT`` values and
    the FLAGS of message 1."""
    client = connect(daemon)
    try:
        typ, _ = client.select("INBOX", readonly=readonly)
        assert typ == "OK"
        recent = client.untagged_responses.pop("RECENT", [])
        typ, data = client.fetch("1", "(FLAGS)")
        assert typ == "OK"
        return recent, data[0]
    finally:
        client.logout()


def test_a_delivered_message_is_recent_once_also_across_a_restart(daemon):
    smtp_send(daemon, make_message("recent", body_lines=2))
    # EXAMINE shows it recent and leaves it so (RFC 3501 §6.3.2).
    assert select_recent(daemon, readonly=True) == ([b"1"], b"1 (FLAGS (\\Recent))")
    assert select_recent(daemon) == ([b"1"], b"1 (FLAGS (\\Recent))")
    assert select_recent(daemon) == ([b"0"], b"1 (FLAGS ())")
    daemon.stop()
    daemon.start()
    assert select_recent(daemon) == ([b"0"], b"1 (FLAGS ())")
    client = connect(daemon)
    try:
        assert client.status("INBOX", "(MESSAGES RECENT)") == ("OK", [b'"INBOX" (MESSAGES 1 RECENT 0)'])
    finally:
        client.logout()


def test_a_session_with_the_mailbox_selected_gets_the_new_message(daemon):
    watcher = connect(daemon)
    try:
        assert watcher.select("INBOX") == ("OK", [b"0"])
        assert watcher.untagged_responses.pop("RECENT", []) == [b"0"]
        watcher.untagged_responses.clear()  # SELECT's own EXISTS and the rest
        smtp_send(daemon, make_message("while selected", body_lines=2))
        typ, _ = watcher.noop()
        assert typ == "OK"
        assert watcher.untagged_responses.pop("EXISTS", []) == [b"1"]
        assert watcher.untagged_responses.pop("RECENT", []) == [b"1"]
        assert watcher.search(None, "NEW") == ("OK", [b"1"])
        assert select_recent(daemon) == ([b"0"], b"1 (FLAGS ())")
    finally:
        watcher.logout()
