"""Postfix as the sending MTA: mail injected into a private Postfix relays to our MX listener.

Each test runs Debian's Postfix as a private instance of its own (its own
config, queue and data directories in a temporary directory, its smtpd on a
free high port of 127.0.0.1, nothing on port 25), whose ``relayhost`` is a
recording TCP relay in front of mailserverd's MX listener. The relay keeps the
bytes Postfix sends (so a test can see BODY=8BITMIME, STARTTLS, pipelining)
and can hold back the server's replies to prove that Postfix pipelines.

A message is injected with smtplib into Postfix's smtpd, then read back from
the recipient's INBOX through IMAP. It must arrive byte-identical: the same
body, and the same header fields in the same order once the fields the two
MTAs add on the way (RFC 5321 §4.4 trace fields, our Authentication-Results
and X-Spam-* fields) are taken out.

Postfix's master runs as root and its daemons as the ``postfix`` user: the
tests need root, and skip without it (fail under CI=true).
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from email.utils import formatdate
from pathlib import Path

import pytest

import readiness
from clients import imap_fetch_all
from conftest import IN_CI, free_ports, make_daemon, require_program, wait_for

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"
BOB = "bob@example.test"
SENDER = "sender@remote.test"
POSTFIX_HOSTNAME = "postfix.remote.test"
DELIVERY_TIMEOUT = 180  # seconds for Postfix to hand a message on and us to store it

#: Header fields an MTA on the way may add (lower-case names, or prefixes ending in "-").
ADDED_FIELDS = ("received", "authentication-results", "x-spam-")

MASTER_CF = """\
127.0.0.1:{smtpd_port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
local      unix  - n n -  - local
virtual    unix  - n n -  - virtual
lmtp       unix  - - n -  - lmtp
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


# --- a recording relay between Postfix and our MX listener


class RecordingRelay:
    """A TCP relay on a free 127.0.0.1 port that forwards to ``target_port`` and records.

    ``client_bytes`` holds everything the client (Postfix) sent, over all
    connections. With ``hold_replies_until_data``, once the client has sent a
    ``MAIL FROM:`` line the server's replies are held back until the client
    has also sent its ``DATA`` line: a client that waits for each reply
    before its next command (no PIPELINING, RFC 2920 §3.1) would stall, so the
    relay gives up holding after ``hold_timeout`` seconds and sets
    ``hold_timed_out`` (the test then fails instead of hanging).
    """

    def __init__(self, target_port: int, hold_replies_until_data: bool = False,
                 hold_timeout: float = 60.0):
        self.target_port = target_port
        self.hold = hold_replies_until_data
        self.hold_timeout = hold_timeout
        self.hold_timed_out = False
        self.client_bytes = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        """Copy bytes both ways until either side closes; hold replies as configured."""
        server = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        mine = bytearray()  # this connection's client bytes
        held = bytearray()
        hold_started: float | None = None
        try:
            while True:
                readable = readiness.readable([client, server], 0.5)
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    mine += data
                    with self._lock:
                        self.client_bytes += data
                    server.sendall(data)
                if server in readable:
                    data = server.recv(65536)
                    if not data:
                        return
                    held += data
                holding = self.hold and self._holding(mine)
                if holding and hold_started is None:
                    hold_started = time.monotonic()
                if holding and time.monotonic() - hold_started > self.hold_timeout:
                    self.hold_timed_out = True
                    self.hold = False
                    holding = False
                if held and not holding:
                    client.sendall(held)
                    held.clear()
        except OSError:
            return
        finally:
            client.close()
            server.close()

    @staticmethod
    def _holding(sent: bytes) -> bool:
        """True from the client's first MAIL command until its DATA line after it."""
        mail = sent.upper().find(b"\r\nMAIL FROM:")
        return mail >= 0 and sent.upper().find(b"\r\nDATA\r\n", mail) < 0


# --- a private Postfix instance


class PostfixInstance:
    """Debian's Postfix with its own config, queue and data directories, relaying all mail.

    ``relay_port`` is where every message goes (``relayhost = [127.0.0.1]:port``);
    ``tls_level`` is Postfix's ``smtp_tls_security_level`` towards it
    (``none`` or ``may``). Postfix's smtpd listens on ``smtpd_port``.
    The directory lives outside pytest's private temporary tree because
    Postfix's daemons (user ``postfix``) must be able to reach it.
    """

    def __init__(self, relay_port: int, tls_level: str = "none"):
        self.postfix = require_program("postfix", "postfix")
        self.root = Path(tempfile.mkdtemp(prefix="postfix-test-"))
        self.root.chmod(0o755)
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "queue"
        self.data_dir = self.root / "data"
        self.log_path = self.root / "maillog"
        [self.smtpd_port] = free_ports(1)
        self.config_dir.mkdir()
        self.queue_dir.mkdir(mode=0o755)  # owned by root, as Postfix requires
        self.data_dir.mkdir(mode=0o700)
        shutil.chown(self.data_dir, user="postfix")
        (self.config_dir / "main.cf").write_text(self._main_cf(relay_port, tls_level))
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_port=self.smtpd_port))
        self.started = False

    def _main_cf(self, relay_port: int, tls_level: str) -> str:
        return "\n".join([
            "compatibility_level = 3.6",
            f"config_directory = {self.config_dir}",
            f"queue_directory = {self.queue_dir}",
            f"data_directory = {self.data_dir}",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            f"myhostname = {POSTFIX_HOSTNAME}",
            "mydomain = remote.test",
            "myorigin = remote.test",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            f"relayhost = [127.0.0.1]:{relay_port}",
            f"smtp_tls_security_level = {tls_level}",
            "smtp_tls_loglevel = 1",
            f"maillog_file = {self.log_path}",
            f"maillog_file_prefixes = {self.root}",
            f"syslog_name = postfix-{self.root.name}",
            "alias_maps =",
            "alias_database =",
            "biff = no",
            "",
        ])

    def start(self) -> None:
        """``postfix -c DIR start``, then wait until its smtpd accepts connections."""
        self.started = True  # so that stop() runs even if the start half-failed
        result = self._postfix("start")
        assert result.returncode == 0, f"postfix start failed: {result.stdout}{result.stderr}\n{self.log()}"
        wait_for(self._listening, timeout=60, what="Postfix smtpd")

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.smtpd_port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """``postfix -c DIR stop`` (it waits for the master to exit); remove the directory."""
        if self.started:
            self._postfix("stop")
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def flush(self) -> None:
        """Ask Postfix to attempt delivery of everything queued now."""
        self._postfix("flush")

    def _postfix(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.postfix, "-c", str(self.config_dir), command],
                              capture_output=True, text=True, timeout=120)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no Postfix log)"

    def inject(self, message: bytes, recipients: list[str], mail_options: tuple[str, ...] = ()) -> None:
        """Submit ``message`` to Postfix's smtpd with smtplib; every recipient must be accepted."""
        with smtplib.SMTP("127.0.0.1", self.smtpd_port, timeout=60) as client:
            client.ehlo("client.remote.test")
            refused = client.sendmail(SENDER, recipients, message, mail_options=list(mail_options))
        assert refused == {}


