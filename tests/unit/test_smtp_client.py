"""The outbound SMTP client: the sans-I/O core as transcripts, and the adapter
on StringTransport with a Clock (timeouts, a peer that stops reading)."""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from mailserverd.smtp.client import (
    ClientCore,
    ClientTimeouts,
    Close,
    OutboundMessage,
    OutboundRecipient,
    PeerProtocolError,
    ReplyParser,
    Send,
    SendContent,
    SMTPClientProtocol,
    StartTLS,
    xtext,
)

CONTENT = b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def message(*rcpts: str, **options) -> OutboundMessage:
    recipients = tuple(OutboundRecipient(r) if isinstance(r, str) else r for r in rcpts or ("bob@remote.test",))
    return OutboundMessage(sender="alice@example.test", recipients=recipients, content=CONTENT, **options)


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def content_of(actions) -> bytes:
    [action] = [a for a in actions if isinstance(a, SendContent)]
    return b"".join(action.chunks)


def ehlo_reply(*extensions: str) -> bytes:
    lines = ["peer.test"] + list(extensions)
    return b"".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode() for i, line in enumerate(lines))


# --- replies


def test_reply_parser_multiline_and_split_input():
    parser = ReplyParser(512, 10)
    assert parser.feed(b"250-a\r\n25") == []
    [reply] = parser.feed(b"0 b\r\n")
    assert (reply.code, reply.lines) == (250, ("a", "b"))


@pytest.mark.parametrize("wire", [b"hello\r\n", b"250-a\r\n550 b\r\n", b"x" * 600, b"2500\r\n"])
def test_reply_parser_refuses_garbage_mixed_codes_and_endless_lines(wire):
    with pytest.raises(PeerProtocolError):
        ReplyParser(512, 10).feed(wire)


def test_reply_parser_bounds_the_lines_of_one_reply():
    with pytest.raises(PeerProtocolError):
        ReplyParser(512, 3).feed(b"250-a\r\n" * 4)


def test_xtext_encodes_plus_equals_and_controls():
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"


# --- transcripts through the core


