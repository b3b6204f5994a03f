"""Metrics end to end: the real daemon with ``[metrics]`` enabled, scraped over HTTP.

What a sysadmin's Prometheus sees at ``GET /metrics`` after real clients
used the server: connections, logins and TLS handshakes with their labels,
mail received, delivered and refused, the store's size per shard and the
commit latency histogram, parsed with prometheus_client's own parser. And
with metrics off, the daemon listens on nothing but its mail ports.
"""

from __future__ import annotations

import imaplib
import os
import poplib
import re
import smtplib
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients import make_message, smtp_send
from conftest import free_ports, make_daemon, wait_for

pytestmark = pytest.mark.e2e

ALICE = "alice@example.test"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """``{(sample name, labels): value}`` from one ``GET /metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of every series of ``name``."""
    return {dict(labels)[label]: found for (sample, labels), found in samples.items() if sample == name}


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, read from /proc (its socket
    inodes matched against the kernel's table of listening sockets)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        found = re.fullmatch(r"socket:\[(\d+)\]", target)
        if found:
            inodes.add(found.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def metered(tmp_path):
    """A running daemon with the metrics endpoint on a free port (``ports["metrics"]``)."""
    [port] = free_ports(1)
    d = make_daemon(tmp_path / "d", extra_config=f'[metrics]\nenabled = true\naddress = "127.0.0.1"\n'
                                                  f'port = {port}\n')
    d.cli("domain", "add", "example.test")
    d.add_user(ALICE, "alice-secret-1")
    d.ports["metrics"] = port  # start() then waits for it too
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


def test_metrics_after_real_clients(metered):
    port = metered.ports["metrics"]
    before = scrape(port)
    assert by_label(before, "mailserverd_connections_open", "listener").keys() == \
        set(metered.ports) - {"metrics"}

    # An MX delivery over STARTTLS, and a RCPT for nobody in plain text.
    smtp_send(metered, make_message("metrics"))
    with smtplib.SMTP("127.0.0.1", metered.ports["smtp"], timeout=30) as client:
        client.ehlo("client.remote.test")
        client.mail("sender@remote.test")
        assert client.rcpt("nobody@example.test")[0] == 550
    # An IMAP login over implicit TLS.
    imap = imaplib.IMAP4_SSL("127.0.0.1", metered.ports["imaps"], ssl_context=metered.ssl_context(),
                             timeout=30)
    imap.login(ALICE, "alice-secret-1")
    imap.logout()
    # A failed POP3 login after STLS.
    pop = poplib.POP3("127.0.0.1", metered.ports["pop3"], timeout=30)
    pop.stls(context=metered.ssl_context())
    pop.user(ALICE)
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong password")
    pop.quit()
    # Not TLS at all on the implicit-TLS port.
    with socket.create_connection(("127.0.0.1", metered.ports["pop3s"]), timeout=30) as garbage:
        garbage.sendall(b"USER alice\r\n" * 20)
        while garbage.recv(4096):
            pass

    def settled():
        found = scrape(port)
        opened = sum(by_label(found, "mailserverd_connections_open", "listener").values())
        return found if opened == 0 and value(found, "mailserverd_tls_handshake_failures_total",
                                              protocol="pop3") else None

    after = wait_for(settled, what="every connection closed and the handshake failure counted")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mailserverd_logins_total", protocol="imap", mechanism="LOGIN", result="ok") == 1
    assert grew("mailserverd_logins_total", protocol="pop3", mechanism="USER", result="failed") == 1
    assert by_label(after, "mailserverd_logins_total", "result").keys() == {"ok", "failed"}
    for protocol in ("smtp", "imap", "pop3"):  # python's ssl negotiates TLS 1.3
        assert grew("mailserverd_tls_handshakes_total", protocol=protocol, version="TLSv1.3") == 1
    assert grew("mailserverd_tls_handshake_failures_total", protocol="pop3") == 1
    assert grew("mailserverd_connections_total", protocol="smtp", listener="smtp") >= 2
    assert grew("mailserverd_connections_total", protocol="imap", listener="imaps") >= 1
    assert grew("mailserverd_messages_received_total", origin="mx") == 1
    assert grew("mailserverd_messages_delivered_total") == 1
    assert grew("mailserverd_recipients_rejected_total", reason="unknown_user") == 1

    used = by_label(after, "mailserverd_store_used_bytes", "env")
    assert used.keys() == {"meta", "shard-00", "shard-01", "queue"}
    sizes = by_label(after, "mailserverd_store_map_size_bytes", "env")
    assert all(0 < used[env] < sizes[env] for env in used)
    commits = by_label(after, "mailserverd_store_commit_seconds_count", "env")
    assert sum(commits[env] for env in ("shard-00", "shard-01")) > 0  # the delivery's commit
    batched = by_label(after, "mailserverd_store_batch_operations_sum", "env")
    assert sum(batched.values()) >= sum(commits.values()) > 0
    assert value(after, "process_open_fds") > 0

    # The delivery is in the change log; the indexer follows it until no shard lags.
    def indexed():
        lags = by_label(scrape(port), "mailserverd_search_index_lag", "shard")
        return lags if lags.keys() == {"0", "1"} and not any(lags.values()) else None

    wait_for(indexed, what="the search index caught up with every shard's change log")


def test_metrics_endpoint_serves_only_get_of_metrics(metered):
    port = metered.ports["metrics"]
    for path, method, status in (("/", "GET", 404), ("/other", "GET", 404),
                                 ("/metrics", "POST", 405)):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=b"x" if method == "POST" else None)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == status, (path, method)
    assert metered.proc.pid and port in listening_ports(metered.proc.pid)


def test_metrics_off_means_nothing_else_listens(tmp_path):
    [port] = free_ports(1)
    d = make_daemon(tmp_path / "d", extra_config=f"[metrics]\nenabled = false\nport = {port}\n")
    d.start()
    assert listening_ports(d.proc.pid) == set(d.ports.values())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=30)
    d.stop()


def test_metrics_port_taken_stops_the_start(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = make_daemon(tmp_path / "d", extra_config=f"[metrics]\nenabled = true\nport = {port}\n")
        d.start(wait=False)
        assert d.proc.wait(timeout=60) == 1
    assert f"start-failed: metrics endpoint on 127.0.0.1:{port}: [Errno 98]" in d.log()