def require_root() -> None:
    """Postfix's master must run as root: skip otherwise (fail under CI)."""
    if os.geteuid() != 0:
        message = "the Postfix interop tests run Postfix's master, which needs root"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# --- fixtures


@pytest.fixture
def mx(tmp_path, dns_server):
    """A running daemon with example.test, alice and bob, resolving through a test DNS server.

    remote.test has an A record and an SPF record that passes 127.0.0.1
    (RFC 7208 §5.6), so the inbound checks get local, passing answers.
    """
    dns_server.add("remote.test", "A", "127.0.0.1")
    dns_server.add(POSTFIX_HOSTNAME, "A", "127.0.0.1")
    dns_server.add("remote.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    d = make_daemon(tmp_path / "d", dns=dns_server)
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    d.add_user(BOB, "bob-secret-2")
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@pytest.fixture
def relay_factory():
    """Make RecordingRelays in front of a port; all are closed after the test."""
    made: list[RecordingRelay] = []

    def make(target_port: int, **options) -> RecordingRelay:
        relay = RecordingRelay(target_port, **options)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.close()


@pytest.fixture
def postfix_factory():
    """Start private Postfix instances; each is stopped and removed after the test."""
    require_root()
    require_program("postfix", "postfix")
    made: list[PostfixInstance] = []

    def make(relay_port: int, tls_level: str = "none") -> PostfixInstance:
        instance = PostfixInstance(relay_port, tls_level)
        made.append(instance)
        instance.start()
        return instance

    yield make
    for instance in made:
        instance.stop()


# --- messages and checks


def message_with(headers: list[bytes], body: bytes) -> bytes:
    """A message from header lines (no CRLF) and a CRLF-ended body; adds Message-ID and Date."""
    fields = headers + [
        b"Message-ID: <" + uuid.uuid4().hex.encode() + b"@remote.test>",
        b"Date: " + formatdate(localtime=False).encode(),
    ]
    return b"\r\n".join(fields) + b"\r\n\r\n" + body


def split_fields(message: bytes) -> tuple[list[bytes], bytes]:
    """(header fields, each with its folded lines and CRLFs; body) of a CRLF message."""
    head, separator, body = message.partition(b"\r\n\r\n")
    assert separator, message[:300]
    fields: list[bytes] = []
    for line in (head + b"\r\n").split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields, body


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].decode("ascii", "replace").strip().lower()


