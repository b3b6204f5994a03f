"""End to end: two IMAP sessions on one mailbox seeing each other's changes, IDLE
woken by SMTP delivery and by a flag change, and CONDSTORE/QRESYNC (RFC 7162)
through Python's imaplib and a raw client against the real daemon."""

from __future__ import annotations

import imaplib
import re

import pytest

from clients import RawImap, make_message, smtp_send

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


def connect(daemon, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    client.login(user, daemon.users[user])
    return client


def deliver(daemon, count: int) -> None:
    for n in range(count):
        smtp_send(daemon, make_message(f"message {n + 1}", body_lines=3))


def untagged(client: imaplib.IMAP4, name: str) -> list[bytes]:
    """Take (and forget) the untagged responses ``name`` imaplib collected."""
    return client.untagged_responses.pop(name, [])


def test_two_sessions_see_flags_expunges_and_new_mail(daemon):
    deliver(daemon, 3)
    first, second = connect(daemon), connect(daemon)
    try:
        assert first.select("INBOX") == ("OK", [b"3"])
        assert second.select("INBOX") == ("OK", [b"3"])
        first.untagged_responses.clear()  # imaplib keeps SELECT's EXISTS there
        assert second.store("2", "+FLAGS", r"(\Flagged)")[0] == "OK"
        assert first.noop()[0] == "OK"
        # first selected first after the delivery: the messages are \Recent there
        assert untagged(first, "FETCH") == [b"2 (FLAGS (\\Flagged \\Recent))"]

        assert second.store("1", "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
        assert second.expunge() == ("OK", [b"1"])
        deliver(daemon, 1)
        assert first.noop()[0] == "OK"
        assert untagged(first, "EXPUNGE") == [b"1"]
        assert untagged(first, "EXISTS") == [b"3"]
        # The numbers now agree with the mailbox: message 3 is the delivered one.
        typ, data = first.fetch("3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: message 1" in data[0][1]
        assert first.noop()[0] == "OK"
        assert untagged(first, "FETCH") == [] and untagged(first, "EXPUNGE") == []
    finally:
        first.logout()
        second.logout()


def test_idle_woken_by_delivery_and_by_another_session(daemon):
    deliver(daemon, 1)
    raw = RawImap(daemon)
    other = connect(daemon)
    try:
        raw.login()
        assert raw.command(b"s", b"SELECT INBOX (CONDSTORE)")[-1].startswith(b"s OK")
        other.select("INBOX")
        raw.send(b"i IDLE\r\n")
        assert raw.read_line() == b"+ idling"
        smtp_send(daemon, make_message("while idling"))
        # The daemon looks every second; the socket's 30 s timeout is the deadline.
        assert raw.read_line() == b"* 2 EXISTS"
        assert raw.read_line() == b"* 2 RECENT"  # RFC 3501 §7.3.2: the idler is told first
        assert other.store("1", "+FLAGS", r"(\Answered)")[0] == "OK"
        line = raw.read_line()
        assert re.fullmatch(rb"\* 1 FETCH \(UID 1 FLAGS \(\\Answered \\Recent\) MODSEQ \(\d+\)\)", line), line
        raw.send(b"DONE\r\n")
        assert raw.read_line() == b"i OK IDLE terminated"
    finally:
        raw.close()
        other.logout()


def test_condstore_select_fetch_changedsince(daemon):
    deliver(daemon, 3)
    raw = RawImap(daemon)
    try:
        raw.login()
        reply = raw.command(b"s", b"SELECT INBOX (CONDSTORE)")
        highest = int(next(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", line).group(1)
                           for line in reply if b"HIGHESTMODSEQ" in line))
        reply = raw.command(b"a", b"STORE 3 +FLAGS.SILENT ($Done)")
        # RFC 7162 §3.2.4: UID too, once CONDSTORE is enabled (we offer QRESYNC).
        modseq = int(re.fullmatch(rb"\* 3 FETCH \(UID 3 MODSEQ \((\d+)\)\)", reply[0]).group(1))
        assert modseq > highest and reply[-1] == b"a OK Store completed"
        assert raw.command(b"f", b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest) == [
            b"* 3 FETCH (UID 3 FLAGS (\\Recent $Done) MODSEQ (%d))" % modseq, b"f OK Fetch completed"]
        assert raw.command(b"g", b"FETCH 1:2 (MODSEQ)")[-1] == b"g OK Fetch completed"
        assert raw.command(b"v", b"FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"v BAD ")
    finally:
        raw.close()


def test_qresync_select_after_expunges(daemon):
    deliver(daemon, 4)
    raw = RawImap(daemon)
    other = connect(daemon)
    try:
        if b"QRESYNC" not in set(raw.greeting.upper().split()):
            pytest.skip("QRESYNC is not announced in CAPABILITY yet, so ENABLE QRESYNC is refused")
        raw.login()
        assert raw.command(b"e", b"ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"e OK Enabled"]
        reply = raw.command(b"s", b"SELECT INBOX")
        uidvalidity = int(next(re.search(rb"\[UIDVALIDITY (\d+)\]", line).group(1)
                               for line in reply if b"UIDVALIDITY" in line))
        highest = int(next(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", line).group(1)
                           for line in reply if b"HIGHESTMODSEQ" in line))
        raw.command(b"u", b"UNSELECT")
        other.select("INBOX")
        other.store("2", "+FLAGS.SILENT", r"(\Deleted)")
        other.expunge()
        other.store("3", "+FLAGS.SILENT", r"(\Flagged)")  # UID 4
        reply = raw.command(b"q", b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, highest))
        assert reply[-3] == b"* VANISHED (EARLIER) 2"
        assert re.fullmatch(rb"\* 3 FETCH \(UID 4 FLAGS \(\\Flagged\) MODSEQ \(\d+\)\)", reply[-2])
        assert reply[-1].startswith(b"q OK [READ-WRITE]")
    finally:
        raw.close()
        other.logout()
