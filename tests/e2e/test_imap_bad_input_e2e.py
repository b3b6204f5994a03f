"""Bad input against the real daemon: every malformed command gets BAD (or NO
with an RFC 5530 code) and the connection goes on, or -- where the stream
cannot be trusted any more -- BYE and close; no input ends the process.

Raw sockets on 127.0.0.1, over TLS except where the test is about plaintext
(STARTTLS injection, idle connections).  The unit transcripts of the same
list are in tests/unit/test_imap_bad_input.py; a client that never reads is
tests/e2e/test_imap_backpressure_e2e.py.
"""

from __future__ import annotations

import imaplib
import re
import socket

import pytest

import readiness
from clients import RawImap
from conftest import make_daemon, raise_nofile, wait_for
from mailserverd.limits import Limits

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
LITERAL_MAX = 4096  # imap_literal_max of the daemon below
LINE_MAX = Limits().imap_line_max
DEEP = 10_000
APPEND_MAX = 64 * 1024  # message_size_max (its lowest bound)
IDLE_CONNECTIONS = 1000
MESSAGE = b"Subject: bad input\r\nFrom: bob@example.test\r\n\r\nhello\r\n"


@pytest.fixture
def daemon(tmp_path):
    """A daemon with small literal limits, and room for 1,000 idle connections
    from 127.0.0.1; alice has one message in INBOX."""
    raise_nofile(4 * IDLE_CONNECTIONS)  # this process's ends; the daemon inherits it
    d = make_daemon(tmp_path / "d", extra_config=(
        f"imap_literal_max = {LITERAL_MAX}\n"
        f"message_size_max = {APPEND_MAX}\n"
        f"connections_max = {IDLE_CONNECTIONS + 100}\n"
        f"connections_per_ip_max = {IDLE_CONNECTIONS + 100}\n"))
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    d.start()
    client = RawImap(d)
    client.login(ALICE)
    reply = client.command(b"A", b"APPEND INBOX {%d+}\r\n" % len(MESSAGE) + MESSAGE)
    assert reply[-1].startswith(b"A OK"), reply
    client.close()
    yield d
    if d.proc.poll() is None:
        d.stop()


def selected(daemon) -> RawImap:
    client = RawImap(daemon)
    client.login(ALICE)
    assert client.command(b"S", b"SELECT INBOX")[-1].startswith(b"S OK")
    return client


def answers(client: RawImap, line: bytes, tag: bytes = b"t") -> bytes:
    """Send ``tag line``; its tagged reply, after checking that nothing but
    untagged responses came before it."""
    responses = client.command(tag, line)
    assert all(response.startswith(b"* ") for response in responses[:-1]), responses
    return responses[-1]


def goes_on(client: RawImap) -> None:
    """The connection is still open and a command is answered normally."""
    assert client.command(b"n", b"NOOP")[-1] == b"n OK NOOP completed"


def closed_with_bye(client: RawImap) -> bytes:
    """Read to the end; the server said BYE and closed. Returns what it sent."""
    rest = client.read_to_end()
    assert re.search(rb"^\* BYE [^\r\n]*\r\n\Z", rest, re.M), rest
    return rest


def still_serves(daemon) -> None:
    """The daemon is running and a new client logs in, selects and fetches."""
    assert daemon.proc.poll() is None
    client = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                               timeout=30)
    try:
        client.login(ALICE, daemon.users[ALICE])
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: bad input" in data[0][1]
    finally:
        client.logout()


# ----------------------------------------------------------- malformed commands

MALFORMED = [
    b"FETCH 1 (FLAGS UID", b"FETCH 1 FLAGS)", b"SEARCH (ALL", b"SEARCH ALL)",
    b"STORE 1 +FLAGS (\\Seen", b'LIST (SUBSCRIBED "" *', b"STATUS INBOX (MESSAGES", b'ID ("a" "b"',
    b"APPEND INBOX (\\Seen {1+}\r\nx",
    b"FETCH 0 FLAGS", b"FETCH 4294967296 FLAGS", b"FETCH 1:0 FLAGS", b"FETCH 1,,2 FLAGS",
    b"FETCH -1 FLAGS", b"FETCH : FLAGS", b"FETCH  FLAGS", b"FETCH 2 FLAGS",
    b'CREATE "&Jjo"', b'CREATE "a\x00b"', b"CREATE {3+}\r\na\rb", b'SELECT "caf\xc3\xa9"',
    b"NO\x00OP", b"FETCH 1 (FL\x00AGS)",
    b"LOGIN alice@example.test secret", b"STARTTLS", b"ENABLE CONDSTORE", b"AUTHENTICATE PLAIN",
    b"UID FROB 1", b"FROB",
]


