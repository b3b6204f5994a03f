"""End to end: STORE, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT and CHECK through
Python's imaplib against the real daemon, over implicit TLS."""

from __future__ import annotations

import imaplib
import re

import pytest

from clients import make_message, smtp_send

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


def connect(daemon, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    client.login(user, daemon.users[user])
    return client


def deliver(daemon, count: int) -> None:
    for n in range(count):
        smtp_send(daemon, make_message(f"message {n + 1}", body_lines=3))


def flags_of(client, uid_set: str = "1:*") -> dict[int, set[str]]:
    """UID -> flags of the selected mailbox, read with UID FETCH."""
    typ, data = client.uid("FETCH", uid_set, "(FLAGS)")
    assert typ == "OK", data
    found = {}
    for line in data:
        if line is None:
            continue
        match = re.search(rb"UID (\d+)", line)
        flags = re.search(rb"FLAGS \(([^)]*)\)", line)
        # \Recent is this session's view, not a stored flag (RFC 3501 §2.3.2)
        found[int(match.group(1))] = set(flags.group(1).decode().split()) - {"\\Recent"}
    return found


def test_store_copy_move_expunge(daemon):
    deliver(daemon, 4)
    client = connect(daemon)
    try:
        assert client.select("INBOX") == ("OK", [b"4"])
        typ, data = client.store("1:2", "+FLAGS", r"(\Flagged $Work)")
        assert typ == "OK"
        # the first session to select after delivery has them \Recent (RFC 3501 §2.3.2)
        assert data == [b"1 (FLAGS (\\Flagged \\Recent $Work))", b"2 (FLAGS (\\Flagged \\Recent $Work))"]
        typ, data = client.uid("STORE", "2", "-FLAGS.SILENT", "($Work)")
        assert (typ, data) == ("OK", [None])
        typ, data = client.store("3", "FLAGS", r"\Seen")
        assert data == [b"3 (FLAGS (\\Recent \\Seen))"]

        typ, data = client.copy("1:2", "Archive")
        assert typ == "OK"
        assert re.fullmatch(rb"\[COPYUID \d+ 1:2 1:2\] Copy completed", data[0]), data

        typ, data = client.uid("MOVE", "3", "Trash")
        assert typ == "OK", data
        assert re.fullmatch(rb"\[COPYUID \d+ 3 1\] Moved", client.untagged_responses["OK"][-1])
        assert client.untagged_responses.pop("EXPUNGE") == [b"3"]

        client.store("1", "+FLAGS.SILENT", r"\Deleted")
        typ, data = client.expunge()
        assert (typ, data) == ("OK", [b"1"])  # imaplib returns the EXPUNGE numbers
        assert flags_of(client) == {2: {"\\Flagged"}, 4: set()}

        assert client.select("Archive")[1] == [b"2"]
        assert flags_of(client) == {1: {"\\Flagged", "$Work"}, 2: {"\\Flagged"}}
        assert client.select("Trash")[1] == [b"1"]
        assert flags_of(client) == {1: {"\\Seen"}}
    finally:
        client.logout()


def test_examine_refuses_changes_and_close_unselect_check(daemon):
    deliver(daemon, 3)
    client = connect(daemon)
    try:
        client.select("INBOX")
        client.store("1:3", "+FLAGS.SILENT", r"\Deleted")
        assert client.check() == ("OK", [b"Check completed"])
        assert client.unselect()[0] == "OK"  # keeps the \Deleted messages
        client.select("INBOX", readonly=True)
        typ, data = client.store("1", "-FLAGS", r"\Deleted")
        assert (typ, data) == ("NO", [b"[READ-ONLY] Mailbox is read-only"])
        assert client.expunge() == ("NO", [b"[READ-ONLY] Mailbox is read-only"])
        assert client.close()[0] == "OK"  # read-only: expunges nothing
        assert client.select("INBOX") == ("OK", [b"3"])
        client.uid("STORE", "2", "-FLAGS.SILENT", r"(\Deleted)")
        assert client.close() == ("OK", [b"Close completed"])
        assert client.select("INBOX") == ("OK", [b"1"])
        assert flags_of(client) == {2: set()}
        typ, data = client.copy("1", "No/Such/Box")
        assert (typ, data) == ("NO", [b"[TRYCREATE] Mailbox doesn't exist"])
    finally:
        client.logout()


def test_other_sessions_changes_and_expunged_messages(daemon):
    deliver(daemon, 3)
    first, second = connect(daemon), connect(daemon)
    try:
        first.select("INBOX")
        second.select("INBOX")
        second.store("2", "+FLAGS.SILENT", r"\Deleted")
        second.expunge()
        # message 2 is gone, but the first session has not been told yet:
        # STORE skips it, COPY refuses and copies nothing (RFC 2180 §4)
        typ, data = first.store("2", "+FLAGS", r"\Seen")
        assert (typ, data) == ("OK", [None])
        typ, data = first.copy("1:3", "Archive")
        assert (typ, data[0]) == ("NO", b"[EXPUNGEISSUED] Some of the requested messages no longer exist")
        # the UID form skips it and then reports the EXPUNGE
        typ, data = first._simple_command("UID", "COPY", "1:3", "Archive")
        assert typ == "OK" and re.fullmatch(rb"\[COPYUID \d+ 1,3 1:2\] Copy completed", data[0])
        assert first.untagged_responses.pop("EXPUNGE") == [b"2"]
        first.untagged_responses.pop("EXISTS", None)  # SELECT's, kept by imaplib
        smtp_send(daemon, make_message("late", body_lines=3))
        assert first.noop()[0] == "OK"
        assert first.untagged_responses.pop("EXISTS") == [b"3"]
    finally:
        first.logout()
        second.logout()


def test_conditional_store(daemon):
    deliver(daemon, 2)
    client = connect(daemon)
    try:
        client.select("INBOX")
        typ, data = client._simple_command("UID", "STORE", "1:2", "(UNCHANGEDSINCE 0)", "+FLAGS.SILENT", "($MDNSent)")
        assert (typ, data) == ("OK", [b"[MODIFIED 1:2] Conditional STORE failed"])
        # the failed messages' current state comes along (RFC 7162 §3.1.3 Example 10)
        fetched = client.untagged_responses.pop("FETCH")
        assert [re.fullmatch(rb"(\d) \(UID (\d) MODSEQ \(\d+\) FLAGS \(\\Recent\)\)", line).groups()
                for line in fetched] == [(b"1", b"1"), (b"2", b"2")]
        typ, data = client._simple_command("STORE", "2", "(UNCHANGEDSINCE 9223372036854775807)",
                                           "+FLAGS.SILENT", "($MDNSent)")
        assert (typ, data) == ("OK", [b"Store completed"])
        [fetched] = client.untagged_responses.pop("FETCH")
        assert re.fullmatch(rb"2 \(UID 2 MODSEQ \(\d+\)\)", fetched), fetched  # RFC 7162 §3.2.4
        assert flags_of(client) == {1: set(), 2: {"$MDNSent"}}
        with pytest.raises(imaplib.IMAP4.error, match="Mod-sequence out of range"):
            client._simple_command("STORE", "1", "(UNCHANGEDSINCE 9223372036854775808)", "+FLAGS", "(x)")
    finally:
        client.logout()
