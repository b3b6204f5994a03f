"""End to end: APPEND with BINARY's literal8 (RFC 3516 §4.4) over implicit TLS.

imaplib can neither send a literal8 nor read one, so a raw TLS socket
(tests/clients.py RawImap) speaks to the real daemon.
"""

from __future__ import annotations

import base64
import re

from clients import RawImap

BODY = b"\x00\x01binary \xff\xfe\r\n\x00caf\xc3\xa9\nend\x00" + bytes(range(256))
HEADER = (b"From: bob@example.test\r\nSubject: binary\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: application/octet-stream\r\n")
MESSAGE = HEADER + b"Content-Transfer-Encoding: binary\r\n\r\n" + BODY
#: What BODY[] must be: the part in base64 lines of 76 (RFC 2045 §6.8), no NUL (RFC 9051 §4.3.1).
STORED = (HEADER + b"Content-Transfer-Encoding: base64\r\n\r\n"
          + base64.encodebytes(BODY).replace(b"\n", b"\r\n"))
PLAIN = b"From: bob@example.test\r\nSubject: plain\r\n\r\n8-bit \xc3\xa9 text\r\n"


def test_binary_append_and_fetch_over_tls(daemon):
    client = RawImap(daemon)
    try:
        client.login()
        [capability, _ok] = client.command(b"c", b"CAPABILITY")
        assert b" BINARY " in capability + b" " and b" LITERAL-" not in capability
        # ~{n}: the continuation first, then the octets (RFC 3516 §4.4).
        client.send(b"a APPEND INBOX ~{%d}\r\n" % len(MESSAGE))
        assert client.read_line() == b"+ Ready for literal data"
        client.send(MESSAGE + b"\r\n")
        [reply] = client.until_tagged(b"a")
        assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1\] Append completed", reply), reply
        # MULTIAPPEND: a plain literal, then a non-synchronizing literal8 (RFC 4466 §2.1).
        reply = client.command(b"m", b"APPEND INBOX {%d+}\r\n%s ~{%d+}\r\n%s" % (
            len(PLAIN), PLAIN, len(MESSAGE), MESSAGE))
        assert re.fullmatch(rb"m OK \[APPENDUID \d+ 2:3\] Append completed", reply[-1]), reply
        client.command(b"s", b"SELECT INBOX")
        fetched = client.command(b"f", b"FETCH 1:3 (BINARY.PEEK[1] BODY.PEEK[])")
        assert fetched[:3] == [
            b"* 1 FETCH (BINARY[1] ~{%d}\r\n%s BODY[] {%d}\r\n%s)" % (len(BODY), BODY, len(STORED), STORED),
            b"* 2 FETCH (BINARY[1] {15}\r\n8-bit \xc3\xa9 text\r\n BODY[] {%d}\r\n%s)" % (len(PLAIN), PLAIN),
            b"* 3 FETCH (BINARY[1] ~{%d}\r\n%s BODY[] {%d}\r\n%s)" % (len(BODY), BODY, len(STORED), STORED),
        ]
        assert fetched[3] == b"f OK Fetch completed"
    finally:
        client.close()


def test_refused_binary_appends_leave_the_session_usable(daemon):
    client = RawImap(daemon)
    try:
        client.login()
        # Over APPENDLIMIT (50 MiB by default): NO [TOOBIG] before any octet is sent.
        client.send(b"a APPEND INBOX ~{60000000}\r\n")
        assert client.until_tagged(b"a") == [b"a NO [TOOBIG] Message too big"]
        # A NUL in a plain literal: BAD (RFC 3501 §4.3); its octets never run as commands.
        smuggled = MESSAGE + b"\r\nx LOGOUT\r\n"
        reply = client.command(b"b", b"APPEND INBOX {%d+}\r\n%s" % (len(smuggled), smuggled))
        assert reply == [b"b BAD NUL in literal"]
        # A NUL in a header has no lossless form: NO [UNKNOWN-CTE] (RFC 3516 §4.4).
        bad = b"Subject: a\x00b\r\n\r\nbody\r\n"
        reply = client.command(b"c", b"APPEND INBOX ~{%d+}\r\n%s" % (len(bad), bad))
        assert reply == [b"c NO [UNKNOWN-CTE] Binary content not storable here"]
        status, done = client.command(b"d", b"STATUS INBOX (MESSAGES)")
        assert status.endswith(b" (MESSAGES 0)") and done.startswith(b"d OK "), (status, done)
    finally:
        client.close()
