"""Support for the search index tests: a daemon whose index lag can be watched,
and the IMAP client calls those tests share.

The index's progress is observed where an operator sees it: the metrics
endpoint's ``mailserverd_search_index_lag`` (change-log records of each
shard not yet indexed), scraped over HTTP. The crash tests import this
module as ``e2e.search_support`` (tests/ is on their path, tests/e2e is not).
"""

from __future__ import annotations

import imaplib
import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from clients import RawImap
from conftest import Daemon, free_ports, make_daemon, wait_for

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORDS = {ALICE: "alice-secret-1", BOB: "bob-secret-2"}
LAG = "mailserverd_search_index_lag"
#: Seconds the indexer gets to catch up (it runs at a lower priority on 2 shared cores).
INDEX_DEADLINE = 600
#: The indexer runs when the daemon starts, then not for an hour: what is
#: delivered afterwards stays unindexed (searches scan it) until the next start.
IDLE_INDEXER = "search_index_interval = 3600\n"
#: Bytes of messages sent in one MULTIAPPEND (RFC 3502), well below imap_append_bytes_max.
MULTIAPPEND_BYTES = 8 << 20


def search_daemon(root, limits: str = "", shards: int = 2, tables: str = "") -> Daemon:
    """A daemon (not started) with example.test, alice and bob, ``limits`` added
    to its ``[limits]`` table, ``tables`` to its config, and the metrics
    endpoint on a free port (``ports["metrics"]``, so that start() waits for it too)."""
    [port] = free_ports(1)
    daemon = make_daemon(root, shards=shards, extra_config=(
        limits + f'\n[metrics]\nenabled = true\naddress = "127.0.0.1"\nport = {port}\n' + tables))
    daemon.cli("domain", "add", "example.test")
    for user, password in PASSWORDS.items():
        daemon.add_user(user, password)
    daemon.ports["metrics"] = port
    return daemon


def index_lag(daemon: Daemon) -> dict[str, float]:
    """``{shard: change-log records not indexed yet}`` from one scrape of the metrics endpoint."""
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode("utf-8")
    return {sample.labels["shard"]: sample.value
            for family in text_string_to_metric_families(text) if family.name == LAG
            for sample in family.samples}


def wait_indexed(daemon: Daemon, shards: int = 2) -> None:
    """Wait (generously) until the indexer has caught up with every shard's change log."""
    def caught_up():
        lag = index_lag(daemon)
        return len(lag) == shards and not any(lag.values())

    wait_for(caught_up, timeout=INDEX_DEADLINE, interval=0.2, what="the search index to catch up")


def restart_indexed(daemon: Daemon) -> None:
    """Stop the daemon cleanly (asserting a clean exit), start it again (its
    indexer then runs), and wait until the index has caught up."""
    daemon.stop()
    daemon.start()
    wait_indexed(daemon)


def login(daemon: Daemon, user: str = ALICE, mailbox: str | None = "INBOX") -> imaplib.IMAP4_SSL:
    """An imaplib client over implicit TLS, logged in as ``user``, with ``mailbox`` selected."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", daemon.ports["imaps"], ssl_context=daemon.ssl_context(),
                             timeout=120)
    # imaplib writes a literal and the CRLF after it apart: without this, Nagle
    # holds the CRLF for the server's delayed ACK (40 ms per literal search).
    imap.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    imap.login(user, daemon.users[user])
    if mailbox is not None:
        typ, data = imap.select(mailbox)
        assert typ == "OK", data
    return imap


def multiappend(daemon: Daemon, messages: list[bytes], mailbox: str = "INBOX", user: str = ALICE) -> None:
    """APPEND ``messages`` to ``mailbox`` in order, many per command (RFC 3502
    MULTIAPPEND, LITERAL+ literals); each command must succeed. UTF8=ACCEPT is
    enabled first: real mail has raw UTF-8 in its header fields (RFC 6855 §4)."""
    client = RawImap(daemon, timeout=300)
    client.login(user)
    assert client.command(b"E", b"ENABLE UTF8=ACCEPT")[-1].startswith(b"E OK")
    start = 0
    while start < len(messages):
        end, size = start, 0
        while end < len(messages) and (end == start or size + len(messages[end]) <= MULTIAPPEND_BYTES):
            size += len(messages[end])
            end += 1
        literals = b"".join(b" {%d+}\r\n" % len(raw) + raw for raw in messages[start:end])
        reply = client.command(b"A", b"APPEND " + mailbox.encode() + literals)
        assert reply[-1].startswith(b"A OK"), reply[-1]
        start = end
    client.close()


def untagged(imap: imaplib.IMAP4, name: str) -> list:
    """The data of the untagged ``name`` responses the last command got (imaplib keeps them)."""
    return [item for item in imap.response(name)[1] if item is not None]