def assert_relayed_intact(fetched: bytes, sent: bytes) -> list[bytes]:
    """The stored message is ``sent`` plus only the fields MTAs may add; returns those fields.

    The body must be byte-identical; the header fields sent must all be
    there, byte-identical and in their order; every other field must be one
    the MTAs on the way add (ADDED_FIELDS) and come before the fields sent
    (trace fields are prepended, RFC 5321 §4.4).
    """
    fetched_fields, fetched_body = split_fields(fetched)
    sent_fields, sent_body = split_fields(sent)
    assert fetched_body == sent_body, (len(fetched_body), len(sent_body), fetched_body[:200])
    added = [f for f in fetched_fields if f not in sent_fields]
    kept = [f for f in fetched_fields if f in sent_fields]
    assert kept == sent_fields, (kept, sent_fields)
    for field in added:
        assert field_name(field).startswith(ADDED_FIELDS), f"unexpected field added: {field!r}"
    assert fetched_fields[:len(added)] == added, "added fields must precede the fields sent"
    return added


def received_fields(added: list[bytes], by: str) -> list[bytes]:
    """The Received: fields among ``added`` that name ``by`` as the receiving host."""
    return [f for f in added if field_name(f) == "received" and f"by {by} (".encode() in f]


def wait_for_inbox(mx, user: str, count: int, postfix: PostfixInstance) -> list[bytes]:
    """Poll ``user``'s INBOX over IMAP until it holds ``count`` messages; fail with both logs."""
    def arrived():
        messages = imap_fetch_all(mx, user)
        return messages if len(messages) >= count else None

    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while True:
        try:
            return wait_for(arrived, timeout=min(30.0, max(1.0, deadline - time.monotonic())),
                            interval=0.5, what=f"{count} message(s) in {user}'s INBOX")
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no delivery to {user} within {DELIVERY_TIMEOUT} s\n"
                                     f"--- Postfix log\n{postfix.log()}\n--- mailserverd log\n{mx.log()}")
            postfix.flush()  # a deferred message is retried now, not after the queue run interval


def relay_and_fetch(mx, postfix_factory, relay_factory, message: bytes, recipients: list[str],
                    mail_options: tuple[str, ...] = (), tls_level: str = "none",
                    **relay_options) -> tuple[list[bytes], RecordingRelay, PostfixInstance]:
    """Inject ``message`` into a fresh Postfix that relays through a RecordingRelay to ``mx``.

    Returns (the message as stored for each recipient, in order; the relay; Postfix).
    """
    relay = relay_factory(mx.ports["smtp"], **relay_options)
    postfix = postfix_factory(relay.port, tls_level)
    postfix.inject(message, recipients, mail_options)
    stored = []
    for user in recipients:
        [fetched] = wait_for_inbox(mx, user, 1, postfix)
        stored.append(fetched)
    return stored, relay, postfix


def assert_one_hop_each(added: list[bytes], protocol: bytes) -> None:
    """Exactly one Received: by Postfix and one by us, ours saying ``with {protocol} id``."""
    assert len(received_fields(added, POSTFIX_HOSTNAME)) == 1, added
    [ours] = received_fields(added, "mx.example.test")
    assert b" with " + protocol + b" id " in ours, ours


# --- the tests


def test_postfix_relays_plain_text_message(mx, postfix_factory, relay_factory):
    body = (b"Hello Alice,\r\n\r\n.a line starting with a dot\r\n..two dots\r\n"
            b"trailing spaces   \r\n\ttab-led line\r\n\r\nBye\r\n")
    sent = message_with([b"From: Sender <sender@remote.test>", b"To: Alice <alice@example.test>",
                         b"Subject: plain text through Postfix"], body)

    [fetched], relay, _ = relay_and_fetch(mx, postfix_factory, relay_factory, sent, [ALICE])

    added = assert_relayed_intact(fetched, sent)
    assert_one_hop_each(added, b"ESMTP")
    assert b"EHLO " + POSTFIX_HOSTNAME.encode() in relay.client_bytes


