"""IMAP mailbox commands end to end: Python's imaplib against the real daemon over TLS.

CREATE (with RFC 6154 USE), DELETE, RENAME (INBOX too), SUBSCRIBE, UNSUBSCRIBE,
LIST (basic, RFC 5258 extended, RFC 5819 STATUS), LSUB, NAMESPACE and STATUS.
"""

from __future__ import annotations

import imaplib

import pytest

from clients import make_message, smtp_send

pytestmark = pytest.mark.e2e

USER = "alice@example.test"


def login(daemon, user: str = USER) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    client.login(user, daemon.users[user])
    return client


def command(client: imaplib.IMAP4, name: str, *args: str) -> tuple[str, list]:
    """Run a command imaplib has no method for; returns (status, untagged data of ``name``)."""
    typ, data = client._simple_command(name, *args)
    return typ, client._untagged_response(typ, data, name)[1]


def lines(data: list) -> list[bytes]:
    return [item for item in data if item is not None]


def test_create_list_rename_delete(daemon):
    client = login(daemon)
    try:
        assert client.create("Projects/2024/Q1")[0] == "OK"
        typ, data = client.list('""', "*")
        assert typ == "OK"
        assert b'(\\HasChildren) "/" "Projects"' in data
        assert b'(\\HasChildren) "/" "Projects/2024"' in data
        assert b'(\\HasNoChildren) "/" "Projects/2024/Q1"' in data
        assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in data
        assert client.list('""', '""')[1] == [b'(\\Noselect) "/" ""']

        assert client.rename("Projects", "Archive/Projects")[0] == "OK"
        typ, data = client.list('"Archive/"', "*")
        assert b'(\\HasNoChildren) "/" "Archive/Projects/2024/Q1"' in data
        assert client.list('""', "Projects*")[1] == [None]

        typ, data = client.create("Archive")
        assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
        typ, data = client.delete("INBOX")
        assert typ == "NO"
        typ, data = client.delete("Nope")
        assert typ == "NO" and b"[NONEXISTENT]" in data[0]

        # Deleting a parent keeps its children; LIST % shows the hole (RFC 9051 §6.3.5).
        assert client.delete("Archive/Projects")[0] == "OK"
        assert client.list('"Archive/"', "%")[1] == [b'(\\Noselect \\HasChildren) "/" "Archive/Projects"']
        typ, data = client.select("Archive/Projects")
        assert typ == "NO"
    finally:
        client.logout()


def test_rename_inbox_moves_its_messages(daemon):
    smtp_send(daemon, make_message("one"))
    smtp_send(daemon, make_message("two"))
    client = login(daemon)
    try:
        # imaplib sends arguments as given: the space needs the quotes.
        assert client.rename("INBOX", '"Old mail"')[0] == "OK"
        typ, data = client.status('"Old mail"', "(MESSAGES UNSEEN)")
        assert data == [b'"Old mail" (MESSAGES 2 UNSEEN 2)']
        assert client.select("INBOX") == ("OK", [b"0"])
    finally:
        client.logout()


def test_status_items(daemon):
    message = make_message("status")
    smtp_send(daemon, message)
    client = login(daemon)
    try:
        typ, data = client.status("INBOX", "(MESSAGES RECENT UIDNEXT UNSEEN DELETED SIZE APPENDLIMIT)")
        assert typ == "OK"
        assert data[0].startswith(b'"INBOX" (MESSAGES 1 RECENT 1 UIDNEXT 2 UNSEEN 1 DELETED 0 SIZE ')
        size = int(data[0].split(b"SIZE ")[1].split()[0])
        assert size > len(message)  # the stored copy has trace headers added
        typ, data = client.status("INBOX", "(UIDVALIDITY HIGHESTMODSEQ)")
        assert typ == "OK" and b"UIDVALIDITY " in data[0] and b"HIGHESTMODSEQ " in data[0]
        with pytest.raises(imaplib.IMAP4.error):
            client.status("INBOX", "(NOPE)")
        typ, data = client.status("Nope", "(MESSAGES)")
        assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    finally:
        client.logout()


