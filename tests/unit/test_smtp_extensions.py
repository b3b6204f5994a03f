"""SMTP extensions in the server core, replayed against SMTPSession (no I/O):
CHUNKING/BDAT (RFC 3030), SMTPUTF8 (RFC 6531), DSN parameters (RFC 3461),
LIMITS (RFC 9422), the submission and MX listener policies, and HELP.
"""

from __future__ import annotations

import pytest

from mailserverd.delivery.local import NO_OUTBOUND, RELAY_DENIED
from mailserverd.limits import Limits
from mailserverd.smtp.params import RecipientOptions
from mailserverd.smtp.session import ListenerPolicy, Peer, SMTPSession
from session_fakes import FakeAuthenticator
from test_smtp_auth import ALICE, BOB, PASSWORDS, authenticate, ehlo_lines, plain
from test_smtp_session import HOST, LOCAL_DOMAINS, USERS, Client, FakeDelivery, transcript

MAIL_SYNTAX = ("MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] [RET=FULL|HDRS] "
               "[ENVID=id] [AUTH=address]")
MIN_MESSAGE_SIZE = 64 * 1024  # the lowest message_size_max the limits allow


class RecordingSession(SMTPSession):
    """An SMTPSession that keeps every Transaction it hands to delivery."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.delivered_transactions = []

    def deliver(self, transaction, message):
        self.delivered_transactions.append(transaction)
        return super().deliver(transaction, message)


class PolicyDelivery(FakeDelivery):
    """FakeDelivery that treats other domains as LocalDelivery does: 550 5.7.1 on the MX,
    451 4.3.0 (no outbound queue yet) for an authenticated user; records who asked."""

    def __init__(self):
        super().__init__()
        self.checked: list[tuple[str, bool]] = []
        self.sizes: list[int] = []
        self.local_domains = set(LOCAL_DOMAINS) | {"exämple.org".encode("idna").decode()}

    def check_recipient(self, address, remote_allowed=False, size=0):
        self.checked.append((address, remote_allowed))
        self.sizes.append(size)
        if address.rpartition("@")[2] not in self.local_domains:
            raise NO_OUTBOUND if remote_allowed else RELAY_DENIED
        return list(USERS.get(address, []))


def make(kind="smtp", tls_active=False, allow_plaintext=False, **limit_overrides):
    """A RecordingSession on a listener of ``kind``; returns (client, delivery), greeting taken."""
    delivery = PolicyDelivery()
    submission = kind in ("submission", "smtps")
    policy = ListenerPolicy(kind, starttls_available=kind != "smtps", auth_offered=submission,
                            auth_required=submission, allow_plaintext=allow_plaintext)
    session = RecordingSession(policy, delivery, Limits(**limit_overrides), HOST,
                               Peer("192.0.2.7", 40000), tls_active=tls_active,
                               authenticator=FakeAuthenticator(dict(PASSWORDS)))
    client = Client(session)
    client.take()
    return client, delivery


def start_transaction(client: Client, recipients=("alice@example.org",)) -> None:
    """EHLO, MAIL and RCPTs (all accepted) on an MX session."""
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\n"
                + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients))
    assert client.take().endswith(b"250 2.1.5 Recipient ok\r\n" * len(recipients))


# --- CHUNKING / BDAT (RFC 3030)


def test_ehlo_advertises_chunking_and_bdat_chunks_make_one_message():
    client, delivery = make()
    start_transaction(client, ("alice@example.org", "bob@example.org"))
    # RFC 3030 §2: no dot-stuffing, "." lines and CRLF.CRLF are plain data.
    client.send(b"BDAT 20\r\nSubject: x\r\n\r\n.\r\n.\r\nBDAT 7 LAST\r\n..\r\nend")
    assert client.take() == b"250 2.0.0 20 octets received\r\n250 2.0.0 Ok: queued as QID1\r\n"
    [(sender, recipients, users, raw, info)] = delivery.delivered
    assert raw == b"Subject: x\r\n\r\n.\r\n.\r\n..\r\nend\r\n"  # a CRLF is added at the end
    assert (sender, recipients) == ("a@example.net", ["alice@example.org", "bob@example.org"])
    assert info.protocol == "ESMTP"
    assert client.session.transaction is None
    client.send(b"MAIL FROM:<b@example.net>\r\n")  # the transaction ended with LAST
    assert client.take() == b"250 2.1.0 Sender ok\r\n"


def test_bdat_byte_by_byte_and_at_every_cut():
    """Chunk boundaries anywhere: the command line, the size, the data, the next command."""
    wire = b"BDAT 5\r\nab\r\ncBDAT 4 LAST\r\nd\r\neQUIT\r\n"
    expected_reply = b"250 2.0.0 5 octets received\r\n250 2.0.0 Ok: queued as QID1\r\n221 2.0.0 Bye\r\n"
    client, delivery = make()
    start_transaction(client)
    for byte in wire:
        client.send(bytes([byte]))
    assert client.take() == expected_reply
    assert delivery.delivered[0][3] == b"ab\r\ncd\r\ne\r\n"
    for cut in range(1, len(wire)):
        client, delivery = make()
        start_transaction(client)
        client.send(wire[:cut])
        client.send(wire[cut:])
        assert client.take() == expected_reply, cut
        assert delivery.delivered[0][3] == b"ab\r\ncd\r\ne\r\n", cut
        assert client.closed


def test_bdat_data_that_looks_like_commands_is_data():
    client, delivery = make()
    start_transaction(client)
    chunk = b"QUIT\r\nRSET\r\n"
    client.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n250 2.0.0 Ok\r\n"
    assert delivery.delivered[0][3] == chunk
    assert not client.closed


@pytest.mark.parametrize("setup, refusal", [
    (b"", b"503 5.5.1 Send HELO/EHLO first"),
    (b"EHLO c\r\n", b"503 5.5.1 Send MAIL first"),
    (b"EHLO c\r\nMAIL FROM:<a@example.net>\r\n", b"554 5.5.1 No valid recipients"),
    (b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<nobody@example.org>\r\n",
     b"554 5.5.1 No valid recipients"),
])
def test_bdat_in_the_wrong_phase_reads_the_chunk_then_refuses(setup, refusal):
    client, delivery = make()
    client.send(setup)
    client.take()
    client.send(b"BDAT 12 LAST\r\nNOOP\r\nQUIT\r\n")  # the chunk is exactly these 12 octets
    client.send(b"NOOP\r\n")
    assert client.take() == refusal + b"\r\n250 2.0.0 Ok\r\n"
    assert not client.closed
    assert delivery.delivered == []


def test_bdat_refusal_waits_for_the_whole_chunk():
    client, _ = make()
    client.send(b"EHLO c\r\n")
    client.take()
    client.send(b"BDAT 10\r\n12345")
    assert client.take() == b""
    client.send(b"6789")
    assert client.take() == b""
    client.send(b"0NOOP\r\n")
    assert client.take() == b"503 5.5.1 Send MAIL first\r\n250 2.0.0 Ok\r\n"


@pytest.mark.parametrize("arguments", [b"", b"x", b"-1", b"10 FIRST", b"10 LAST more", b"1" * 21,
                                       b"10  LAST", b" 10"])
def test_malformed_bdat_size_is_501_and_close(arguments):
    """No way to find the next command after a size we cannot read: 501, then close."""
    client, delivery = make()
    start_transaction(client)
    client.send(b"BDAT " + arguments + b"\r\nNOOP\r\n")
    assert client.take() == b"501 5.5.4 Syntax: BDAT size [LAST]\r\n"
    assert client.closed
    assert delivery.delivered == []


def test_data_after_bdat_in_one_transaction_is_503():
    client, delivery = make()
    start_transaction(client)
    client.send(b"BDAT 3\r\nab\nDATA\r\n")
    assert client.take() == (b"250 2.0.0 3 octets received\r\n"
                             b"503 5.5.1 DATA not permitted after BDAT\r\n")
    client.send(b"BDAT 0 LAST\r\nNOOP\r\n")
    assert client.take() == (b"550 5.6.0 Message rejected: bare CR or LF in data\r\n"
                             b"250 2.0.0 Ok\r\n")
    assert delivery.delivered == []


@pytest.mark.parametrize("chunks", [
    [b"a\nb\r\n"], [b"a\rb\r\n"], [b"a\r", b"\nb\r", b"x"], [b"ok\r\n", b"\n"],
])
def test_bare_cr_or_lf_in_the_assembled_message_is_550(chunks):
    """RFC 5321 §2.3.8 on the assembled message (a CRLF split across chunks is fine)."""
    client, delivery = make()
    start_transaction(client)
    wire = b"".join(b"BDAT %d%s\r\n%s" % (len(chunk), b" LAST" if n == len(chunks) - 1 else b"",
                                          chunk) for n, chunk in enumerate(chunks))
    client.send(wire + b"NOOP\r\n")
    assert client.take().endswith(b"550 5.6.0 Message rejected: bare CR or LF in data\r\n"
                                  b"250 2.0.0 Ok\r\n")
    assert delivery.delivered == []
    assert client.session.transaction is None


def test_crlf_split_across_chunks_is_a_line_end():
    client, delivery = make()
    start_transaction(client)
    client.send(b"BDAT 2\r\na\rBDAT 3 LAST\r\n\nb\n")  # ends "b\n": bare LF
    assert client.take().endswith(b"550 5.6.0 Message rejected: bare CR or LF in data\r\n")
    start_transaction(client)
    client.send(b"BDAT 2\r\na\rBDAT 3 LAST\r\n\nb\r")  # "b\r" + the added CRLF: a bare CR
    assert client.take().endswith(b"550 5.6.0 Message rejected: bare CR or LF in data\r\n")
    start_transaction(client)
    client.send(b"BDAT 2\r\na\rBDAT 4 LAST\r\n\nb\r\n")
    assert client.take() == b"250 2.0.0 2 octets received\r\n250 2.0.0 Ok: queued as QID1\r\n"
    assert delivery.delivered[0][3] == b"a\r\nb\r\n"


def test_over_size_chunks_are_read_and_dropped_then_552():
    """RFC 1870 §6.3 with RFC 3030: the data is read (never run), every later BDAT is
    answered 552, LAST ends the transaction."""
    client, delivery = make(message_size_max=MIN_MESSAGE_SIZE)
    start_transaction(client)
    client.send(b"BDAT 60000\r\n" + b"x" * 60000)
    assert client.take() == b"250 2.0.0 60000 octets received\r\n"
    client.send(b"BDAT 6000\r\n" + b"QUIT\r\n" * 1000)  # over: dropped, and not run
    assert client.take() == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert client.session.transaction.chunks == bytearray()  # nothing kept
    client.send(b"BDAT 3\r\nabc")
    assert client.take() == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    client.send(b"BDAT 3 LAST\r\nabcRSET\r\n")
    assert client.take() == (b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
                             b"250 2.0.0 Reset state\r\n")
    assert delivery.delivered == []
    assert not client.closed
    start_transaction(client)  # the next transaction starts clean
    client.send(b"BDAT 4 LAST\r\nok\r\n")
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n"


def test_exactly_the_size_limit_is_accepted():
    client, delivery = make(message_size_max=MIN_MESSAGE_SIZE)
    start_transaction(client)
    body = (b"y" * 62 + b"\r\n") * (MIN_MESSAGE_SIZE // 64)
    client.send(b"BDAT %d\r\n" % (len(body) - 64) + body[:-64])
    client.send(b"BDAT 64 LAST\r\n" + body[-64:])
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID1\r\n")
    assert delivery.delivered[0][3] == body


def test_over_size_single_last_chunk_is_552():
    client, delivery = make(message_size_max=MIN_MESSAGE_SIZE)
    start_transaction(client)
    client.send(b"BDAT %d LAST\r\n" % (MIN_MESSAGE_SIZE + 1) + b"z" * (MIN_MESSAGE_SIZE + 1))
    assert client.take() == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert delivery.delivered == []


def test_bdat_message_is_delivered_with_pipelined_commands_after_it():
    client, delivery = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
                b"BDAT 3 LAST\r\nhi\nMAIL FROM:<b@example.net>\r\nRCPT TO:<bob@example.org>\r\n"
                b"BDAT 4 LAST\r\nyo\r\nQUIT\r\n")
    assert client.take().endswith(b"550 5.6.0 Message rejected: bare CR or LF in data\r\n"
                                  b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
                                  b"250 2.0.0 Ok: queued as QID1\r\n221 2.0.0 Bye\r\n")
    assert [entry[3] for entry in delivery.delivered] == [b"yo\r\n"]


# --- a zero-size chunk is complete at once: it must be answered without waiting for more input


@pytest.mark.parametrize("setup, expected", [
    (b"BDAT 4\r\nab\r\n", b"250 2.0.0 Ok: queued as QID1\r\n"),
    (b"", b"250 2.0.0 Ok: queued as QID1\r\n"),
    (b"RSET\r\n", b"503 5.5.1 Send MAIL first\r\n"),
])
def test_bdat_0_last_alone_is_answered_at_once(setup, expected):
    """RFC 3030 §2: the last BDAT may carry zero octets; the client then waits for the reply."""
    client, delivery = make()
    start_transaction(client)
    client.send(setup)
    client.take()
    client.send(b"BDAT 0 LAST\r\n")
    assert client.take() == expected


def test_bdat_0_last_pipelined_ends_the_message():
    client, delivery = make()
    start_transaction(client)
    client.send(b"BDAT 4\r\nab\r\nBDAT 0 LAST\r\nNOOP\r\n")
    assert client.take() == (b"250 2.0.0 4 octets received\r\n250 2.0.0 Ok: queued as QID1\r\n"
                             b"250 2.0.0 Ok\r\n")
    assert delivery.delivered[0][3] == b"ab\r\n"


def test_bdat_on_submission_is_esmtpsa_and_needs_auth():
    client, delivery = make("submission", tls_active=True)
    client.send(b"EHLO c\r\nMAIL FROM:<alice@example.org>\r\nBDAT 3 LAST\r\nabc")
    assert client.take().endswith(b"530 5.7.0 Authentication required\r\n"
                                  b"503 5.5.1 Send MAIL first\r\n")
    authenticate(client)
    client.send(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nBDAT 3 LAST\r\nabc".encode())
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID1\r\n")
    assert delivery.delivered[0][4].protocol == "ESMTPSA"


# --- SMTPUTF8 (RFC 6531)


def test_smtputf8_allows_utf8_addresses():
    client, delivery = make()
    client.send(b"EHLO c\r\n")
    client.take()
    client.send("MAIL FROM:<jösé@exämple.net> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<alice@example.org>\r\n"
                "RCPT TO:<ünknown@example.org>\r\n".encode())
    assert client.take() == (b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n"
                             b"550 5.1.1 No such user here\r\n")
    text = "Subject: é\r\n\r\nünïcode\r\n".encode()
    client.send(b"BDAT %d LAST\r\n" % len(text) + text)
    assert client.take() == b"250 2.0.0 Ok: queued as QID1\r\n"
    [(sender, recipients, _, raw, _)] = delivery.delivered
    assert (sender, recipients, raw) == ("jösé@exämple.net", ["alice@example.org"], text)
    assert ("ünknown@example.org", False) in delivery.checked  # parsed and looked up
    assert client.session.delivered_transactions[0].smtputf8


def test_utf8_addresses_without_smtputf8_are_553_5_6_7():
    client, delivery = make()
    client.send(b"EHLO c\r\n")
    assert b"250-SMTPUTF8\r\n" in client.take()  # RFC 6531 §3.2
    client.send("MAIL FROM:<jösé@example.net>\r\nMAIL FROM:<a@exämple.net> BODY=8BITMIME\r\n"
                "MAIL FROM:<a@example.net>\r\nRCPT TO:<ünknown@example.org>\r\n"
                "RCPT TO:<alice@exämple.org>\r\n".encode())
    assert client.take() == (b"553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter\r\n" * 2
                             + b"250 2.1.0 Sender ok\r\n"
                             + b"553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter\r\n" * 2)
    assert delivery.checked == []


def test_smtputf8_parameter_syntax():
    client, _ = make()
    transcript(client, f"""
        C: HELO c
        S: 250 {HOST} Hello c
        C: MAIL FROM:<a@example.net> SMTPUTF8
        S: 555 5.5.4 Unsupported parameter
        C: EHLO c
        C: MAIL FROM:<a@example.net> SMTPUTF8=yes
        C: MAIL FROM:<a@example.net> smtputf8
        C: RCPT TO:<alice@example.org>
        S: 250-{HOST} Hello c
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250-LIMITS RCPTMAX=100
        S: 250 STARTTLS
        S: 501 5.5.4 SMTPUTF8 takes no value
        S: 250 2.1.0 Sender ok
        S: 250 2.1.5 Recipient ok
    """)
    assert client.session.transaction.smtputf8


# --- DSN (RFC 3461) and LIMITS (RFC 9422)


def test_dsn_parameters_are_recorded_in_the_transaction_handed_to_delivery():
    client, delivery = make()
    client.send(b"EHLO c\r\n")
    assert b"250-DSN\r\n" in client.take()
    client.send(b"MAIL FROM:<a@example.net> RET=hdrs ENVID=QQ+2B314+3D\r\n"
                b"RCPT TO:<alice@example.org> NOTIFY=success,FAILURE ORCPT=rfc822;Alice+2Bx@Example.ORG\r\n"
                b"RCPT TO:<bob@example.org> NOTIFY=NEVER\r\n"
                b"RCPT TO:<team@example.org> ORCPT=RFC822;team@example.org\r\n"
                b"RCPT TO:<Alice@example.org> NOTIFY=DELAY\r\n"
                b"DATA\r\nx\r\n.\r\n")
    assert client.take() == (b"250 2.1.0 Sender ok\r\n" + b"250 2.1.5 Recipient ok\r\n" * 4
                             + b"354 End data with <CR><LF>.<CR><LF>\r\n"
                             + b"250 2.0.0 Ok: queued as QID1\r\n")
    [transaction] = client.session.delivered_transactions
    assert (transaction.ret, transaction.envid) == ("HDRS", "QQ+314=")
    assert transaction.recipients == ["alice@example.org", "bob@example.org", "team@example.org"]
    assert transaction.options == {
        # a duplicate recipient keeps its first options
        "alice@example.org": RecipientOptions(("SUCCESS", "FAILURE"), "rfc822;Alice+x@Example.ORG"),
        "bob@example.org": RecipientOptions(("NEVER",), ""),
        "team@example.org": RecipientOptions((), "rfc822;team@example.org"),
    }
    assert delivery.delivered[0][1] == transaction.recipients


def test_dsn_defaults_when_no_parameters_and_bdat_carries_them_too():
    client, _ = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net> RET=FULL\r\nRCPT TO:<bob@example.org>\r\n"
                b"BDAT 3 LAST\r\nx\r\n")
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID1\r\n")
    client.send(b"MAIL FROM:<a@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\n")
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID2\r\n")
    first, second = client.session.delivered_transactions
    assert (first.ret, first.envid) == ("FULL", "")
    assert (second.ret, second.envid, second.options) == ("", "", {"bob@example.org": RecipientOptions()})


@pytest.mark.parametrize("parameters, reply", [
    (b"RET=ALL", b"501 5.5.4 Bad RET value"),
    (b"RET", b"501 5.5.4 Bad RET value"),
    (b"RET=FULL RET=HDRS", b"501 5.5.4 Duplicate parameter RET"),
    (b"ENVID", b"501 5.5.4 Bad ENVID value"),
    (b"ENVID=a+2x", b"501 5.5.4 Bad xtext in ENVID"),
    (b"ENVID=a+2b", b"501 5.5.4 Bad xtext in ENVID"),  # RFC 3461 §4: upper-case hex only
    (b"ENVID=a=b", b"501 5.5.4 Bad xtext in ENVID"),
    (b"ENVID=" + b"x" * 101, b"501 5.5.4 Bad ENVID value"),  # RFC 3461 §4.4: 100 characters
    (b"ENVID=", b"501 5.5.4 Bad value for ENVID"),
    (b"NOTIFY=NEVER", b"555 5.5.4 Unsupported parameter"),  # an RCPT parameter
])
def test_malformed_mail_dsn_parameters(parameters, reply):
    client, _ = make()
    client.send(b"EHLO c\r\n")
    client.take()
    client.send(b"MAIL FROM:<a@example.net> " + parameters + b"\r\n")
    assert client.take() == reply + b"\r\n"
    assert client.session.transaction is None


def test_envid_of_100_characters_is_accepted():
    client, _ = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net> ENVID=" + b"e" * 100 + b"\r\n")
    assert client.take().endswith(b"250 2.1.0 Sender ok\r\n")
    assert client.session.transaction.envid == "e" * 100


@pytest.mark.parametrize("parameters, reply", [
    (b"NOTIFY=NEVER,SUCCESS", b"501 5.5.4 Bad NOTIFY value"),  # RFC 3461 §4.1: NEVER alone
    (b"NOTIFY=SUCCESS,SUCCESS", b"501 5.5.4 Bad NOTIFY value"),
    (b"NOTIFY=SOMETIMES", b"501 5.5.4 Bad NOTIFY value"),
    (b"NOTIFY", b"501 5.5.4 Bad NOTIFY value"),
    (b"NOTIFY=SUCCESS,", b"501 5.5.4 Bad NOTIFY value"),
    (b"ORCPT=alice@example.org", b"501 5.5.4 Bad ORCPT value"),
    (b"ORCPT=x400;whatever", b"501 5.5.4 Bad ORCPT value"),
    (b"ORCPT=rfc822;", b"501 5.5.4 Bad ORCPT value"),
    (b"ORCPT=rfc822;a+ZZ@example.org", b"501 5.5.4 Bad xtext in ORCPT"),
    (b"ORCPT=rfc822;" + b"a" * 501, b"501 5.5.4 ORCPT too long"),
    (b"RET=FULL", b"555 5.5.4 Unsupported parameter"),  # a MAIL parameter
])
def test_malformed_rcpt_dsn_parameters(parameters, reply):
    client, _ = make()
    client.send(b"EHLO c\r\nMAIL FROM:<a@example.net>\r\n")
    client.take()
    client.send(b"RCPT TO:<alice@example.org> " + parameters + b"\r\nDATA\r\n")
    assert client.take() == reply + b"\r\n554 5.5.1 No valid recipients\r\n"


def test_limits_rcptmax_is_advertised_and_enforced():
    client, _ = make(smtp_recipients_max=3)
    client.send(b"EHLO c\r\n")
    assert b"250-LIMITS RCPTMAX=3\r\n" in client.take()  # RFC 9422 §4.2
    client.send(b"MAIL FROM:<a@example.net>\r\n" + b"RCPT TO:<nobody@example.org>\r\n"
                + b"".join(b"RCPT TO:<%s>\r\n" % r for r in (b"alice@example.org", b"bob@example.org",
                                                           b"team@example.org", b"alice+x@example.org",
                                                           b"bob@example.org")))
    # an unknown recipient does not count; RFC 5321 §4.5.3.1.10: 452 past the limit
    assert client.take() == (b"250 2.1.0 Sender ok\r\n550 5.1.1 No such user here\r\n"
                             + b"250 2.1.5 Recipient ok\r\n" * 3
                             + b"452 4.5.3 Too many recipients\r\n" * 2)
    assert len(client.session.transaction.recipients) == 3


# --- listener policies


def test_submission_requires_auth_and_the_users_own_sender():
    client, delivery = make("submission", tls_active=True)
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: MAIL FROM:<{ALICE}>
        S: 530 5.7.0 Authentication required
        C: RCPT TO:<{BOB}>
        S: 503 5.5.1 Send MAIL first
        C: AUTH PLAIN {plain()}
        S: 235 2.7.0 Authentication successful
        C: MAIL FROM:<{BOB}>
        S: 553 5.7.1 Sender address not owned by the authenticated user
        C: MAIL FROM:<someone@elsewhere.example>
        S: 553 5.7.1 Sender address not owned by the authenticated user
        C: MAIL FROM:<>
        S: 250 2.1.0 Sender ok
        C: RSET
        S: 250 2.0.0 Reset state
        C: MAIL FROM:<{ALICE}> AUTH=<>
        S: 250 2.1.0 Sender ok
    """)


