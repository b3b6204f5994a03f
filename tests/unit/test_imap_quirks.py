"""Client quirks the server accommodates, as Dovecot does (transcripts on the real store).

- Thunderbird's extra trailing separator on mailbox names (Dovecot's
  ``tb-extra-mailbox-sep``);
- XLIST, Gmail's precursor of SPECIAL-USE, still sent by old Outlook and Apple Mail;
- ``* OK Still here`` while idling, so NAT and firewalls keep the connection.
"""

from __future__ import annotations

import pytest

from imap_real_store import RealStoreClient, open_store


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def test_trailing_separator_names_the_mailbox(store):
    """C: s SELECT "Sent/"  S: s OK [READ-WRITE]; STATUS, APPEND and COPY likewise."""
    client = RealStoreClient(store)
    await client.login()
    assert b"a OK" in await client.cmd(b'a CREATE "Work/"')
    reply = await client.cmd(b'b STATUS "Work/" (MESSAGES)')
    assert b'* STATUS "Work" (MESSAGES 0)\r\n' in reply and b"b OK" in reply
    reply = await client.cmd(b'c APPEND "Work/" {10+}\r\nSubject: x')
    assert b"c OK [APPENDUID" in reply
    reply = await client.cmd(b'd SELECT "Work/"')
    assert b"* 1 EXISTS\r\n" in reply and b"d OK [READ-WRITE]" in reply
    reply = await client.cmd(b'e COPY 1 "Work/"')
    assert b"e OK [COPYUID" in reply


async def test_a_lone_separator_is_not_emptied(store):
    """The name "/" stays "/" (and is no mailbox): NO, not a crash or BAD."""
    client = RealStoreClient(store)
    await client.login()
    reply = await client.cmd(b'a SELECT "/"')
    assert reply.startswith(b"a NO"), reply


async def test_list_reference_keeps_its_separator(store):
    """LIST "Work/" "%" lists Work's children (the reference is not a mailbox name)."""
    client = RealStoreClient(store)
    await client.login()
    assert b"a OK" in await client.cmd(b'a CREATE "Work/Done"')
    reply = await client.cmd(b'b LIST "Work/" "%"')
    assert reply == b'* LIST (\\HasNoChildren) "/" "Work/Done"\r\nb OK LIST completed\r\n', reply


async def test_xlist_answers_with_gmail_attributes(store):
    """C: x XLIST "" "*"  S: * XLIST (\\HasNoChildren \\Inbox) "/" "INBOX" ...

    The RFC 6154 attributes appear under the names Gmail's XLIST gave them
    (\\Junk as \\Spam); XLIST is not advertised (RFC 6154 §1 deprecates it).
    """
    client = RealStoreClient(store)
    await client.login()
    lines = await client.c(b'x XLIST "" "*"')
    assert lines[-1] == b"x OK XLIST completed"
    assert b'* XLIST (\\HasNoChildren \\Inbox) "/" "INBOX"' in lines
    junk = [line for line in lines if line.endswith(b'"Junk"')]
    assert junk == [b'* XLIST (\\HasNoChildren \\Spam) "/" "Junk"'], lines
    sent = [line for line in lines if line.endswith(b'"Sent"')]
    assert sent == [b'* XLIST (\\HasNoChildren \\Sent) "/" "Sent"'], lines
    caps = await client.cmd(b"c CAPABILITY")
    assert b"XLIST" not in caps


async def test_xlist_needs_authentication(store):
    client = RealStoreClient(store)
    reply = await client.cmd(b'x XLIST "" "*"')
    assert reply.startswith(b"x BAD") or reply.startswith(b"x NO"), reply


async def test_idle_says_still_here_every_notify_interval(store):
    """S: + idling ... (120 s) S: * OK Still here ... C: DONE  S: i OK; then no more."""
    client = RealStoreClient(store)
    await client.login()
    await client.cmd(b"s SELECT INBOX")
    clock = client.session.ctx.clock
    client.session.data_received(b"i IDLE\r\n")
    assert client.out.take() == b"+ idling\r\n"
    interval = client.session.limits.imap_idle_notify_interval
    clock.advance(interval - 1)
    assert b"Still here" not in client.out.take()
    clock.advance(1)
    assert client.out.take() == b"* OK Still here\r\n"
    clock.advance(interval)
    assert client.out.take() == b"* OK Still here\r\n"
    reply = await client.cmd(b"DONE", tag=b"i")
    assert reply == b"i OK IDLE terminated\r\n"
    clock.advance(interval * 3)
    assert client.out.take() == b""
