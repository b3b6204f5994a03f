"""The server's metrics for Prometheus: one registry per running server.

:class:`Metrics` owns a ``prometheus_client`` :class:`CollectorRegistry` (not
the library's global one, so that each server, and each test, starts from
zero) holding every metric in :data:`METRIC_SPECS`, the one list of what is
exported: the docs' metric reference is written from it. Components are
given the :class:`Metrics` of their server and report events through its
methods (``connection_opened``, ``login``, ``message_received``...); they
never name a metric or a label themselves.

Two kinds of metric:

- *event* metrics (counters, histograms, the open-connections gauge) are
  updated where the event happens, on the thread it happens on (prometheus
  metrics are thread-safe);
- *sampled* gauges (store sizes, queue sizes, search index lag) are read at
  scrape time from a *source* the composition root sets with
  :meth:`Metrics.set_source`: a callable returning ``{label values: value}``.
  A scrape runs in a thread of the reactor's pool (the HTTP endpoint,
  :mod:`mailserverd.web.metrics`), so a source must be thread-safe and must
  not touch Twisted objects; a source that raises is logged and skipped.

Nothing here does I/O; the HTTP endpoint is in :mod:`mailserverd.web.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from twisted.logger import Logger


log = Logger(namespace="mailserverd.metrics")

# No ``*_created`` series beside each counter (process-wide; they double a
# scrape's size and Prometheus does not need them).
disable_created_metrics()

#: Seconds; an fsync'd LMDB commit takes ~1 ms on SSDs and ~10-30 ms on disks.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Operations per group commit: powers of two up to store_batch_max's default.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its full ``name`` (counters without ``_total``,
    which prometheus_client adds), ``kind`` (``counter``, ``gauge``,
    ``histogram``, or ``sampled`` for a gauge read from a source at scrape
    time), ``labels`` and ``doc`` (the HELP text and the docs' wording)."""

    name: str
    kind: str
    labels: tuple[str, ...]
    doc: str

    @property
    def exported(self) -> str:
        """The name a scrape shows (``_total`` added to counters)."""
        return self.name + "_total" if self.kind == "counter" else self.name


CONNECTIONS = MetricSpec(
    "mailserverd_connections", "counter", ("protocol", "listener"),
    "Connections accepted, by protocol (smtp, imap, pop3, http) and listener kind (the "
    "[[listener]] kind: smtp, submission, imaps...); refused ones are not counted here.")
CONNECTIONS_OPEN = MetricSpec(
    "mailserverd_connections_open", "gauge", ("protocol", "listener"),
    "Connections open now, by protocol and listener kind.")
CONNECTIONS_REFUSED = MetricSpec(
    "mailserverd_connections_refused", "counter", ("protocol", "reason"),
    "Connections turned away before the session started; reason limit: connections_max or "
    "connections_per_ip_max reached; rate: connections_per_ip_per_minute reached.")
ABUSE_REFUSALS = MetricSpec(
    "mailserverd_abuse_refusals", "counter", ("protocol", "limit"),
    "Connections, commands, logins and recipients refused by an abuse limit "
    "(mailserverd.abuse), by protocol and limit: connections_per_ip_per_minute, "
    "commands_per_ip_per_second, sessions_per_account_max, greylisting.")
TLS_HANDSHAKES = MetricSpec(
    "mailserverd_tls_handshakes", "counter", ("protocol", "version"),
    "TLS handshakes with connecting clients completed (implicit TLS and STARTTLS/STLS), by "
    "protocol and negotiated version (TLSv1.2, TLSv1.3).")
TLS_HANDSHAKE_FAILURES = MetricSpec(
    "mailserverd_tls_handshake_failures", "counter", ("protocol",),
    "TLS handshakes that failed (no shared version or cipher, a client that distrusts the "
    "certificate, garbage instead of TLS).")
LOGINS = MetricSpec(
    "mailserverd_logins", "counter", ("protocol", "mechanism", "result"),
    "Login attempts, by protocol, mechanism (LOGIN for IMAP LOGIN, USER for POP3 USER/PASS, "
    "else the SASL mechanism) and result: ok, failed (wrong user or password), throttled "
    "(too many recent failures), unavailable (the password service was busy or failed).")
MESSAGES_RECEIVED = MetricSpec(
    "mailserverd_messages_received", "counter", ("origin",),
    "Messages accepted by SMTP (250 after DATA or BDAT LAST), by origin: mx (from another "
    "server, unauthenticated) or submission (from an authenticated user).")
MESSAGES_DELIVERED = MetricSpec(
    "mailserverd_messages_delivered", "counter", (),
    "Copies stored into local mailboxes (one per local recipient user, bounces to local "
    "senders included).")
