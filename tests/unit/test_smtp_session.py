"""SMTP server core: C:/S: transcripts replayed against SMTPSession (no I/O).

The session talks to a small in-test delivery double (the narrow
check_recipient/deliver interface), never to the store; the real store is
exercised by the end-to-end tests.
"""

from __future__ import annotations

import re

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import globalLogPublisher

from mailserverd.delivery.local import RELAY_DENIED, DeliveryResult
from mailserverd.errors import MailError
from mailserverd.limits import Limits
from mailserverd.smtp.session import (
    Close,
    ListenerPolicy,
    Peer,
    Send,
    SMTPSession,
    StartTLS,
    Wait,
)

HOST = "mx.example.org"
USERS = {
    "alice@example.org": ["alice@example.org"],
    "bob@example.org": ["bob@example.org"],
    "team@example.org": ["alice@example.org", "bob@example.org"],
    f"postmaster@{HOST}": ["alice@example.org"],
}
LOCAL_DOMAINS = {"example.org", HOST}


class FakeDelivery:
    """Recipients from USERS; ``hold`` makes deliver/check_recipient return unfired Deferreds."""

    def __init__(self, hold_delivery=False, hold_recipients=False):
        self.hold_delivery = hold_delivery
        self.hold_recipients = hold_recipients
        self.delivered: list[tuple] = []
        self.pending: list[Deferred] = []
        self.failure: Exception | None = None
        self.recipient_error: Exception | None = None
        self.queue_ids = iter(f"QID{n}" for n in range(1, 1000))

    def check_recipient(self, address, remote_allowed=False, size=0):
        self.remote_allowed = remote_allowed
        if self.recipient_error is not None:
            raise self.recipient_error
        if address.rpartition("@")[2] not in LOCAL_DOMAINS:
            raise RELAY_DENIED
        users = list(USERS.get(address, []))
        if self.hold_recipients:
            waiting = Deferred()
            self.pending.append((waiting, users))
            return waiting
        return users

    def sender_allowed(self, user, sender):
        return sender in ("", user)

    def deliver(self, sender, recipients, users, raw, client, envelope=None):
        self.delivered.append((sender, recipients, users, raw, client))
        if self.failure is not None:
            return fail(self.failure)
        result = DeliveryResult(next(self.queue_ids), tuple(users), len(raw))
        if self.hold_delivery:
            waiting = Deferred()
            self.pending.append((waiting, result))
            return waiting
        return succeed(result)

    def release(self):
        """Fire the oldest held Deferred with its prepared result."""
        waiting, result = self.pending.pop(0)
        waiting.callback(result)


class Client:
    """Carries out the session's actions like the adapter does, recording what was sent."""

    def __init__(self, session: SMTPSession):
        self.session = session
        self.output = bytearray()
        self.tls_starts = 0
        self.closed = False
        self.waits = 0
        self.perform(session.greeting())

    def perform(self, actions):
        for action in actions:
            assert not self.closed, "action after Close"
            if isinstance(action, Send):
                self.output += action.data
            elif isinstance(action, StartTLS):
                self.tls_starts += 1
            elif isinstance(action, Close):
                self.closed = True
            elif isinstance(action, Wait):
                self.waits += 1
                action.deferred.addCallback(self.perform)
            else:
                raise AssertionError(action)

    def send(self, data: bytes) -> None:
        self.perform(self.session.data_received(data))

    def take(self) -> bytes:
        data = bytes(self.output)
        self.output.clear()
        return data


def make(limits=None, delivery=None, tls_active=False, starttls=True, **limit_overrides):
    delivery = delivery or FakeDelivery()
    limits = limits or Limits(**limit_overrides)
    session = SMTPSession(ListenerPolicy("smtp", starttls_available=starttls), delivery, limits,
                          HOST, Peer("192.0.2.7", 40000), tls_active=tls_active)
    return Client(session), delivery


def transcript(client: Client, script: str) -> None:
    """Replay ``script``: each run of ``C:`` lines is sent as one chunk (pipelined,
    CRLF after each); the ``S:`` lines after it must be exactly what the server
    has written by then. ``S: <close>`` asserts that the session closed."""
    lines = [line.strip() for line in script.strip().splitlines() if line.strip()]
    index = 0
    while index < len(lines):
        chunk = []
        while index < len(lines) and lines[index].startswith("C:"):
            chunk.append(lines[index][3:] + "\r\n")
            index += 1
        if chunk:
            client.send("".join(chunk).encode())
        expected, closes = [], False
        while index < len(lines) and lines[index].startswith("S:"):
            if lines[index] == "S: <close>":
                closes = True
            else:
                expected.append(lines[index][3:] + "\r\n")
            index += 1
        assert client.take().decode() == "".join(expected), f"after {chunk}"
        assert client.closed == closes


