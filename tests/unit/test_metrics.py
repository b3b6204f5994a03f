"""The metrics registry, its sampled gauges, the store's size readings, and the
connection wrapper that counts connections and TLS handshakes."""

from __future__ import annotations

import threading

import pytest
from OpenSSL import SSL
from prometheus_client import generate_latest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from mailserverd.connlimit import ConnectionCounter, LimitedFactory
from mailserverd.limits import MIB
from mailserverd.metrics import (
    CONNECTIONS,
    LOGINS,
    METRIC_SPECS,
    QUEUE_ENTRIES,
    SEARCH_LAG,
    STORE_USED,
    Metrics,
)
from mailserverd.store.env import open_env


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_every_metric_is_exported_with_its_help_text():
    text = generate_latest(Metrics().registry).decode()
    for spec in METRIC_SPECS:
        assert f"# HELP {spec.exported} {spec.doc}\n" in text, spec.name
    assert len({spec.name for spec in METRIC_SPECS}) == len(METRIC_SPECS)
    assert "_created" not in text
    assert "process_open_fds" in text


def test_each_server_counts_on_its_own():
    first, second = Metrics(), Metrics()
    first.login("imap", "LOGIN", "ok")
    first.login("imap", "LOGIN", "ok")
    first.login("", "USER", "failed")
    assert sample(first, "mailserverd_logins_total", protocol="imap", mechanism="LOGIN", result="ok") == 2
    assert sample(first, "mailserverd_logins_total", protocol="unknown", mechanism="USER",
                  result="failed") == 1
    assert sample(second, "mailserverd_logins_total", protocol="imap", mechanism="LOGIN",
                  result="ok") is None


def test_sampled_gauges_read_their_source_at_each_scrape():
    metrics = Metrics()
    queue = {("active",): 2, ("deferred",): 5}
    metrics.set_source(QUEUE_ENTRIES, lambda: queue)
    assert sample(metrics, "mailserverd_queue_recipients", state="deferred") == 5
    queue[("deferred",)] = 7
    assert sample(metrics, "mailserverd_queue_recipients", state="deferred") == 7

    def broken():
        raise RuntimeError("index not open")

    metrics.set_source(SEARCH_LAG, broken)  # logged and left out; the rest still scrapes
    assert sample(metrics, "mailserverd_queue_recipients", state="active") == 2
    assert f"# HELP {SEARCH_LAG.name} " in generate_latest(metrics.registry).decode()
    metrics.set_source(QUEUE_ENTRIES, None)
    assert sample(metrics, "mailserverd_queue_recipients", state="active") is None
    for not_sampled in (CONNECTIONS, LOGINS):
        with pytest.raises(ValueError):
            metrics.set_source(not_sampled, lambda: {})


def test_batch_observer_fills_both_histograms():
    metrics = Metrics()
    observe = metrics.batch_observer("shard-03")
    observe(1, 0.002)
    observe(40, 0.004)
    assert sample(metrics, "mailserverd_store_commit_seconds_count", env="shard-03") == 2
    assert sample(metrics, "mailserverd_store_commit_seconds_sum", env="shard-03") == pytest.approx(0.006)
    assert sample(metrics, "mailserverd_store_commit_seconds_bucket", env="shard-03", le="0.0025") == 1
    assert sample(metrics, "mailserverd_store_batch_operations_sum", env="shard-03") == 41
    assert sample(metrics, "mailserverd_store_batch_operations_bucket", env="shard-03", le="32.0") == 1


def test_store_env_usage_grows_with_data_and_stops_at_close(tmp_path):
    env = open_env(str(tmp_path / "env"), 16 * MIB, ("info", "blobs"), {b"shard": 0}, "test")
    before = env.usage()
    assert before.map_size == 16 * MIB and 0 < before.used_bytes < before.map_size
    with env.env.begin(write=True, db=env.dbs["blobs"]) as txn:
        for n in range(64):
            txn.put(b"%04d" % n, b"x" * 16384)
    assert env.usage().used_bytes >= before.used_bytes + 64 * 16384
    env.close()
    assert env.usage() is None