def test_pipelined_transaction_with_per_recipient_replies():
    core = ClientCore(message("bob@remote.test", "nobody@remote.test"), "mx.example.test", starttls=False)
    core.connected()
    assert sent(core.data_received(b"220 peer.test ESMTP\r\n")) == b"EHLO mx.example.test\r\n"
    actions = core.data_received(ehlo_reply("PIPELINING", "SIZE 1000", "8BITMIME"))
    assert sent(actions) == (b"MAIL FROM:<alice@example.test> SIZE=%d\r\n" % len(CONTENT)
                             + b"RCPT TO:<bob@remote.test>\r\nRCPT TO:<nobody@remote.test>\r\nDATA\r\n")
    actions = core.data_received(b"250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
    # RFC 5321 §4.5.2: a line starting with "." gets another; the message ends with CRLF.CRLF.
    assert content_of(actions) == b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n"
    core.content_sent()
    actions = core.data_received(b"250 2.0.0 queued as X\r\n")
    assert sent(actions) == b"QUIT\r\n" and any(isinstance(a, Close) for a in actions)
    replies = core.result.replies
    assert replies["bob@remote.test"].kind == "delivered"
    assert replies["nobody@remote.test"].kind == "bounced"
    assert replies["nobody@remote.test"].enhanced == "5.1.1"
    assert not core.result.try_next


def test_without_pipelining_commands_wait_for_replies_and_a_refused_mail_judges_all():
    core = ClientCore(message("bob@remote.test", "carol@remote.test"), "mx.example.test")
    core.connected()
    core.data_received(b"220 peer.test\r\n")
    assert sent(core.data_received(ehlo_reply("SIZE"))) == b"MAIL FROM:<alice@example.test> SIZE=%d\r\n" % len(CONTENT)
    actions = core.data_received(b"451 4.3.0 try later\r\n")
    assert sent(actions) == b"QUIT\r\n"
    assert {r.text() for r in core.result.replies.values()} == {"451 4.3.0 try later"}


def test_ehlo_refused_falls_back_to_helo():
    core = ClientCore(message(), "mx.example.test")
    core.connected()
    core.data_received(b"220 old.test\r\n")
    assert sent(core.data_received(b"502 what\r\n")) == b"HELO mx.example.test\r\n"
    assert sent(core.data_received(b"250 old.test\r\n")).startswith(b"MAIL FROM:<alice@example.test>\r\n")


def test_starttls_when_offered_then_ehlo_again():
    core = ClientCore(message(), "mx.example.test", starttls=True)
    core.connected()
    core.data_received(b"220 peer.test\r\n")
    assert sent(core.data_received(ehlo_reply("STARTTLS"))) == b"STARTTLS\r\n"
    actions = core.data_received(b"220 go ahead\r\n")
    assert isinstance(actions[0], StartTLS) and sent(actions) == b"EHLO mx.example.test\r\n"
    # RFC 3207 §4.2: STARTTLS again is never tried on the protected session.
    assert sent(core.data_received(ehlo_reply("STARTTLS"))).startswith(b"MAIL FROM:")


def test_a_dropped_tls_handshake_is_marked_for_a_clear_text_retry():
    core = ClientCore(message(), "mx.example.test", starttls=True)
    core.connected()
    core.data_received(b"220 peer.test\r\n")
    core.data_received(ehlo_reply("STARTTLS"))
    core.data_received(b"220 go ahead\r\n")
    core.connection_lost("handshake failure")
    assert core.result.tls_failed and core.result.try_next
    assert "TLS handshake failed" in core.result.replies["bob@remote.test"].text()


def test_message_larger_than_the_peers_size_bounces_without_sending():
    core = ClientCore(message(), "mx.example.test")
    core.connected()
    core.data_received(b"220 peer.test\r\n")
    actions = core.data_received(ehlo_reply("SIZE 10"))
    assert sent(actions) == b"QUIT\r\n"  # RFC 1870 §6.1
    reply = core.result.replies["bob@remote.test"]
    assert (reply.code, reply.enhanced, reply.remote) == (552, "5.3.4", False)


def test_body_and_dsn_parameters_when_the_peer_offers_them():
    rcpt = OutboundRecipient("bob@remote.test", notify=("FAILURE", "DELAY"), orcpt="rfc822;b+x@remote.test")
    core = ClientCore(message(rcpt, body="8BITMIME", ret="HDRS", envid="id 1"), "mx.example.test")
    core.connected()
    core.data_received(b"220 peer.test\r\n")
    mail = sent(core.data_received(ehlo_reply("8BITMIME", "DSN")))
    assert mail == b"MAIL FROM:<alice@example.test> BODY=8BITMIME RET=HDRS ENVID=id+201\r\n"
    rcpt_line = sent(core.data_received(b"250 ok\r\n"))
    assert rcpt_line == b"RCPT TO:<bob@remote.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b+2Bx@remote.test\r\n"


def test_greeting_554_tries_the_next_address():
    core = ClientCore(message(), "mx.example.test")
    core.connected()
    core.data_received(b"554 go away\r\n")
    assert core.result.try_next
    assert core.result.replies["bob@remote.test"].kind == "deferred"


@pytest.mark.parametrize("wire,reason", [
    (b"220 ok\r\nthis is not smtp\r\n", "protocol error"),
    (b"220 ok\r\n" + b"2" * 5000, "longer than"),
])
def test_garbage_and_endless_lines_defer(wire, reason):
    core = ClientCore(message(), "mx.example.test")
    core.connected()
    actions = core.data_received(wire)
    assert any(isinstance(a, Close) and a.abort for a in actions)
    assert reason in core.result.replies["bob@remote.test"].text()
    assert core.result.replies["bob@remote.test"].kind == "deferred"


def test_drop_mid_data_defers_the_accepted_and_keeps_the_refused():
    core = ClientCore(message("bob@remote.test", "nobody@remote.test"), "mx.example.test")
    core.connected()
    core.data_received(b"220 ok\r\n")
    core.data_received(ehlo_reply("PIPELINING"))
    core.data_received(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    core.connection_lost("reset by peer")
    replies = core.result.replies
    assert replies["bob@remote.test"].kind == "deferred" and "connection lost (content)" in replies["bob@remote.test"].text()
    assert replies["nobody@remote.test"].kind == "bounced"
    assert not core.result.try_next


# --- the adapter, with a Clock


def connect(core, clock):
    protocol = SMTPClientProtocol(core, tls_creator=None, clock=clock)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_a_peer_that_never_answers_times_out_after_the_greeting_timeout():
    clock = Clock()
    core = ClientCore(message(), "mx.example.test", timeouts=ClientTimeouts(greeting=300))
    protocol, transport = connect(core, clock)
    clock.advance(299)
    assert not core.done
    clock.advance(2)
    assert core.done and "timeout" in core.result.replies["bob@remote.test"].text()
    assert core.result.replies["bob@remote.test"].enhanced == "4.4.2"
    assert transport.disconnecting


def test_slow_peer_each_state_has_its_own_timeout():
    clock = Clock()
    core = ClientCore(message(), "mx.example.test", timeouts=ClientTimeouts(command=50, data_init=20))
    protocol, transport = connect(core, clock)
    protocol.dataReceived(b"220 ok\r\n")
    clock.advance(49)
    protocol.dataReceived(ehlo_reply())
    clock.advance(49)
    protocol.dataReceived(b"250 ok\r\n")  # MAIL
    clock.advance(49)
    protocol.dataReceived(b"250 ok\r\n")  # RCPT, then DATA waits data_init
    assert not core.done
    clock.advance(21)
    assert core.done and "timeout" in core.result.replies["bob@remote.test"].text()


def test_content_is_pulled_by_the_transport_and_a_stalled_peer_times_out():
    clock = Clock()
    big = OutboundMessage("alice@example.test", (OutboundRecipient("bob@remote.test"),),
                          content=b"x" * 70 + b"\r\n" + b"y" * 200000 + b"\r\n")
    core = ClientCore(big, "mx.example.test", timeouts=ClientTimeouts(data_block=180))
    protocol, transport = connect(core, clock)
    for reply in (b"220 ok\r\n", ehlo_reply("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n"):
        protocol.dataReceived(reply)
    assert transport.producer is not None
    transport.producer.resumeProducing()  # the transport asks for one chunk...
    clock.advance(181)  # ...then the peer stops reading
    assert core.done and "timeout" in core.result.replies["bob@remote.test"].text()
    assert transport.producer is None


def test_final_reply_after_streamed_content():
    clock = Clock()
    core = ClientCore(message(), "mx.example.test")
    protocol, transport = connect(core, clock)
    for reply in (b"220 ok\r\n", ehlo_reply("PIPELINING"), b"250 ok\r\n250 ok\r\n354 go\r\n"):
        protocol.dataReceived(reply)
    while transport.producer is not None:
        transport.producer.resumeProducing()
    assert transport.value().endswith(b"..leading dot\r\nbody\r\n.\r\n")
    protocol.dataReceived(b"250 2.0.0 ok\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    assert protocol.finished.called
    assert core.result.replies["bob@remote.test"].kind == "delivered"


def test_connection_lost_before_greeting_tries_next():
    core = ClientCore(message(), "mx.example.test")
    protocol, _ = connect(core, Clock())
    protocol.connectionLost(Failure(ConnectionLost("gone")))
    assert core.result.try_next and core.result.replies["bob@remote.test"].kind == "deferred"