MESSAGES_REJECTED = MetricSpec(
    "mailserverd_messages_rejected", "counter", ("reason",),
    "Messages refused after DATA, by reason: checks (the inbound checks: SPF, DMARC, spam "
    "score), mailbox_full, store_full, error (a temporary failure).")
RECIPIENTS_REJECTED = MetricSpec(
    "mailserverd_recipients_rejected", "counter", ("reason",),
    "RCPT TO addresses refused, by reason: unknown_user, relay_denied, mailbox_full, "
    "bad_address, error (a temporary failure, or no outbound queue).")
OUTBOUND = MetricSpec(
    "mailserverd_outbound_recipients", "counter", ("result",),
    "Outbound delivery attempts' outcomes per recipient: delivered, deferred (to be retried), "
    "bounced (given up; a failure report goes to the sender).")
# Sampled gauges' sources: the store's are set by service.instrument_store; the
# queue's (QueueStore counts by state) and the search index's (last_seq -
# search_seq per shard) by the composition root where those are built.
QUEUE_ENTRIES = MetricSpec(
    "mailserverd_queue_recipients", "sampled", ("state",),
    "Recipients in the outbound queue now, by state (active, deferred, held).")
STORE_USED = MetricSpec(
    "mailserverd_store_used_bytes", "sampled", ("env",),
    "Bytes in use in each LMDB environment (meta, shard-NN, queue): the pages up to the "
    "highest one written; space freed inside is reused, not returned.")
STORE_MAP_SIZE = MetricSpec(
    "mailserverd_store_map_size_bytes", "sampled", ("env",),
    "The most each environment may grow to (store_map_size); writes fail once used bytes "
    "reach it.")
STORE_READERS = MetricSpec(
    "mailserverd_store_readers", "sampled", ("env",),
    "Reader slots taken in each environment's lock table (stale ones left by killed "
    "processes are cleared periodically).")
COMMIT_SECONDS = MetricSpec(
    "mailserverd_store_commit_seconds", "histogram", ("env",),
    "Time one group commit takes, by environment: the write transaction of a batch, from "
    "its begin to its durable (fsync'd) commit. Callers are answered right after.")
BATCH_OPERATIONS = MetricSpec(
    "mailserverd_store_batch_operations", "histogram", ("env",),
    "Writes per group commit, by environment: how many operations one fsync served.")
SEARCH_LAG = MetricSpec(
    "mailserverd_search_index_lag", "sampled", ("shard",),
    "Change-log records of each shard not yet in its search index.")

#: Every metric of a server, in the order the docs list them.
METRIC_SPECS: tuple[MetricSpec, ...] = (
    CONNECTIONS, CONNECTIONS_OPEN, CONNECTIONS_REFUSED, ABUSE_REFUSALS, TLS_HANDSHAKES,
    TLS_HANDSHAKE_FAILURES,
    LOGINS, MESSAGES_RECEIVED, MESSAGES_DELIVERED, MESSAGES_REJECTED, RECIPIENTS_REJECTED,
    OUTBOUND, QUEUE_ENTRIES, STORE_USED, STORE_MAP_SIZE, STORE_READERS, COMMIT_SECONDS,
    BATCH_OPERATIONS, SEARCH_LAG,
)

#: A sampled gauge's source: ``{label values (a tuple, one per label): value}``.
Source = Callable[[], Mapping[tuple[str, ...], float]]

_BUCKETS = {COMMIT_SECONDS.name: COMMIT_BUCKETS, BATCH_OPERATIONS.name: BATCH_BUCKETS}


