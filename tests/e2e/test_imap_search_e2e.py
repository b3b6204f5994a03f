"""SEARCH end to end: mail delivered over SMTP, searched with imaplib over implicit TLS."""

from __future__ import annotations

import imaplib

import pytest

from clients import smtp_send

PLAIN = (b"From: Bob Smith <bob@remote.test>\r\nTo: alice@example.test\r\n"
         b"Subject: =?utf-8?q?Caf=C3=A9?= menu\r\nDate: Sun, 31 Dec 2023 23:30:00 -0500\r\n"
         b"Message-ID: <plain-1@remote.test>\r\n\r\nHello plain world\r\n")
QP = (b"From: carol@remote.test\r\nTo: alice@example.test\r\nSubject: greetings\r\n"
      b"Date: Fri, 5 Jan 2024 10:00:00 +0000\r\nMessage-ID: <qp-2@remote.test>\r\nMIME-Version: 1.0\r\n"
      b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
      b"Gr=FC=DFe aus K=F6ln\r\n")
THIRD = (b"From: dave@remote.test\r\nTo: alice@example.test\r\nSubject: third\r\n"
         b"Message-ID: <third-3@remote.test>\r\n\r\nnothing special\r\n")


@pytest.fixture
def client(daemon):
    for message in (PLAIN, QP, THIRD):
        smtp_send(daemon, message)
    imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)
    imap.login("alice@example.test", daemon.users["alice@example.test"])
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"3"])
    yield imap
    imap.logout()


def numbers(reply) -> list[int]:
    typ, data = reply
    assert typ == "OK", data
    return [int(word) for word in data[0].split()]


def test_search_keys_over_the_wire(client):
    assert numbers(client.search(None, "ALL")) == [1, 2, 3]
    assert numbers(client.search(None, "FROM", "smith")) == [1]
    assert numbers(client.search(None, "OR", "FROM", "carol", "SUBJECT", "third")) == [2, 3]
    assert numbers(client.search(None, "HEADER", "Message-ID", "<qp-2@")) == [2]
    assert numbers(client.search(None, "TEXT", "received:")) == [1, 2, 3]  # trace fields are header
    assert numbers(client.search(None, "BODY", "received")) == []
    assert numbers(client.search(None, "SENTON", "31-Dec-2023")) == [1]
    assert numbers(client.search(None, "NOT", "2:*")) == [1]
    assert numbers(client.uid("SEARCH", "UID", "2:*")) == [2, 3]


def test_decoded_text_and_charset(client):
    client.literal = "café MENU".encode()
    assert numbers(client.search("UTF-8", "SUBJECT")) == [1]
    client.literal = "GRÜSSE".encode()  # full case folding: ß is ss
    assert numbers(client.search("UTF-8", "BODY")) == [2]
    client.literal = "GRUSSE".encode()
    assert numbers(client.search("UTF-8", "BODY")) == []
    client.literal = "grüße aus köln".encode()
    assert numbers(client.search("UTF-8", "BODY")) == [2]
    typ, data = client.search("ISO-8859-1", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET (US-ASCII UTF-8)]")
    with pytest.raises(imaplib.IMAP4.error, match="Unknown search key"):
        client.search(None, "NOSUCHKEY")


def test_seen_after_fetch(client):
    assert numbers(client.search(None, "UNSEEN")) == [1, 2, 3]
    typ, _ = client.fetch("2", "(BODY[])")
    assert typ == "OK"
    assert numbers(client.search(None, "SEEN")) == [2]
    assert numbers(client.search(None, "UNSEEN")) == [1, 3]


def test_esearch_and_saved_result(client):
    typ, _ = client._simple_command("UID", "SEARCH", "RETURN", "(MIN MAX COUNT ALL)", "NOT", "2")
    assert typ == "OK"
    _, esearch = client.response("ESEARCH")
    tag = esearch[0].split(b'"')[1]
    assert esearch == [b'(TAG "%s") UID MIN 1 MAX 3 COUNT 2 ALL 1,3' % tag]
    typ, _ = client._simple_command("SEARCH", "RETURN", "(SAVE)", "OR", "1", "3")
    assert typ == "OK"
    assert client.response("ESEARCH") == ("ESEARCH", [None])  # SAVE alone: no answer
    assert numbers(client.search(None, "$")) == [1, 3]
    assert numbers(client.search(None, "NOT", "$")) == [2]
    assert numbers(client.uid("SEARCH", "UID", "$", "FROM", "dave")) == [3]
