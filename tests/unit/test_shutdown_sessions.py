"""Server shutdown as each protocol core sees it: goodbye now when idle, after the
running command when busy, at once when forced (the shutdown timeout passed)."""

from __future__ import annotations

import re

import pop3_fakes
import pytest
import pytest_twisted
from imap_real_store import USER, RealStoreClient, open_store
from test_smtp_session import FakeDelivery, make

SMTP_BYE = b"421 4.3.2 Service shutting down, try again later\r\n"
IMAP_BYE = b"* BYE Server shutting down\r\n"
POP3_BYE = b"-ERR [SYS/TEMP] server shutting down, try again later\r\n"
MESSAGE = b"Subject: hi\r\n\r\nHello\r\n"


# --- IMAP (RFC 9051 §7.1.5), on the real store


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def imap_selected(store) -> RealStoreClient:
    client = RealStoreClient(store)
    await client.login()
    await client.cmd(b"s SELECT INBOX")
    return client


def closed(client: RealStoreClient) -> bool:
    return "close" in client.out.events


@pytest_twisted.ensureDeferred
async def test_imap_idle_session_gets_bye_at_once(store):
    client = await imap_selected(store)
    client.session.shut_down()
    assert client.out.take() == IMAP_BYE
    assert closed(client)


@pytest_twisted.ensureDeferred
async def test_imap_running_command_completes_then_bye(store):
    client = await imap_selected(store)
    append = b"a APPEND INBOX {%d+}\r\n%s\r\nb NOOP\r\n" % (len(MESSAGE), MESSAGE)
    client.session.data_received(append)  # its commit needs reactor turns
    client.session.shut_down()
    assert client.out.take() == b"" and not closed(client)
    assert await client.wait_for(lambda data: data.endswith(IMAP_BYE))
    reply = client.out.take()
    assert re.search(rb"\r\na OK \[APPENDUID \d+ 1\] Append completed\r\n\* BYE [^\r]*\r\n\Z",
                     reply), reply
    assert b"b OK" not in reply  # the pipelined command after it never runs
    assert closed(client)
    assert len(store.list_messages(USER, store.get_mailbox(USER, "INBOX").mailbox_id)) == 1


@pytest_twisted.ensureDeferred
async def test_imap_idle_command_waits_for_the_client_so_bye_at_once(store):
    client = await imap_selected(store)
    client.session.data_received(b"i IDLE\r\n")
    assert client.out.take() == b"+ idling\r\n"
    client.session.shut_down()
    assert client.out.take() == IMAP_BYE
    assert closed(client)


@pytest_twisted.ensureDeferred
async def test_imap_forced_closes_a_running_command(store):
    client = await imap_selected(store)
    client.session.data_received(b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    client.session.shut_down(force=True)
    assert client.out.take() == IMAP_BYE
    assert closed(client)


# --- SMTP (RFC 5321 §3.8)


def smtp_greeted(delivery=None):
    client, delivery = make(delivery=delivery)
    client.send(b"EHLO client.example\r\n")
    client.take()
    return client, delivery


def test_smtp_between_commands_gets_421_at_once():
    client, _ = smtp_greeted()
    client.send(b"MAIL FROM:<a@remote.example>\r\n")
    client.take()
    client.perform(client.session.shut_down())
    assert client.take() == SMTP_BYE
    assert client.closed


def test_smtp_message_being_sent_is_still_accepted_then_421():
    client, delivery = smtp_greeted()
    client.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    assert client.take().split(b"\r\n")[-2].startswith(b"354 ")
    client.send(b"Subject: x\r\n\r\nfirst half\r\n")
    client.perform(client.session.shut_down())
    assert client.take() == b"" and not client.closed
    client.send(b"second half\r\n.\r\nQUIT\r\n")
    reply = client.take()
    assert reply.startswith(b"250 ") and reply.endswith(SMTP_BYE), reply
    assert b"221" not in reply
    assert len(delivery.delivered) == 1
    assert client.closed


def test_smtp_delivery_being_committed_answers_250_then_421():
    client, delivery = smtp_greeted(FakeDelivery(hold_delivery=True))
    client.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    client.take()
    client.perform(client.session.shut_down())
    assert client.take() == b"" and not client.closed
    delivery.release()
    reply = client.take()
    assert reply.startswith(b"250 ") and reply.endswith(SMTP_BYE), reply
    assert client.closed


def test_smtp_forced_cuts_off_a_message_being_sent():
    client, delivery = smtp_greeted()
    client.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n")
    client.send(b"Subject: x\r\n\r\nhalf\r\n")
    client.take()
    client.perform(client.session.shut_down(force=True))
    assert client.take() == SMTP_BYE
    assert client.closed and delivery.delivered == []


# --- POP3 (RFC 1939 §6: no UPDATE without QUIT)


def pop3_logged_in(**kwargs) -> pop3_fakes.Harness:
    h = pop3_fakes.Harness(**kwargs)
    h.store.add_message("alice@example.test", MESSAGE)
    assert h.login().count(b"+OK") == 2
    return h


def test_pop3_idle_session_gets_err_and_nothing_is_removed():
    h = pop3_logged_in()
    assert h.send(b"DELE 1\r\n").startswith(b"+OK")
    h.session.shut_down()
    assert h.sink.take() == POP3_BYE
    assert "close" in h.sink.events
    assert len(h.store.messages["alice@example.test"]) == 1
    assert not any(call[0] == "expunge" for call in h.store.calls)


def test_pop3_body_being_sent_is_sent_whole_then_err():
    h = pop3_logged_in()
    h.sink.hold_streams = True
    h.send(b"RETR 1\r\n")
    h.session.shut_down()
    assert "close" not in h.sink.events
    h.sink.finish_streams()
    output = h.sink.take()
    assert output == MESSAGE + b".\r\n" + POP3_BYE  # its +OK line went out before
    assert "close" in h.sink.events
