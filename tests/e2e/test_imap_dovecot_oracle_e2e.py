"""Over the wire, the daemon's FETCH answers equal Dovecot's for the 68 shared messages.

The messages are APPENDed over TLS (byte-exact: SMTP would add trace
headers), with the INTERNALDATE the reference server was given, into one
mailbox of a real daemon; then each reference item (RFC822.SIZE, ENVELOPE,
BODY, BODYSTRUCTURE and ``BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]``) is
fetched for all of them on a raw TLS socket and compared with the answer in
``../shared/testdata/mime-dovecot-fetch.json``, byte for byte with only the
string forms normalised (quoted or literal is the server's choice, RFC 9051
§4.3) and the differences tests/dovecot_oracle.py records, with the RFC
section that decides each, applied.
"""

from __future__ import annotations

import re

import pytest

from clients import RawImap
from conftest import make_daemon
from dovecot_oracle import (
    EXPECTED_DIFFERENCES,
    INTERNALDATE,
    ITEMS,
    MESSAGE_NAMES,
    ORACLE,
    expected_bytes,
    message_bytes,
    reference_bytes,
    require_oracle,
    response_name,
    tokens,
    with_our_strings,
)

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


def _fetch_item(client: RawImap, item: str, count: int) -> dict[int, bytes]:
    """``FETCH 1:count (item)``: sequence number -> the item's value bytes."""
    tag = b"F"
    responses = client.command(tag, b"FETCH 1:%d (%s)" % (count, item.encode()))
    assert responses[-1].startswith(b"F OK"), responses[-1]
    label = response_name(item)
    head = re.compile(rb"\* (\d+) FETCH \(" + re.escape(label) + rb" ")
    values: dict[int, bytes] = {}
    for response in responses[:-1]:
        match = head.match(response)
        assert match and response.endswith(b")"), response[:200]
        values[int(match.group(1))] = response[match.end():-1]
    assert sorted(values) == list(range(1, count + 1))
    return values


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[tuple[str, str], bytes]:
    """(message, item) -> what the daemon answered; the daemon is stopped (cleanly) after."""
    require_oracle()
    daemon = make_daemon(tmp_path_factory.mktemp("oracle") / "d")
    daemon.cli("domain", "add", "example.test")
    daemon.add_user(ALICE, "alice-secret-1")
    daemon.start()
    client = RawImap(daemon)
    client.login(ALICE)
    # RFC 6855 §4: messages with 8-bit header fields are appended by a client
    # that has said it takes UTF-8 (Dovecot takes them from anyone).
    assert client.command(b"E", b"ENABLE UTF8=ACCEPT")[-1].startswith(b"E OK")
    names = sorted(ORACLE)
    for number, name in enumerate(names, start=1):
        raw = message_bytes(name)
        tag = b"A%d" % number
        reply = client.command(tag, b'APPEND INBOX () "%s" {%d+}\r\n' % (INTERNALDATE.encode(), len(raw))
                               + raw)
        assert reply[-1].startswith(tag + b" OK"), (name, reply)
    selected = client.command(b"S", b"EXAMINE INBOX")
    assert b"* %d EXISTS" % len(names) in selected, selected
    found = {}
    for item in ITEMS:
        values = _fetch_item(client, item, len(names))
        for number, name in enumerate(names, start=1):
            found[(name, item)] = values[number]
    assert client.command(b"Z", b"LOGOUT")[-1].startswith(b"Z OK")
    client.close()
    daemon.stop()
    return found


def test_all_reference_messages_are_compared(answers):
    assert len(ORACLE) == 68
    assert len(answers) == 68 * len(ITEMS)


@pytest.mark.parametrize("item", ITEMS)
@pytest.mark.parametrize("name", MESSAGE_NAMES)
def test_fetch_over_the_wire_equals_the_reference_server(answers, name, item):
    ours = with_our_strings(tokens(answers[(name, item)]))
    assert ours == expected_bytes(name, item)
    if (name, item) in EXPECTED_DIFFERENCES:
        # The recorded difference is real: Dovecot's bytes are not ours.
        assert ours != reference_bytes(name, item)