def test_malformed_commands_get_bad_and_the_connection_goes_on(daemon):
    client = selected(daemon)
    for number, line in enumerate(MALFORMED):
        tag = b"t%d" % number
        reply = answers(client, line, tag)
        assert reply.startswith(tag + b" BAD "), (line[:60], reply)
        if number % 5 == 4:  # imap_bad_commands_max (20) ends a session; so go on in a new one
            goes_on(client)
            client.close()
            client = selected(daemon)
    for line in (b"\x00", b"\x00a NOOP", b"(("):
        assert client.command(b"*", line) == [b"* BAD Missing or invalid tag"]
    # "*:*" is valid (RFC 3501 §9 seq-range): the last message.
    assert client.command(b"f", b"FETCH *:* (UID)") == [b"* 1 FETCH (UID 1)", b"f OK Fetch completed"]
    # "&-" is "&" (RFC 3501 §5.1.3), and the name comes back as it was sent.
    assert answers(client, b'CREATE "R&-D"', b"c").startswith(b"c OK")
    assert client.command(b"l", b'LIST "" R*')[0] == b'* LIST (\\HasNoChildren) "/" "R&-D"'
    goes_on(client)
    client.close()
    still_serves(daemon)


def test_deep_nesting_gets_bad_or_limit(daemon):
    client = selected(daemon)
    nest = b"(" * DEEP + b"%s" + b")" * DEEP
    for line in (b"FETCH 1 " + nest % b"FLAGS", b"STORE 1 +FLAGS " + nest % b"\\Seen",
                 b'LIST "" ' + nest % b"*", b"STATUS INBOX " + nest % b"MESSAGES",
                 b"ID " + nest % b""):
        assert answers(client, line).startswith(b"t BAD "), line[:40]
    # A search program is valid however deep: over our bound it is NO [LIMIT] (RFC 5530 §3).
    for line in (b"SEARCH " + nest % b"ALL", b"SEARCH " + b"NOT " * DEEP + b"ALL",
                 b"UID SEARCH " + b"(NOT " * DEEP + b"ALL" + b")" * DEEP,
                 b"SORT (DATE) UTF-8 " + b"NOT " * DEEP + b"ALL"):
        assert answers(client, line).startswith(b"t NO [LIMIT] "), line[:40]
    goes_on(client)
    client.close()


# ----------------------------------------------------------- literals

