"""SORT, THREAD and QUOTA end to end: mail delivered over SMTP, then sorted,
threaded and measured with imaplib over implicit TLS."""

from __future__ import annotations

import imaplib
import re

import pytest

from clients import smtp_send
from conftest import make_daemon

ORIGINAL = (b"From: Zed <zed@remote.test>\r\nTo: alice@example.test\r\nSubject: lunch\r\n"
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <lunch-1@remote.test>\r\n\r\nwhere?\r\n")
REPLY = (b"From: amy@remote.test\r\nTo: alice@example.test\r\nSubject: Re: lunch\r\n"
         b"Date: Mon, 1 Jan 2024 11:00:00 +0000\r\nMessage-ID: <lunch-2@remote.test>\r\n"
         b"In-Reply-To: <lunch-1@remote.test>\r\nReferences: <lunch-1@remote.test>\r\n\r\nthe usual\r\n")
AGENDA = (b"From: beth@remote.test\r\nTo: alice@example.test\r\nSubject: [team] agenda\r\n"
          b"Date: Sun, 31 Dec 2023 09:00:00 -0500\r\nMessage-ID: <agenda@remote.test>\r\n\r\n"
          + b"a longer body line\r\n" * 20)
ANSWER = (b"From: Carl <carl@remote.test>\r\nTo: alice@example.test\r\nSubject: Re: [team] agenda\r\n"
          b"Date: Tue, 2 Jan 2024 08:00:00 +0000\r\nMessage-ID: <agenda-2@remote.test>\r\n"
          b"References: <agenda@remote.test> <lost@remote.test>\r\n\r\nagreed\r\n")


def login(daemon, user: str = "alice@example.test") -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    imap.login(user, daemon.users[user])
    return imap


@pytest.fixture
def client(daemon):
    for message in (ORIGINAL, REPLY, AGENDA, ANSWER):
        smtp_send(daemon, message)
    imap = login(daemon)
    assert imap.select("INBOX") == ("OK", [b"4"])
    yield imap
    imap.logout()


def numbers(reply) -> list[int]:
    typ, data = reply
    assert typ == "OK", data
    return [int(word) for word in data[0].split()]


def test_sort_over_the_wire(client):
    assert numbers(client.sort("(SUBJECT)", "UTF-8", "ALL")) == [3, 4, 1, 2]  # agenda, lunch
    assert numbers(client.sort("(DATE)", "UTF-8", "ALL")) == [3, 1, 2, 4]  # 31 Dec 14:00 UTC first
    assert numbers(client.sort("(REVERSE SIZE)", "UTF-8", "ALL")) == [3, 2, 4, 1]
    assert numbers(client.sort("(FROM)", "US-ASCII", "ALL")) == [2, 3, 4, 1]  # amy beth carl zed
    assert numbers(client.sort("(DISPLAYFROM)", "UTF-8", "ALL")) == [2, 3, 4, 1]  # amy@, beth@, Carl, Zed
    assert numbers(client.sort("(SUBJECT REVERSE DATE)", "UTF-8", "NOT", "FROM", "beth")) == [4, 2, 1]
    assert numbers(client.uid("SORT", "(ARRIVAL)", "UTF-8", "2:3")) == [2, 3]
    assert client.sort("(SUBJECT)", "UTF-8", "SUBJECT", "nothing") == ("OK", [b""])


def test_sort_refusals(client):
    typ, data = client.sort("(SUBJECT)", "KOI8-R", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET (US-ASCII UTF-8)]"), data
    with pytest.raises(imaplib.IMAP4.error, match="Unknown sort criterion"):  # a BAD
        client.sort("(NOSUCH)", "UTF-8", "ALL")
    assert client.noop()[0] == "OK"  # the session goes on


def test_thread_over_the_wire(client):
    typ, data = client.thread("REFERENCES", "UTF-8", "ALL")
    # agenda (31 Dec) has its answer under it via References; lunch's reply under lunch
    assert (typ, data) == ("OK", [b"(3 4)(1 2)"])
    typ, data = client.thread("ORDEREDSUBJECT", "UTF-8", "ALL")
    assert (typ, data) == ("OK", [b"(3 4)(1 2)"])
    typ, data = client.uid("THREAD", "REFERENCES", "UTF-8", "NOT", "1")
    # the reply's parent was not searched: it stands alone
    assert (typ, data) == ("OK", [b"(3 4)(2)"])


def test_quota_without_limit(client):
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK" and data == [[b'"INBOX" ""'], [b'"" ()']], data
    assert client.getquota('""') == ("OK", [b'"" ()'])
    typ, data = client.setquota('""', "(STORAGE 100)")
    assert typ == "NO" and data[0].startswith(b"[NOPERM]"), data


def test_quota_with_limit_and_overquota_append(tmp_path):
    daemon = make_daemon(tmp_path / "q")
    daemon.cli("domain", "add", "example.test")
    daemon.cli("user", "add", "alice@example.test", "--password-stdin", "--quota", str(20 * 1024),
               stdin="alice-secret-1\n")
    daemon.users["alice@example.test"] = "alice-secret-1"
    daemon.start()
    try:
        smtp_send(daemon, AGENDA)
        imap = login(daemon)
        typ, data = imap.getquotaroot("INBOX")
        assert typ == "OK" and data[0] == [b'"INBOX" ""'], data
        used = int(re.fullmatch(rb'"" \(STORAGE (\d+) 20\)', data[1][0]).group(1))
        assert used < 20, data
        typ, data = imap.append("INBOX", None, None, b"Subject: big\r\n\r\n" + b"x" * 30000 + b"\r\n")
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], data
        assert imap.getquota('""')[1] == [b'"" (STORAGE %d 20)' % used]  # nothing was stored
        imap.logout()
    finally:
        daemon.stop()
