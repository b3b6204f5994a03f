"""POP3 end to end: the real daemon, real TLS (STLS on the plain port and 995), poplib.

What a POP3 user sees: the exact stored bytes through RETR whatever the
dot lines and wherever they fall, DELE that takes effect only at QUIT (and
then durably), a maildrop fixed at login, UIDLs that never change, TOP, and
no password accepted before TLS.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import socket

import pytest

import clients
from clients import imap_fetch_all, make_message, smtp_send, stored_tail
from conftest import make_daemon, wait_for

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"

#: Offsets in the *stored* message (Received: included) where a line starting
#: with "." begins: TLS record (16 KiB) and the server's 64 KiB encoding chunk
#: boundaries and multiples below them; 131073 puts the CR of the line end before
#: it at the end of one 64 KiB chunk and its LF at the start of the next; 196607
#: puts the "." as the very last octet of a chunk.
DOT_LINE_OFFSETS = (4096, 8192, 16384, 65536, 131073, 196607)


def pop_login(daemon, user: str = ALICE, implicit: bool = False) -> poplib.POP3:
    """A poplib client in TRANSACTION state (alice by default)."""
    return clients.pop_login(daemon, user, implicit)


def retr_bytes(client: poplib.POP3, number: int) -> bytes:
    """RETR ``number`` as the message bytes (poplib has removed the dot-stuffing)."""
    _resp, lines, _octets = client.retr(number)
    return b"\r\n".join(lines) + b"\r\n"


def uidl_map(client: poplib.POP3) -> dict[int, bytes]:
    """{message number: unique-id} from UIDL."""
    _resp, lines, _octets = client.uidl()
    pairs = (line.split(b" ", 1) for line in lines)
    return {int(number): uid for number, uid in pairs}


def message_id(raw: bytes) -> bytes:
    return re.search(rb"(?im)^Message-ID: (<[^>]+>)\r$", raw).group(1)


def wait_imap_count(daemon, count: int, user: str = ALICE) -> list[bytes]:
    """Poll IMAP until ``user``'s INBOX holds ``count`` messages; return them."""
    holder = []

    def reached():
        holder[:] = imap_fetch_all(daemon, user)
        return len(holder) == count

    wait_for(reached, timeout=60, interval=0.2, what=f"{count} messages in {user}'s INBOX")
    return holder


def received_header_length(daemon, user: str) -> int:
    """The length of the Received: field the server prepends to a message sent to ``user``.

    Delivers and removes (over POP3) one probe message. The field's length
    depends only on the HELO, the client address, the recipient and fixed-width
    fields (queue id, RFC 5322 date), which are the same for the next message.
    """
    probe = make_message("probe", body_lines=1)
    smtp_send(daemon, probe, rcpt=user)
    [stored] = wait_imap_count(daemon, 1, user)
    stored_tail(stored, probe)
    client = pop_login(daemon, user)
    client.dele(1)
    client.quit()
    return len(stored) - len(probe)


def dot_heavy_message(header_length: int) -> bytes:
    """A ~200 KiB message whose stored form has "."-leading lines at DOT_LINE_OFFSETS.

    ``header_length`` is the length of the Received: field the server will
    prepend. Besides the placed lines, every seventh filler line starts with
    ".", some with "..", one is exactly ".", and the last line is ".".
    """
    head = make_message("dot lines", body_lines=0).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    out = bytearray(head)
    placed = [b".", b"..two dots at a boundary", b".x", b". space after dot", b"...", b"."]
    number = 0
    for target, line in zip(DOT_LINE_OFFSETS, placed):
        goal = target - header_length
        while goal - len(out) >= 200:
            number += 1
            prefix = b"." if number % 7 == 0 else (b".." if number % 11 == 0 else b"")
            out += prefix + b"filler line %d of a message full of dots" % number + b"\r\n"
        gap = goal - len(out)
        assert gap >= 2, gap
        out += b"g" * (gap - 2) + b"\r\n"  # a line that ends exactly where the dot line begins
        assert len(out) == goal
        out += line + b"\r\n"
    out += b"after the last placed line\r\n.\r\n"
    return bytes(out)