GREETING = f"S: 220 {HOST} ESMTP mailserverd"


def ehlo_reply(name="c", size=52428800, starttls=True) -> str:
    """The S: lines of our EHLO reply (RFC 5321 §4.1.1.1; no enhanced codes, RFC 2034)."""
    keywords = ["PIPELINING", f"SIZE {size}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                "CHUNKING", "DSN", "LIMITS RCPTMAX=100"]
    keywords += ["STARTTLS"] if starttls else []
    lines = [f"{HOST} Hello {name}"] + keywords
    return "\n".join(f"S: 250{'-' if n < len(lines) - 1 else ' '}{line}" for n, line in enumerate(lines))


EHLO = "C: EHLO client.example.net\n" + ehlo_reply("client.example.net")


def test_greeting_and_ehlo_capabilities():
    client, _ = make()
    transcript(client, GREETING + "\n" + EHLO)


def test_ehlo_without_starttls_when_tls_is_active_or_unavailable():
    for client, _ in (make(tls_active=True), make(starttls=False)):
        transcript(client, f"""
            {GREETING}
            C: EHLO c
            {ehlo_reply(starttls=False)}
            C: STARTTLS
        """ + ("S: 503 5.5.1 TLS already active" if client.session.tls_active
               else "S: 454 4.7.0 TLS not available"))


def test_helo_and_parameters_refused_without_ehlo():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: HELO client.example.net
        S: 250 {HOST} Hello client.example.net
        C: MAIL FROM:<a@example.net> SIZE=10
        S: 555 5.5.4 Unsupported parameter
        C: MAIL FROM:<a@example.net>
        S: 250 2.1.0 Sender ok
    """)


def test_helo_needs_a_name():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: HELO
        S: 501 Syntax: HELO hostname
        C: EHLO two words
        S: 501 Syntax: EHLO hostname
    """)


def test_full_transaction_delivers_unstuffed_text():
    client, delivery = make()
    transcript(client, f"""
        {GREETING}
        {EHLO}
        C: MAIL FROM:<Sender@Example.NET> BODY=8BITMIME SIZE=100
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<Alice@Example.ORG>
        S: 250 2.1.5 Recipient ok
        C: RCPT TO:<team@example.org>
        S: 250 2.1.5 Recipient ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: test
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 Ok: queued as QID1
        C: QUIT
        S: 221 2.0.0 Bye
        S: <close>
    """)
    [(sender, recipients, users, raw, info)] = delivery.delivered
    assert sender == "Sender@Example.NET"
    assert recipients == ["alice@example.org", "team@example.org"]
    assert users == ["alice@example.org", "bob@example.org"]
    assert raw == b"Subject: test\r\n\r\n.leading dot\r\n"
    assert (info.helo, info.ip, info.protocol) == ("client.example.net", "192.0.2.7", "ESMTP")
    assert client.waits == 0  # an outcome that is already there is answered without a Wait


def test_null_sender_and_postmaster_without_domain():
    client, delivery = make()
    transcript(client, f"""
        {GREETING}
        C: HELO c
        S: 250 {HOST} Hello c
        C: MAIL FROM:<>
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<Postmaster>
        S: 250 2.1.5 Recipient ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: .
        S: 250 2.0.0 Ok: queued as QID1
    """)
    [(sender, recipients, _, raw, info)] = delivery.delivered
    assert (sender, recipients, raw, info.protocol) == ("", [f"postmaster@{HOST}"], b"", "SMTP")


def test_unknown_and_relayed_recipients():
    client, delivery = make()
    transcript(client, f"""
        {GREETING}
        C: EHLO c
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<nobody@example.org>
        C: RCPT TO:<victim@elsewhere.example>
        C: RCPT TO:<[192.0.2.1]>
        C: DATA
        {ehlo_reply()}
        S: 250 2.1.0 Sender ok
        S: 550 5.1.1 No such user here
        S: 550 5.7.1 Relay access denied
        S: 501 5.1.3 Bad address syntax: empty or invalid local part
        S: 554 5.5.1 No valid recipients
    """)
    assert delivery.delivered == []