def test_literal_counts_and_literals_over_the_limit(daemon):
    client = selected(daemon)
    # Synchronizing: refused before the client sends a byte; nothing to resynchronise.
    for count in (b"%d" % (LITERAL_MAX + 1), b"4294967296", b"99999999999999999999"):
        client.send(b"t CREATE {%s}\r\n" % count)
        assert client.read_response() == b"t BAD [TOOBIG] Literal too big"
        goes_on(client)
    # RFC 7889 §4: a message over APPENDLIMIT is NO [TOOBIG].
    client.send(b"a APPEND INBOX {%d}\r\n" % (APPEND_MAX + 1))
    assert client.read_response() == b"a NO [TOOBIG] Message too big"
    # LITERAL+ over the limit: BAD, and its bytes -- commands, as they look --
    # are read and dropped, never run (RFC 7888 §4).
    payload = (b"x LOGOUT\r\n" * (LITERAL_MAX // 10 + 2))[:LITERAL_MAX + 1]
    client.send(b"u CREATE {%d+}\r\n" % len(payload) + payload + b"\r\nv NOOP\r\n")
    assert client.read_response() == b"u BAD [TOOBIG] Literal too big"
    assert client.read_response() == b"v OK NOOP completed"
    # Garbage counts are no literal: the line is the command.
    for marker in (b"{-1}", b"{abc}", b"{}", b"{1 }"):
        assert answers(client, b"CREATE " + marker).startswith(b"t BAD ")
    goes_on(client)
    client.close()


def test_literal_the_server_cannot_resynchronise_after_closes(daemon):
    # A synchronizing literal over the limit sent without waiting for "+".
    client = selected(daemon)
    client.send(b"t CREATE {%d}\r\n" % (LITERAL_MAX + 1) + b"x LOGOUT\r\n" * 500)
    assert client.read_response() == b"t BAD [TOOBIG] Literal too big"
    closed_with_bye(client)
    # A non-synchronizing literal longer than any (RFC 9051 §9 number64):
    # RFC 7888 §4 choice 2, BYE.
    client = selected(daemon)
    client.send(b"t CREATE {99999999999999999999+}\r\nx LOGOUT\r\n")
    assert client.read_response() == b"t BAD [TOOBIG] Literal too big"
    assert b"x OK" not in closed_with_bye(client)
    still_serves(daemon)


def test_line_without_crlf_longer_than_the_limit_closes(daemon):
    client = selected(daemon)
    client.send(b"t NOOP " + b"x" * (LINE_MAX + 100))
    rest = closed_with_bye(client)
    assert rest.startswith(b"* BAD [TOOBIG] Command line too long\r\n"), rest
    still_serves(daemon)


# ----------------------------------------------------------- STARTTLS injection

def test_commands_pipelined_after_starttls_are_discarded(daemon):
    """RFC 3501 §6.2.1 / CVE-2011-0411: what came in clear behind STARTTLS,
    in the same packet, is never run in the TLS session."""
    client = RawImap(daemon, plain=True)
    password = daemon.users[ALICE].encode()
    client.send(b'a STARTTLS\r\nb LOGIN alice@example.test "%s"\r\nc SELECT INBOX\r\n' % password)
    assert client.until_tagged(b"a") == [b"a OK Begin TLS negotiation now"]
    client.start_tls()
    responses = client.command(b"d", b"CAPABILITY")
    assert responses[-1].startswith(b"d OK")
    assert not any(response.startswith((b"b ", b"c ")) for response in responses), responses
    capabilities = responses[0].split()
    assert b"AUTH=PLAIN" in capabilities and b"STARTTLS" not in capabilities
    # Not logged in: the injected LOGIN never ran.
    assert client.command(b"e", b"SELECT INBOX") == [b"e BAD Log in first"]
    client.login(ALICE)
    goes_on(client)
    client.close()


# ----------------------------------------------------------- 1,000 idle connections

def _greeted(sockets: list[socket.socket], pending: set[int], seen: dict[int, bytes]) -> bool:
    """Read what has arrived; True once every socket has its whole greeting line."""
    readable = readiness.readable([sockets[i] for i in pending], 0.5)
    for sock in readable:
        index = sockets.index(sock)
        seen[index] = seen.get(index, b"") + sock.recv(4096)
        assert seen[index], f"connection {index} closed before its greeting"
        if seen[index].endswith(b"\r\n"):
            pending.discard(index)
    return not pending


@pytest.mark.slow
def test_a_thousand_idle_connections_do_not_stop_a_client(daemon):
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", daemon.ports["imap"]), timeout=30))
        seen: dict[int, bytes] = {}
        pending = set(range(len(idle)))
        wait_for(lambda: _greeted(idle, pending, seen), timeout=120, interval=0,
                 what="the greeting on every idle connection")
        assert all(greeting.startswith(b"* OK ") for greeting in seen.values())
        still_serves(daemon)  # TLS, LOGIN, SELECT, FETCH while the 1,000 wait
        # The idle ones are all still open: nothing to read, no end of file.
        readable = readiness.readable(idle, 0)
        assert readable == [], f"{len(readable)} idle connections were closed or written to"
    finally:
        for sock in idle:
            sock.close()
    # The daemon notices they are gone, and goes on.
    wait_for(lambda: _open_imap_connections(daemon) == 0, timeout=60,
             what="the daemon to drop the closed connections")
    still_serves(daemon)


def _open_imap_connections(daemon) -> int:
    """The daemon's ends of connections to its plain IMAP port that it has not
    closed: ESTABLISHED, or CLOSE_WAIT (the client closed, the daemon not yet)."""
    port = "%04X" % daemon.ports["imap"]
    count = 0
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if fields[1].endswith(":" + port) and fields[3] in ("01", "08"):
                count += 1
    return count