def line_starts_with_dot_at(stored: bytes, offset: int) -> bool:
    return stored[offset:offset + 1] == b"." and stored[offset - 1:offset] == b"\n"


def read_multiline(sock_file) -> bytes:
    """The raw wire form of a multi-line response body, terminator included."""
    chunks = []
    while True:
        line = sock_file.readline()
        assert line, "connection closed inside a multi-line response"
        chunks.append(line)
        if line == b".\r\n":
            return b"".join(chunks)


@pytest.mark.parametrize("implicit", [False, True], ids=["stls", "pop3s"])
def test_dot_lines_at_chunk_boundaries_come_back_byte_identical(daemon, implicit):
    header_length = received_header_length(daemon, ALICE)
    sent = dot_heavy_message(header_length)
    smtp_send(daemon, sent)
    [stored] = wait_imap_count(daemon, 1)
    stored_tail(stored, sent)
    assert len(stored) - len(sent) == header_length, "Received: length changed; placement is off"
    for offset in DOT_LINE_OFFSETS:
        assert line_starts_with_dot_at(stored, offset), offset
    assert b"\r\n.\r\n" in stored and stored.endswith(b"\r\n.\r\n")

    client = pop_login(daemon, implicit=implicit)
    try:
        count, octets = client.stat()
        assert (count, octets) == (1, len(stored))
        assert client.list(1).split() == [b"+OK", b"1", str(len(stored)).encode()]
        assert retr_bytes(client, 1) == stored
    finally:
        client.quit()


def test_retr_wire_form_is_the_stored_message_dot_stuffed(daemon):
    """Read RETR off the socket ourselves (poplib forgives some encodings, this does not)."""
    header_length = received_header_length(daemon, ALICE)
    sent = dot_heavy_message(header_length)
    smtp_send(daemon, sent)
    [stored] = wait_imap_count(daemon, 1)
    expected = re.sub(rb"(?m)^\.", b"..", stored) + b".\r\n"  # RFC 1939 §3

    raw = socket.create_connection(("127.0.0.1", daemon.ports["pop3s"]), timeout=60)
    with daemon.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"+OK")
        sock.sendall(b"USER %s\r\nPASS %s\r\n" % (ALICE.encode(), daemon.users[ALICE].encode()))
        assert f.readline().startswith(b"+OK")
        assert f.readline().startswith(b"+OK")
        sock.sendall(b"RETR 1\r\n")
        assert f.readline().startswith(b"+OK")
        assert read_multiline(f) == expected
        sock.sendall(b"NOOP\r\n")  # nothing of the body is left over as a bogus reply
        assert f.readline() == b"+OK\r\n"
        sock.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"+OK")


def test_dele_and_quit_expunge_durably(daemon):
    sent = [make_message(f"dele {i}") for i in range(3)]
    for message in sent:
        smtp_send(daemon, message)
    wait_imap_count(daemon, 3)

    client = pop_login(daemon)
    before = uidl_map(client)
    doomed_id = message_id(retr_bytes(client, 2))
    assert client.dele(2).startswith(b"+OK")
    assert client.stat()[0] == 2  # marked messages are not counted
    with pytest.raises(poplib.error_proto):
        client.retr(2)
    assert client.quit().startswith(b"+OK")

    client = pop_login(daemon, implicit=True)
    try:
        assert client.stat()[0] == 2
        assert sorted(uidl_map(client).values()) == sorted([before[1], before[3]])
    finally:
        client.quit()
    remaining = imap_fetch_all(daemon, ALICE)
    assert [message_id(m) for m in remaining] == [message_id(sent[0]), message_id(sent[2])]
    assert doomed_id == message_id(sent[1])

    daemon.stop()
    daemon.start()
    remaining = imap_fetch_all(daemon, ALICE)
    assert [message_id(m) for m in remaining] == [message_id(sent[0]), message_id(sent[2])]