def test_pipelined_replies_wait_for_delivery_in_order():
    """RFC 2920 §3.1: commands after the end of data are answered only after the
    (slow) delivery's 250, and never run before it."""
    client, delivery = make(delivery=FakeDelivery(hold_delivery=True))
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert client.take().endswith(b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
                                  b"354 End data with <CR><LF>.<CR><LF>\r\n")
    client.send(b"one\r\n.\r\nMAIL FROM:<b@example.net>\r\nRCPT TO:<bob@example.org>\r\n")
    client.send(b"DATA\r\n")
    assert client.take() == b""  # nothing may overtake the pending 250
    assert client.session.waiting and client.waits == 1
    assert len(delivery.delivered) == 1
    delivery.release()
    assert client.take() == (b"250 2.0.0 Ok: queued as QID1\r\n250 2.1.0 Sender ok\r\n"
                             b"250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    client.send(b"two\r\n.\r\nQUIT\r\n")
    assert client.take() == b""
    delivery.release()
    assert client.take() == b"250 2.0.0 Ok: queued as QID2\r\n221 2.0.0 Bye\r\n"
    assert client.closed
    assert [entry[3] for entry in delivery.delivered] == [b"one\r\n", b"two\r\n"]


def test_pipelined_rcpt_that_waits_keeps_order():
    client, delivery = make(delivery=FakeDelivery(hold_recipients=True))
    client.take()
    client.send(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
                b"RCPT TO:<nobody@example.org>\r\nNOOP\r\n")
    assert client.take() == f"250 {HOST} Hello c\r\n250 2.1.0 Sender ok\r\n".encode()
    delivery.release()
    assert client.take() == b"250 2.1.5 Recipient ok\r\n"  # the next RCPT waits now
    delivery.release()
    assert client.take() == b"550 5.1.1 No such user here\r\n250 2.0.0 Ok\r\n"


def test_starttls_drops_pipelined_plaintext_and_resets_state():
    """RFC 3207 §4.2 and the CVE-2011-0411 class: the injected MAIL never runs."""
    client, delivery = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRSET\r\n")
    client.take()
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
    assert client.take() == b"220 2.0.0 Ready to start TLS\r\n"
    assert client.tls_starts == 1
    assert client.session.tls_active
    transcript(client, f"""
        C: MAIL FROM:<a@example.net>
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO c
        {ehlo_reply(starttls=False)}
        C: STARTTLS
        S: 503 5.5.1 TLS already active
    """)
    client.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\n")
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID1\r\n")
    assert delivery.delivered[0][4].protocol == "ESMTPS"


def test_starttls_refused_inside_a_transaction_and_with_arguments():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: STARTTLS
        S: 503 5.5.1 Send HELO/EHLO first
        C: EHLO c
        C: STARTTLS now
        C: MAIL FROM:<a@example.net>
        C: STARTTLS
        {ehlo_reply()}
        S: 501 5.5.4 Syntax: STARTTLS
        S: 250 2.1.0 Sender ok
        S: 503 5.5.1 Bad sequence of commands
    """)
    assert client.tls_starts == 0


def test_line_too_long_then_resync():
    client, _ = make(smtp_line_max=512)
    transcript(client, GREETING)
    long_line = b"NOOP " + b"x" * 600 + b"\r\n"
    client.send(long_line + b"NOOP\r\n")
    assert client.take() == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    # the same, cut into pieces (no LF seen until the last one)
    for start in range(0, len(long_line), 100):
        client.send(long_line[start:start + 100])
    client.send(b"NOOP\r\n")
    assert client.take() == b"500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n"
    # exactly the limit (CRLF included) is fine: RFC 5321 §4.5.3.1.4
    client.send(b"NOOP " + b"y" * (512 - 7) + b"\r\n")
    assert client.take() == b"250 2.0.0 Ok\r\n"


def test_no_crlf_flood_is_cut_off():
    client, _ = make(smtp_line_max=512, smtp_text_line_max=10000)
    client.take()
    for _ in range(10):
        client.send(b"A" * 1000)
        assert len(client.session._input) <= 512  # never buffered beyond one line
        assert client.take() == b""
    client.send(b"A" * 1000)
    assert client.take() == b"421 4.7.0 Line too long, closing connection\r\n"
    assert client.closed


def test_bare_lf_and_bare_cr_in_command_lines():
    client, _ = make()
    transcript(client, GREETING)
    client.send(b"NOOP\nNOOP\rx\r\nNOOP\r\n")
    assert client.take() == (b"500 5.5.2 Command line must end with CRLF and hold no bare CR or NUL\r\n"
                             * 2 + b"250 2.0.0 Ok\r\n")


def start_data(client: Client) -> None:
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert client.take().endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")


STUFFED = b"From: a@example.net\r\n\r\n..\r\n...\r\n...x\r\n.a\r\nend.\r\n\r\nx\r\n..\r\n"
UNSTUFFED = b"From: a@example.net\r\n\r\n.\r\n..\r\n..x\r\na\r\nend.\r\n\r\nx\r\n.\r\n"


def test_dot_unstuffing_byte_by_byte():
    client, delivery = make()
    start_data(client)
    for byte in STUFFED + b".\r\nNOOP\r\n":
        client.send(bytes([byte]))
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n250 2.0.0 Ok\r\n"
    assert delivery.delivered[0][3] == UNSTUFFED


@pytest.mark.parametrize("text", [
    b"line\r\n..\r\n.x\r\n",
    b"",
    b"a\r\n",
    b"..\r\n",
])
def test_end_of_data_found_at_every_chunk_boundary(text):
    wire = text + b".\r\nNOOP\r\n"
    expected = b"".join(line[1:] if line.startswith(b".") else line
                        for line in text.splitlines(keepends=True))
    for cut in range(len(wire) + 1):
        for cut2 in range(cut, len(wire) + 1):
            client, delivery = make()
            start_data(client)
            for piece in (wire[:cut], wire[cut:cut2], wire[cut2:]):
                client.send(piece)
            assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n250 2.0.0 Ok\r\n", (cut, cut2)
            assert delivery.delivered[0][3] == expected


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"])
def test_smuggled_end_of_data_is_not_an_end(fake_end):
    """CVE-2023-51764 class: only <CRLF>.<CRLF> ends the text; the "smuggled"
    second message is part of this (rejected) one, never a transaction."""
    client, delivery = make()
    start_data(client)
    client.send(b"Subject: one\r\n\r\nhello" + fake_end
                + b"MAIL FROM:<forged@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
                + b"Subject: smuggled\r\n\r\n")
    assert client.take() == b""  # still inside the first message's text
    client.send(b".\r\nNOOP\r\n")
    assert client.take() == (b"550 5.6.0 Message rejected: bare CR or LF in data\r\n"
                             b"250 2.0.0 Ok\r\n")
    assert delivery.delivered == []


def test_bare_lf_rejects_message_but_keeps_connection():
    client, delivery = make()
    start_data(client)
    client.send(b"a\nb\r\n.\r\n")
    assert client.take().startswith(b"550 5.6.0 ")
    assert not client.closed
    start_data(client)
    client.send(b"fine\r\n.\r\n")
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n"
    assert delivery.delivered[0][3] == b"fine\r\n"


def test_size_declared_too_big_and_received_too_big():
    limit = 64 * 1024
    client, delivery = make(message_size_max=limit)
    transcript(client, f"""
        {GREETING}
        C: EHLO c
        {ehlo_reply(size=limit)}
        C: MAIL FROM:<a@example.net> SIZE={limit + 1}
        S: 552 5.3.4 Message size exceeds fixed maximum message size
        C: MAIL FROM:<a@example.net> SIZE=12x
        S: 501 5.5.4 Bad SIZE value
        C: MAIL FROM:<a@example.net> SIZE={limit}
        C: RCPT TO:<alice@example.org>
        C: DATA
        S: 250 2.1.0 Sender ok
        S: 250 2.1.5 Recipient ok
        S: 354 End data with <CR><LF>.<CR><LF>
    """)
    line = b"x" * 998 + b"\r\n"
    for _ in range(limit // len(line) + 2):
        client.send(line)
    assert client.take() == b""  # read to the end before answering
    client.send(b".\r\nNOOP\r\n")
    assert client.take() == (b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
                             b"250 2.0.0 Ok\r\n")
    assert delivery.delivered == []


def test_text_line_too_long_rejects_whole_message():
    client, delivery = make(smtp_text_line_max=1000)
    start_data(client)
    client.send(b"ok\r\n" + b"y" * 999)  # 999 + CRLF = 1001 octets: one too many
    client.send(b"\r\nmore\r\n.\r\n")
    assert client.take() == b"552 5.3.4 Message rejected: line too long\r\n"
    start_data(client)
    client.send(b"z" * 998 + b"\r\n.\r\n")  # exactly 1000 with CRLF
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n"
    assert len(delivery.delivered) == 1


def test_too_many_recipients():
    client, delivery = make(smtp_recipients_max=2)
    transcript(client, f"""
        {GREETING}
        C: HELO c
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<alice@example.org>
        C: RCPT TO:<bob@example.org>
        C: RCPT TO:<team@example.org>
        C: DATA
        S: 250 {HOST} Hello c
        S: 250 2.1.0 Sender ok
        S: 250 2.1.5 Recipient ok
        S: 250 2.1.5 Recipient ok
        S: 452 4.5.3 Too many recipients
        S: 354 End data with <CR><LF>.<CR><LF>
    """)
    client.send(b".\r\n")
    assert delivery.delivered[0][1] == ["alice@example.org", "bob@example.org"]


def test_bad_command_limit_closes():
    client, _ = make(smtp_bad_commands_max=3)
    transcript(client, f"""
        {GREETING}
        C: FOO
        C: MAIL FROM:<a@example.net>
        C: NOOP
        C: BAR baz
        C: QUX
        C: NOOP
        S: 500 5.5.1 Command unrecognized
        S: 503 5.5.1 Send HELO/EHLO first
        S: 250 2.0.0 Ok
        S: 500 5.5.1 Command unrecognized
        S: 421 4.7.0 Too many errors, closing connection
        S: <close>
    """)
    client.send(b"NOOP\r\n")
    assert client.take() == b""


def test_command_limit_closes():
    client, _ = make(smtp_commands_max=10)
    client.take()
    client.send(b"NOOP\r\n" * 11)
    assert client.take() == b"250 2.0.0 Ok\r\n" * 10 + b"421 4.7.0 Too many commands, closing connection\r\n"
    assert client.closed


def test_unknown_and_malformed_parameters():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: EHLO c
        C: MAIL FROM:<a@example.net> FOO=bar
        C: MAIL FROM:<a@example.net> BODY=BINARYMIME
        C: MAIL FROM:<a@example.net> SIZE=1 SIZE=2
        C: MAIL FROM:<a@example.net>SIZE=1
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<alice@example.org> FOO=BAR
        C: RCPT TO:<alice@example.org> NOTIFY=NEVER
        {ehlo_reply()}
        S: 555 5.5.4 Unsupported parameter
        S: 501 5.5.4 Bad BODY value
        S: 501 5.5.4 Duplicate parameter SIZE
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=address]
        S: 250 2.1.0 Sender ok
        S: 555 5.5.4 Unsupported parameter
        S: 250 2.1.5 Recipient ok
    """)