def test_submission_relay_is_decided_by_delivery_for_an_authenticated_user():
    client, delivery = make("submission", tls_active=True)
    authenticate(client)
    transcript(client, f"""
        C: MAIL FROM:<{ALICE}>
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<friend@elsewhere.example>
        S: 451 4.3.0 Delivery to other domains is not available yet, try again later
        C: RCPT TO:<{BOB}>
        S: 250 2.1.5 Recipient ok
    """)
    assert delivery.checked == [("friend@elsewhere.example", True), (BOB, True)]


def test_mx_accepts_local_recipients_only_and_refuses_auth():
    client, delivery = make("smtp", tls_active=True)
    transcript(client, f"""
        C: EHLO c
        S: 250-{HOST} Hello c
        S: 250-PIPELINING
        S: 250-SIZE 52428800
        S: 250-8BITMIME
        S: 250-SMTPUTF8
        S: 250-ENHANCEDSTATUSCODES
        S: 250-CHUNKING
        S: 250-DSN
        S: 250 LIMITS RCPTMAX=100
        C: AUTH PLAIN {plain()}
        S: 503 5.5.1 Authentication not enabled
        C: MAIL FROM:<a@example.net> AUTH=alice+40example.org
        S: 555 5.5.4 Unsupported parameter
        C: MAIL FROM:<{BOB}>
        S: 250 2.1.0 Sender ok
        C: RCPT TO:<victim@elsewhere.example>
        S: 550 5.7.1 Relay access denied
        C: RCPT TO:<{ALICE}>
        S: 250 2.1.5 Recipient ok
    """)
    assert delivery.checked == [("victim@elsewhere.example", False), (ALICE, False)]


