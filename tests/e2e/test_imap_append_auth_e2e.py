"""End to end: IMAP APPEND, AUTHENTICATE, ENABLE, ID and IDLE against the real daemon.

imaplib drives what it can (APPEND, AUTHENTICATE, ID); a raw TLS socket
drives what it cannot (MULTIAPPEND, literals the server must refuse, IDLE).
"""

from __future__ import annotations

import base64
import imaplib
import re

import pytest

from clients import RawImap, make_message, smtp_send

ALICE = "alice@example.test"


def imaps(daemon) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=30)


def logged_in(daemon, user: str = ALICE) -> imaplib.IMAP4_SSL:
    client = imaps(daemon)
    client.login(user, daemon.users[user])
    return client


def fetch_all(client: imaplib.IMAP4, mailbox: str = "INBOX") -> list[tuple[bytes, bytes]]:
    """(FETCH metadata, body) for each message of ``mailbox``."""
    typ, data = client.select(mailbox)
    assert typ == "OK"
    if int(data[0]) == 0:
        return []
    typ, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    return [part for part in data if isinstance(part, tuple)]


def test_append_with_flags_and_date_then_fetch(daemon):
    message = make_message("appended")
    client = logged_in(daemon)
    try:
        typ, data = client.append("Drafts", r"(\Draft $Work)", '"17-Jul-1996 02:44:25 -0700"', message)
        assert typ == "OK"
        assert re.match(rb"\[APPENDUID \d+ 1\] Append completed", data[0]), data
        [(meta, body)] = fetch_all(client, "Drafts")
        assert body == message
        assert b"\\Draft" in meta and b"$Work" in meta
        assert b'INTERNALDATE "17-Jul-1996 09:44:25 +0000"' in meta
    finally:
        client.logout()


def test_append_to_a_missing_mailbox(daemon):
    client = logged_in(daemon)
    try:
        typ, data = client.append("Nope", None, None, make_message("x"))
        assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
    finally:
        client.logout()


def test_multiappend_and_appendlimit(daemon):
    raw = RawImap(daemon)
    try:
        raw.login()
        first, second = make_message("one"), make_message("two")
        raw.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n%s {%d}\r\n" % (len(first), first, len(second)))
        assert raw.read_line() == b"+ Ready for literal data"
        raw.send(second + b"\r\n")
        [reply] = raw.until_tagged(b"a")
        assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1:2\] Append completed", reply), reply
        # RFC 7889: over message_size_max (50 MiB by default) is refused before it is sent.
        raw.send(b"b APPEND INBOX {60000000}\r\n")
        assert raw.until_tagged(b"b") == [b"b NO [TOOBIG] Message too big"]
        raw.send(b"c NOOP\r\n")
        assert raw.until_tagged(b"c") == [b"c OK NOOP completed"]
    finally:
        raw.close()
    client = logged_in(daemon)
    try:
        bodies = [body for _, body in fetch_all(client)]
        assert bodies == [first, second]
    finally:
        client.logout()


def test_authenticate_plain(daemon):
    client = imaps(daemon)
    try:
        password = daemon.users[ALICE]
        typ, data = client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{password}".encode())
        assert typ == "OK" and data[0].startswith(b"[CAPABILITY ")
        assert client.select("INBOX")[0] == "OK"
    finally:
        client.logout()


def test_authenticate_plain_wrong_password_and_sasl_ir(daemon):
    client = imaps(daemon)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0wrong".encode())
    finally:
        client.logout()
    raw = RawImap(daemon)
    try:
        initial = base64.b64encode(f"\0{ALICE}\0{daemon.users[ALICE]}".encode())
        raw.send(b"a AUTHENTICATE PLAIN " + initial + b"\r\n")  # RFC 4959: no challenge
        assert raw.until_tagged(b"a")[-1].startswith(b"a OK [CAPABILITY ")
    finally:
        raw.close()


def test_authenticate_is_refused_before_tls(daemon):
    client = imaplib.IMAP4("127.0.0.1", daemon.ports["imap"], timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.authenticate("PLAIN", lambda _: b"\0x\0y")
    finally:
        client.logout()


def test_id_and_enable(daemon):
    client = imaps(daemon)
    try:
        typ, _ = client.xatom("ID", '("name" "e2e-test" "version" "1")')
        assert typ == "OK"
        assert client.untagged_responses["ID"][0].startswith(b'("name" "mailserverd"')
        client.login(ALICE, daemon.users[ALICE])
        typ, _ = client.xatom("ENABLE", "X-NOTHING")
        assert typ == "OK" and client.untagged_responses["ENABLED"] == [b""]
    finally:
        client.logout()


def test_idle_sees_delivered_mail(daemon):
    raw = RawImap(daemon)
    try:
        raw.login()
        raw.send(b"s SELECT INBOX\r\n")
        assert raw.until_tagged(b"s")[-1].startswith(b"s OK")
        raw.send(b"i IDLE\r\n")
        assert raw.read_line() == b"+ idling"
        smtp_send(daemon, make_message("while idling"))
        # The daemon looks every second; the socket's 30 s timeout is the deadline.
        assert raw.read_line() == b"* 1 EXISTS"
        assert raw.read_line() == b"* 1 RECENT"  # RFC 3501 §7.3.2: the idler is told first
        raw.send(b"DONE\r\n")
        assert raw.until_tagged(b"i") == [b"i OK IDLE terminated"]
    finally:
        raw.close()


def test_idle_ends_on_anything_but_done(daemon):
    raw = RawImap(daemon)
    try:
        raw.login()
        raw.send(b"i IDLE\r\n")
        assert raw.read_line() == b"+ idling"
        raw.send(b"x NOOP\r\n")
        assert raw.until_tagged(b"i") == [b"i BAD Expected DONE"]
        raw.send(b"n NOOP\r\n")
        assert raw.until_tagged(b"n") == [b"n OK NOOP completed"]
    finally:
        raw.close()