def test_dele_then_dropped_connection_expunges_nothing(daemon):
    for i in range(3):
        smtp_send(daemon, make_message(f"kept {i}"))
    stored = wait_imap_count(daemon, 3)

    client = pop_login(daemon)
    client.dele(1)
    client.dele(3)
    client.sock.close()  # no QUIT: RFC 1939 §6, the session never enters UPDATE
    client.file.close()

    # The daemon's exit proves it has processed the dropped connection.
    daemon.stop()
    daemon.start()
    client = pop_login(daemon)
    try:
        assert client.stat()[0] == 3
        assert [retr_bytes(client, n) for n in (1, 2, 3)] == stored
    finally:
        client.quit()
    assert imap_fetch_all(daemon, ALICE) == stored


def test_mail_arriving_during_a_session_waits_for_the_next_session(daemon):
    first = make_message("already there")
    smtp_send(daemon, first)
    wait_imap_count(daemon, 1)

    client = pop_login(daemon)
    try:
        count, octets = client.stat()
        assert count == 1
        later = make_message("arrives during the session")
        smtp_send(daemon, later)
        wait_imap_count(daemon, 2)  # stored and visible to IMAP now
        assert client.stat() == (count, octets)
        assert len(client.list()[1]) == 1
        assert len(client.uidl()[1]) == 1
        with pytest.raises(poplib.error_proto):
            client.retr(2)
        with pytest.raises(poplib.error_proto):
            client.top(2, 0)
        stored_tail(retr_bytes(client, 1), first)
    finally:
        client.quit()

    client = pop_login(daemon)
    try:
        assert client.stat()[0] == 2
        stored_tail(retr_bytes(client, 2), later)
    finally:
        client.quit()


def uidls_by_message_id(daemon, implicit: bool = False) -> dict[bytes, bytes]:
    """{Message-ID: unique-id} over one whole session."""
    client = pop_login(daemon, implicit=implicit)
    try:
        uids = uidl_map(client)
        single = {n: client.uidl(n).split()[2] for n in uids}
        assert single == uids  # "UIDL n" agrees with the listing
        return {message_id(retr_bytes(client, n)): uid for n, uid in uids.items()}
    finally:
        client.quit()


def test_uidls_are_unique_and_stable_across_sessions_and_restarts(daemon):
    for i in range(5):
        smtp_send(daemon, make_message(f"uidl {i}"))
    wait_imap_count(daemon, 5)

    first = uidls_by_message_id(daemon)
    assert len(first) == 5 and len(set(first.values())) == 5
    for uid in first.values():
        assert 1 <= len(uid) <= 70 and all(0x21 <= b <= 0x7E for b in uid)  # RFC 1939 §7
    assert uidls_by_message_id(daemon, implicit=True) == first

    daemon.stop()
    daemon.start()
    assert uidls_by_message_id(daemon) == first

    # Deleting one leaves the others' ids alone; a new message gets a fresh id.
    client = pop_login(daemon)
    client.dele(5)
    client.quit()
    smtp_send(daemon, make_message("uidl new"))
    wait_imap_count(daemon, 5)
    after = uidls_by_message_id(daemon)
    survivors = {mid: uid for mid, uid in after.items() if mid in first}
    assert len(survivors) == 4 and all(first[mid] == uid for mid, uid in survivors.items())
    [new_uid] = [uid for mid, uid in after.items() if mid not in first]
    assert new_uid not in first.values()