def test_store_env_usage_is_safe_while_another_thread_closes(tmp_path):
    env = open_env(str(tmp_path / "env"), 16 * MIB, ("info",), {b"shard": 0}, "test")
    readings: list = []
    started = threading.Event()

    def scrape():  # until it sees the close
        while not readings or readings[-1] is not None:
            readings.append(env.usage())
            started.set()

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    assert started.wait(30)
    env.close()
    scraper.join(30)
    assert not scraper.is_alive()
    assert readings[0] is not None and readings[-1] is None


# ---------------------------------------------------------------- connlimit


@implementer(IHandshakeListener)
class HandshakeProtocol(Protocol):
    handshakes = 0

    def handshakeCompleted(self):  # noqa: N802
        self.handshakes += 1


def connect(factory: LimitedFactory, ip: str = "192.0.2.1"):
    protocol = factory.buildProtocol(IPv4Address("TCP", ip, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 40000))
    protocol.makeConnection(transport)
    return protocol, transport


def test_connections_and_tls_handshakes_are_counted_per_listener():
    metrics = Metrics()
    factory = LimitedFactory(Factory.forProtocol(HandshakeProtocol), ConnectionCounter(10, 2), "imap",
                             "imaps", metrics)
    assert sample(metrics, "mailserverd_connections_open", protocol="imap", listener="imaps") == 0
    first, _ = connect(factory)
    second, _ = connect(factory)
    _, refused = connect(factory)  # a third from the same IP: over connections_per_ip_max
    assert refused.value().startswith(b"* BYE [UNAVAILABLE]")
    assert sample(metrics, "mailserverd_connections_total", protocol="imap", listener="imaps") == 2
    assert sample(metrics, "mailserverd_connections_open", protocol="imap", listener="imaps") == 2
    assert sample(metrics, "mailserverd_connections_refused_total", protocol="imap", reason="limit") == 1

    first.handshakeCompleted()  # no TLS under a StringTransport: the version is unknown
    assert first.wrappedProtocol.handshakes == 1  # still told to the protocol itself
    assert sample(metrics, "mailserverd_tls_handshakes_total", protocol="imap", version="unknown") == 1
    first.connectionLost(Failure(SSL.Error("bad record mac")))  # after the handshake: not one
    second.connectionLost(Failure(SSL.Error("no shared cipher")))
    assert sample(metrics, "mailserverd_tls_handshake_failures_total", protocol="imap") == 1
    assert sample(metrics, "mailserverd_connections_open", protocol="imap", listener="imaps") == 0
    assert sample(metrics, "mailserverd_connections_total", protocol="imap", listener="imaps") == 2


def test_store_gauges_name_every_environment(tmp_path):
    from mailserverd.limits import Limits
    from mailserverd.service import instrument_store
    from mailserverd.store.lmdbstore import LMDBStore
    from mailserverd.store.queuestore import QueueStore

    limits = Limits(store_map_size=16 * MIB)
    store = LMDBStore.open(str(tmp_path), 2, limits, fire=lambda function, *args: function(*args))
    queue = QueueStore.open(str(tmp_path), limits, fire=lambda function, *args: function(*args))
    metrics = Metrics()
    writers = [store.meta_writer, *store.shard_writers, queue.writer]
    instrument_store(metrics, writers)
    try:
        assert all(writer.observe_batch is not None for writer in writers)
        for env in ("meta", "shard-00", "shard-01", "queue"):
            assert sample(metrics, STORE_USED.name, env=env) > 0
            assert sample(metrics, "mailserverd_store_map_size_bytes", env=env) == 16 * MIB
            assert sample(metrics, "mailserverd_store_readers", env=env) >= 0
    finally:
        store.close()
        queue.close()
    assert sample(metrics, STORE_USED.name, env="meta") is None  # closed: left out