def test_mx_takes_mail_without_auth_from_any_sender():
    """No 530 and no sender check on port 25: any reverse-path, local recipients."""
    client, delivery = make("smtp")
    client.send(f"EHLO c\r\nMAIL FROM:<{BOB}>\r\nRCPT TO:<{ALICE}>\r\nDATA\r\nx\r\n.\r\n".encode())
    assert client.take().endswith(b"250 2.0.0 Ok: queued as QID1\r\n")
    assert delivery.delivered[0][4].authenticated_user == ""


def test_smtps_listener_offers_no_starttls():
    client, _ = make("smtps", tls_active=True)
    transcript(client, f"""
        C: EHLO c
        {ehlo_lines()}
        C: STARTTLS
        S: 503 5.5.1 TLS already active
    """)


# --- HELP (RFC 5321 §4.1.1.8)


ALL_COMMANDS = "HELO EHLO STARTTLS MAIL AUTH RCPT DATA BDAT RSET NOOP QUIT HELP VRFY EXPN"


@pytest.mark.parametrize("kind, tls_active, listed", [
    ("smtp", False, ALL_COMMANDS.replace(" AUTH", "")),
    ("smtp", True, ALL_COMMANDS.replace(" AUTH", "").replace(" STARTTLS", "")),
    ("submission", False, ALL_COMMANDS.replace(" AUTH", "")),  # no mechanism before TLS
    ("submission", True, ALL_COMMANDS.replace(" STARTTLS", "")),
    ("smtps", True, ALL_COMMANDS.replace(" STARTTLS", "")),
])
def test_help_lists_only_what_the_listener_offers(kind, tls_active, listed):
    client, _ = make(kind, tls_active=tls_active)
    client.send(b"HELP\r\nHELP starttls\r\nHELP auth\r\nHELP BDAT\r\n")
    expected = [f"214 2.0.0 Commands: {listed}",
                "214 2.0.0 STARTTLS" if " STARTTLS " in listed else "502 5.5.1 No help for that command",
                "214 2.0.0 AUTH mechanism [initial-response]" if " AUTH " in listed
                else "502 5.5.1 No help for that command",
                "214 2.0.0 BDAT size [LAST]"]
    assert client.take().decode().split("\r\n")[:-1] == expected