class _SampledCollector:
    """Yields the sampled gauges from their sources at each scrape."""

    def __init__(self, specs: tuple[MetricSpec, ...]):
        self.specs = specs
        self.sources: dict[str, Source] = {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for spec in self.specs:
            yield GaugeMetricFamily(spec.name, spec.doc, labels=spec.labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for spec in self.specs:
            family = GaugeMetricFamily(spec.name, spec.doc, labels=spec.labels)
            source = self.sources.get(spec.name)
            try:
                samples = source() if source is not None else {}
            except Exception:
                log.failure("metrics-source-failed metric={metric}", metric=spec.name)
                samples = {}
            for labels, value in samples.items():
                family.add_metric(list(labels), value)
            yield family


class Metrics:
    """The metrics of one server (see the module docstring).

    ``registry`` is what the HTTP endpoint serves. It also holds the
    standard ``process_*`` (CPU, memory, open files) and
    ``python_info`` metrics. The event methods never raise and never block.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        made: dict[str, object] = {}
        for spec in METRIC_SPECS:
            if spec.kind == "counter":
                made[spec.name] = Counter(spec.name, spec.doc, spec.labels, registry=self.registry)
            elif spec.kind == "gauge":
                made[spec.name] = Gauge(spec.name, spec.doc, spec.labels, registry=self.registry)
            elif spec.kind == "histogram":
                made[spec.name] = Histogram(spec.name, spec.doc, spec.labels, registry=self.registry,
                                            buckets=_BUCKETS[spec.name])
        self._made = made
        self._sampled = _SampledCollector(tuple(s for s in METRIC_SPECS if s.kind == "sampled"))
        self.registry.register(self._sampled)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def _metric(self, spec: MetricSpec, *labels: str):
        metric = self._made[spec.name]
        return metric.labels(*labels) if labels else metric

    # --- sampled gauges

    def set_source(self, spec: MetricSpec, source: Source | None) -> None:
        """Read the sampled gauge ``spec`` from ``source`` at each scrape (None: stop)."""
        if spec.kind != "sampled":
            raise ValueError(f"{spec.name} is not a sampled gauge")
        if source is None:
            self._sampled.sources.pop(spec.name, None)
        else:
            self._sampled.sources[spec.name] = source

    # --- connections and TLS (mailserverd.connlimit)

    def listener_added(self, protocol: str, listener: str) -> None:
        """A listener exists: its connection series start at 0 (so that a rate
        over them is defined before the first connection)."""
        self._metric(CONNECTIONS, protocol, listener)
        self._metric(CONNECTIONS_OPEN, protocol, listener)

    def connection_opened(self, protocol: str, listener: str) -> None:
        """A connection was admitted on a ``listener`` kind serving ``protocol``."""
        self._metric(CONNECTIONS, protocol, listener).inc()
        self._metric(CONNECTIONS_OPEN, protocol, listener).inc()

    def connection_closed(self, protocol: str, listener: str) -> None:
        """An admitted connection closed."""
        self._metric(CONNECTIONS_OPEN, protocol, listener).dec()

    def connection_refused(self, protocol: str, reason: str) -> None:
        """A connection was turned away before its session started."""
        self._metric(CONNECTIONS_REFUSED, protocol, reason).inc()

    def abuse_refused(self, protocol: str, limit: str) -> None:
        """An abuse limit refused something (see :data:`ABUSE_REFUSALS`)."""
        self._metric(ABUSE_REFUSALS, protocol, limit).inc()

    def tls_handshake(self, protocol: str, version: str) -> None:
        """A TLS handshake completed with ``version`` (``"TLSv1.3"``; ``""`` if unknown)."""
        self._metric(TLS_HANDSHAKES, protocol, version or "unknown").inc()

    def tls_handshake_failed(self, protocol: str) -> None:
        """A TLS handshake failed."""
        self._metric(TLS_HANDSHAKE_FAILURES, protocol).inc()

    # --- logins (mailserverd.auth.accounts)

    def login(self, protocol: str, mechanism: str, result: str) -> None:
        """A login finished with ``result`` (ok, failed, throttled, unavailable)."""
        self._metric(LOGINS, protocol or "unknown", mechanism, result).inc()

    # --- mail (mailserverd.delivery.local, mailserverd.queue)

    def message_received(self, authenticated: bool) -> None:
        """SMTP accepted a message (its 250 is about to be sent)."""
        self._metric(MESSAGES_RECEIVED, "submission" if authenticated else "mx").inc()

    def messages_delivered(self, copies: int) -> None:
        """``copies`` local mailboxes durably received a message."""
        self._metric(MESSAGES_DELIVERED).inc(copies)

    def message_rejected(self, reason: str) -> None:
        """SMTP refused a message after its content (see :data:`MESSAGES_REJECTED`)."""
        self._metric(MESSAGES_REJECTED, reason).inc()

    def recipient_rejected(self, reason: str) -> None:
        """SMTP refused a RCPT TO address (see :data:`RECIPIENTS_REJECTED`)."""
        self._metric(RECIPIENTS_REJECTED, reason).inc()

    def outbound_result(self, state: str) -> None:
        """An outbound attempt left a recipient ``delivered``, ``deferred`` or ``bounced``."""
        self._metric(OUTBOUND, state).inc()

    # --- the store's writers (mailserverd.store.writer)

    def batch_observer(self, env: str) -> Callable[[int, float], None]:
        """What the writer of environment ``env`` calls after each successful
        commit with the batch's operation count and the seconds it took."""
        seconds = self._metric(COMMIT_SECONDS, env)
        operations = self._metric(BATCH_OPERATIONS, env)

        def observe(count: int, elapsed: float) -> None:
            seconds.observe(elapsed)
            operations.observe(count)

        return observe