def test_top_returns_header_and_n_body_lines(daemon):
    body = [b".dot first", b"second", b"", b"..fourth", b"fifth", b"sixth", b"seventh"]
    sent = b"Subject: top\r\nFrom: a@remote.test\r\nTo: alice@example.test\r\n\r\n" + b"\r\n".join(body) + b"\r\n"
    smtp_send(daemon, sent)
    [stored] = wait_imap_count(daemon, 1)
    stored_tail(stored, sent)
    header = stored[: stored.index(b"\r\n\r\n") + 4]

    client = pop_login(daemon, implicit=True)
    try:
        _resp, lines, _ = client.top(1, 0)
        assert b"\r\n".join(lines) + b"\r\n" == header
        _resp, lines, _ = client.top(1, 5)
        assert b"\r\n".join(lines) + b"\r\n" == header + b"\r\n".join(body[:5]) + b"\r\n"
        _resp, lines, _ = client.top(1, 100)  # more lines than the body has: the whole message
        assert b"\r\n".join(lines) + b"\r\n" == stored
        assert retr_bytes(client, 1) == stored  # TOP changed nothing
    finally:
        client.quit()


def test_user_and_pass_refused_before_stls_on_the_plain_port(daemon):
    password = daemon.users[ALICE].encode()
    sock = socket.create_connection(("127.0.0.1", daemon.ports["pop3"]), timeout=60)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"+OK")
    sock.sendall(b"CAPA\r\n")
    assert f.readline().startswith(b"+OK")
    capabilities = read_multiline(f).split(b"\r\n")
    assert b"STLS" in capabilities and b"USER" not in capabilities

    sock.sendall(b"USER alice@example.test\r\n")
    assert f.readline().startswith(b"-ERR")
    sock.sendall(b"PASS " + password + b"\r\n")
    assert f.readline().startswith(b"-ERR")
    sock.sendall(b"STAT\r\n")
    assert f.readline().startswith(b"-ERR")  # not logged in

    sock.sendall(b"STLS\r\n")
    assert f.readline().startswith(b"+OK")
    with daemon.ssl_context().wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        f = tls.makefile("rb")
        tls.sendall(b"CAPA\r\n")
        assert f.readline().startswith(b"+OK")
        capabilities = read_multiline(f).split(b"\r\n")
        assert b"USER" in capabilities and b"STLS" not in capabilities
        tls.sendall(b"USER alice@example.test\r\n")
        assert f.readline().startswith(b"+OK")
        tls.sendall(b"PASS " + password + b"\r\n")
        assert f.readline().startswith(b"+OK")
        tls.sendall(b"QUIT\r\n")
        assert f.readline().startswith(b"+OK")

    # poplib, like a user's client, gets an error and no session.
    client = poplib.POP3("127.0.0.1", daemon.ports["pop3"], timeout=60)
    with pytest.raises(poplib.error_proto, match="STLS"):
        client.user(ALICE)
    client.quit()


def test_wrong_password_refused_with_auth_code(daemon):
    client = poplib.POP3_SSL("127.0.0.1", daemon.ports["pop3s"], context=daemon.ssl_context(), timeout=60)
    client.user(ALICE)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("not the password")
    client.quit()


def test_second_session_on_one_maildrop_is_in_use_and_imap_sees_pop3_deletions(daemon):
    smtp_send(daemon, make_message("shared inbox"))
    imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(), timeout=60)
    imap.login(ALICE, daemon.users[ALICE])
    assert imap.select("INBOX")[1] == [b"1"]
    first = pop_login(daemon, implicit=True)
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        pop_login(daemon)  # the plain port's STLS session shares the lock with 995
    first.dele(1)
    first.quit()  # expunges before +OK, and releases the maildrop
    second = pop_login(daemon)
    assert second.stat()[0] == 0
    second.quit()
    imap.noop()  # RFC 9051 §7.5.1: another session's expunge is reported as EXPUNGE
    assert imap.untagged_responses.get("EXPUNGE") == [b"1"]
    imap.logout()


def test_plaintext_allowed_is_said_loudly_in_the_log(tmp_path):
    daemon = make_daemon(tmp_path / "d", extra_config="[auth]\nallow_plaintext = true")
    daemon.start()
    wait_for(lambda: "auth-plaintext-allowed" in daemon.log(), what="the plaintext warning")
    daemon.stop()