def test_subscriptions_lsub_and_list_extended(daemon):
    client = login(daemon)
    try:
        client.create("Lists/imap")
        client.create("Lists/smtp")
        assert client.subscribe("Lists/imap")[0] == "OK"
        typ, data = client.lsub('""', "Lists/*")
        assert data == [b'() "/" "Lists/imap"']
        typ, data = client.lsub('""', "%")
        assert b'(\\Noselect) "/" "Lists"' in data and b'() "/" "INBOX"' in data

        typ, data = command(client, "LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
        assert typ == "OK"
        assert b'(\\HasChildren) "/" "Lists" ("CHILDINFO" ("SUBSCRIBED"))' in lines(data)
        typ, data = command(client, "LIST", "(SUBSCRIBED)", '""', "Lists/*")
        assert lines(data) == [b'(\\HasNoChildren \\Subscribed) "/" "Lists/imap"']
        typ, data = command(client, "LIST", '""', "Lists/*", "RETURN", "(SUBSCRIBED CHILDREN)")
        assert lines(data) == [b'(\\HasNoChildren \\Subscribed) "/" "Lists/imap"',
                               b'(\\HasNoChildren) "/" "Lists/smtp"']
        assert client.unsubscribe("Lists/imap")[0] == "OK"
        assert client.lsub('""', "Lists/*")[1] == [None]

        typ, data = command(client, "LIST", "(SPECIAL-USE)", '""', "*", "RETURN", "(SPECIAL-USE)")
        assert sorted(lines(data)) == sorted([
            b'(\\HasNoChildren \\Archive) "/" "Archive"', b'(\\HasNoChildren \\Drafts) "/" "Drafts"',
            b'(\\HasNoChildren \\Junk) "/" "Junk"', b'(\\HasNoChildren \\Sent) "/" "Sent"',
            b'(\\HasNoChildren \\Trash) "/" "Trash"'])
        with pytest.raises(imaplib.IMAP4.error):
            command(client, "LIST", "(RECURSIVEMATCH)", '""', "*")
        with pytest.raises(imaplib.IMAP4.error):
            command(client, "LIST", "(BOGUS)", '""', "*")
    finally:
        client.logout()


def test_list_status_and_create_special_use(daemon):
    smtp_send(daemon, make_message("list-status"))
    client = login(daemon)
    try:
        typ, data = command(client, "CREATE", "Spam", "(USE (\\Junk))")
        assert typ == "OK"
        typ, data = client._simple_command("CREATE", "Other", "(USE (\\Nonsense))")
        assert typ == "NO" and b"[USEATTR]" in data[0]
        client.select("INBOX")  # LIST-STATUS works in the selected state too
        typ, data = client._simple_command("LIST", '""', "(INBOX Spam)", "RETURN", "(STATUS (MESSAGES UNSEEN))")
        assert typ == "OK"
        assert client._untagged_response(typ, data, "LIST")[1] == [
            b'(\\HasNoChildren) "/" "INBOX"', b'(\\HasNoChildren \\Junk) "/" "Spam"']
        assert client._untagged_response(typ, data, "STATUS")[1] == [
            b'"INBOX" (MESSAGES 1 UNSEEN 1)', b'"Spam" (MESSAGES 0 UNSEEN 0)']
    finally:
        client.logout()


def test_namespace_and_non_ascii_names(daemon):
    client = login(daemon)
    try:
        typ, data = client.namespace()
        assert (typ, data) == ("OK", [b'(("" "/")) NIL NIL'])
        assert client.create("Entw&APw-rfe")[0] == "OK"  # "Entwürfe", modified UTF-7
        assert client.list('""', "Entw*")[1] == [b'(\\HasNoChildren) "/" "Entw&APw-rfe"']
        with pytest.raises(imaplib.IMAP4.error):
            client.create("Bad&name")  # '&' must be written '&-'
        # Mailboxes are per user: bob sees none of alice's.
        other = login(daemon, "bob@example.test")
        try:
            assert other.list('""', "Entw*")[1] == [None]
            typ, data = other.status("Entw&APw-rfe", "(MESSAGES)")
            assert typ == "NO" and b"[NONEXISTENT]" in data[0]
        finally:
            other.logout()
    finally:
        client.logout()