def test_postfix_relays_8bit_message_with_body_8bitmime(mx, postfix_factory, relay_factory):
    body = "Grüße aus Köln, café crème, naïve façade — ½ € ✓\r\n日本語のテキスト\r\n".encode("utf-8") * 20
    sent = message_with([b"From: sender@remote.test", b"To: alice@example.test",
                         b"Subject: 8-bit body", b"MIME-Version: 1.0",
                         b"Content-Type: text/plain; charset=utf-8",
                         b"Content-Transfer-Encoding: 8bit"], body)

    [fetched], relay, _ = relay_and_fetch(mx, postfix_factory, relay_factory, sent, [ALICE],
                                          mail_options=("BODY=8BITMIME",))

    added = assert_relayed_intact(fetched, sent)
    assert_one_hop_each(added, b"ESMTP")
    # RFC 6152 §3: Postfix declares the 8-bit body to us instead of converting it.
    mail_line = relay.client_bytes.split(b"MAIL FROM:", 1)[1].split(b"\r\n", 1)[0]
    assert b"BODY=8BITMIME" in mail_line.upper(), mail_line


def test_postfix_relays_one_megabyte_attachment(mx, postfix_factory, relay_factory):
    payload = random.Random(20240611).randbytes(1_000_000)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    body = (b"This is a multi-part message in MIME format.\r\n"
            b"--BOUNDARY-1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            b"The attachment follows.\r\n"
            b"--BOUNDARY-1\r\nContent-Type: application/octet-stream; name=blob.bin\r\n"
            b"Content-Disposition: attachment; filename=blob.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded +
            b"--BOUNDARY-1--\r\n")
    sent = message_with([b"From: sender@remote.test", b"To: alice@example.test",
                         b"Subject: one megabyte attachment", b"MIME-Version: 1.0",
                         b'Content-Type: multipart/mixed; boundary="BOUNDARY-1"'], body)
    assert len(sent) > 1_000_000

    [fetched], _, _ = relay_and_fetch(mx, postfix_factory, relay_factory, sent, [ALICE])

    added = assert_relayed_intact(fetched, sent)
    assert_one_hop_each(added, b"ESMTP")
    attachment = split_fields(fetched)[1].split(b"Content-Transfer-Encoding: base64\r\n\r\n", 1)[1]
    assert base64.b64decode(attachment.split(b"--BOUNDARY-1--", 1)[0]) == payload


def test_postfix_uses_starttls_to_us(mx, postfix_factory, relay_factory):
    sent = message_with([b"From: sender@remote.test", b"To: alice@example.test",
                         b"Subject: over STARTTLS"], b"sent over TLS\r\n")

    [fetched], relay, postfix = relay_and_fetch(mx, postfix_factory, relay_factory, sent, [ALICE],
                                                tls_level="may")

    added = assert_relayed_intact(fetched, sent)
    # RFC 3848 §1: the hop over TLS is recorded as ESMTPS.
    assert_one_hop_each(added, b"ESMTPS")
    # RFC 3207 §4: STARTTLS in clear, then the whole transaction encrypted.
    assert b"STARTTLS\r\n" in relay.client_bytes.upper()
    assert b"MAIL FROM:" not in relay.client_bytes.upper()
    assert "TLS connection established to" in postfix.log(), postfix.log()


def test_postfix_pipelines_to_us(mx, postfix_factory, relay_factory):
    """Replies are held from MAIL until DATA: only a pipelining client gets through (RFC 2920)."""
    sent = message_with([b"From: sender@remote.test", b"To: alice@example.test, bob@example.test",
                         b"Subject: pipelined"], b"MAIL, RCPT, RCPT and DATA in one go\r\n")

    stored, relay, _ = relay_and_fetch(mx, postfix_factory, relay_factory, sent, [ALICE, BOB],
                                       hold_replies_until_data=True)

    assert not relay.hold_timed_out, "Postfix waited for a reply before sending DATA"
    for fetched in stored:
        added = assert_relayed_intact(fetched, sent)
        assert_one_hop_each(added, b"ESMTP")
    upper = bytes(relay.client_bytes).upper()
    group = upper[upper.index(b"MAIL FROM:"):upper.index(b"\r\nDATA\r\n")]
    assert group.count(b"\r\nRCPT TO:") == 2, group