def test_bad_paths():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: HELO c
        C: MAIL FROM:a@example.net
        C: MAIL TO:<a@example.net>
        C: MAIL FROM:<a@example.net>
        C: RCPT TO:<>
        C: RCPT FROM:<alice@example.org>
        S: 250 {HOST} Hello c
        S: 501 5.1.7 Bad sender address syntax: path must start with '<'
        S: 501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=address]
        S: 250 2.1.0 Sender ok
        S: 501 5.1.3 Bad address syntax: null path not allowed here
        S: 501 5.5.4 Syntax: RCPT TO:<address> [NOTIFY=...] [ORCPT=addr-type;address]
    """)


def test_rset_noop_and_sequence_errors():
    client, delivery = make()
    transcript(client, f"""
        {GREETING}
        C: RCPT TO:<alice@example.org>
        S: 503 5.5.1 Send HELO/EHLO first
        C: DATA
        S: 503 5.5.1 Send HELO/EHLO first
        C: RSET
        S: 250 2.0.0 Reset state
        C: helo c
        S: 250 {HOST} Hello c
        C: RCPT TO:<alice@example.org>
        S: 503 5.5.1 Send MAIL first
        C: DATA
        S: 503 5.5.1 Send MAIL first
        C: mail from:<a@example.net>
        S: 250 2.1.0 Sender ok
        C: MAIL FROM:<b@example.net>
        S: 503 5.5.1 Sender already specified
        C: DATA
        S: 554 5.5.1 No valid recipients
        C: RCPT TO:<alice@example.org>
        S: 250 2.1.5 Recipient ok
        C: MAIL FROM:<b@example.net>
        S: 503 5.5.1 Sender already specified
        C: NOOP anything
        S: 250 2.0.0 Ok
        C: RSET extra
        S: 501 5.5.4 Syntax: RSET
        C: RSET
        S: 250 2.0.0 Reset state
        C: DATA
        S: 503 5.5.1 Send MAIL first
        C: EHLO again
        {ehlo_reply("again")}
    """)
    assert delivery.delivered == []


def test_ehlo_resets_transaction():
    client, _ = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nHELO d\r\nDATA\r\n")
    assert client.take().endswith(f"250 {HOST} Hello d\r\n503 5.5.1 Send MAIL first\r\n".encode())


def test_quit_closes_and_ignores_what_follows():
    client, delivery = make()
    transcript(client, f"""
        {GREETING}
        C: QUIT
        C: HELO c
        C: MAIL FROM:<a@example.net>
        S: 221 2.0.0 Bye
        S: <close>
    """)
    client.send(b"NOOP\r\n")
    assert client.take() == b""


def test_help_vrfy_expn():
    client, _ = make()
    transcript(client, f"""
        {GREETING}
        C: HELP
        S: 214 2.0.0 Commands: HELO EHLO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN
        C: HELP mail
        S: 214 2.0.0 MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] [ENVID=id] [AUTH=address]
        C: HELP AUTH
        S: 502 5.5.1 No help for that command
        C: VRFY alice
        S: 252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY address
        C: EXPN staff
        S: 502 5.5.1 Command not implemented
        C: TURN
        S: 500 5.5.1 Command unrecognized
    """)


def test_idle_timeout_reply():
    client, _ = make()
    client.take()
    client.perform(client.session.timed_out())
    assert client.take() == b"421 4.4.2 Idle timeout, closing connection\r\n"
    assert client.closed
    assert client.session.timed_out() == []


def test_delivery_failures_are_answered_and_connection_survives():
    delivery = FakeDelivery()
    client, _ = make(delivery=delivery)
    delivery.failure = MailError("451", "4.3.0", "Local error in processing, try again later", True)
    start_data(client)
    client.send(b"x\r\n.\r\n")
    assert client.take() == b"451 4.3.0 Local error in processing, try again later\r\n"
    delivery.failure = MailError("552", "5.2.2", "Mailbox full")
    start_data(client)
    client.send(b"x\r\n.\r\n")
    assert client.take() == b"552 5.2.2 Mailbox full\r\n"
    delivery.failure = None
    start_data(client)
    client.send(b"x\r\n.\r\n")
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n"


def test_unexpected_exception_is_logged_answered_451_and_survived():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        delivery = FakeDelivery()
        client, _ = make(delivery=delivery)
        delivery.recipient_error = RuntimeError("boom")
        client.send(b"HELO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nNOOP\r\n")
        assert client.take().endswith(b"451 4.3.0 Local error in processing, try again later\r\n"
                                      b"250 2.0.0 Ok\r\n")
        delivery.failure = ValueError("unexpected in deliver")
        delivery.recipient_error = None
        client.send(b"RCPT TO:<alice@example.org>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n")
        assert client.take().endswith(b"451 4.3.0 Local error in processing, try again later\r\n"
                                      b"250 2.0.0 Ok\r\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [event["log_failure"].value for event in events if "log_failure" in event]
    assert any(isinstance(error, RuntimeError) for error in logged)
    assert any(isinstance(error, ValueError) for error in logged)
    assert not client.closed


def test_input_held_while_waiting_is_bounded():
    client, delivery = make(delivery=FakeDelivery(hold_delivery=True), smtp_line_max=512,
                            smtp_recipients_max=1)
    start_data(client)
    client.send(b"x\r\n.\r\n")
    client.send(b"NOOP\r\n" * 100)  # 600 octets: within (1 + 4) * 512
    assert not client.closed
    client.send(b"NOOP\r\n" * 400)
    assert client.closed
    delivery.release()  # the delivery's outcome arrives after the close: nothing is sent
    assert client.take() == b""


def test_every_reply_has_an_enhanced_code_except_greeting_helo_ehlo_and_354():
    client, _ = make(delivery=FakeDelivery())
    client.send(b"EHLO c\r\nHELO c\r\n")
    client.take()
    client.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<alice@example.org>\r\n"
                b"VRFY x\r\nHELP\r\nFOO\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@example.net>\r\n"
                b"RCPT TO:<alice@example.org>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n")
    for line in client.take().decode().splitlines():
        if not line.startswith("354"):
            assert re.match(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ", line), line
