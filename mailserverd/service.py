"""The composition root: the only place that picks concrete classes and builds listeners.

:class:`MailServer` opens the store, builds the shared services into a
:class:`~mailserverd.context.ServerContext`, and listens on every configured
listener, wrapping the implicit-TLS ones (smtps, imaps, pop3s) in TLS.

Its life as a service: started as root it binds (or takes systemd's
sockets), opens the store and TLS files, then drops to ``[server] user``
before it accepts; it tells systemd READY/RELOADING/STOPPING and pings the
watchdog (:mod:`mailserverd.sdnotify`); :meth:`MailServer.reload` (SIGHUP)
applies a new config or keeps the old one; :meth:`MailServer.stop`
(SIGTERM) ends the sessions within ``shutdown_timeout`` and drains the store.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserverd import listeners, privileges
from mailserverd.abuse import AbuseGuard
from mailserverd.auth.accounts import Authenticator
from mailserverd.config import Config, ListenerConfig, load_config
from mailserverd.connlimit import ConnectionCounter, LimitedFactory
from mailserverd.context import ServerContext
from mailserverd.delivery.bayes import SpamClassifier
from mailserverd.delivery.checks import InboundChecks, InboundSettings
from mailserverd.delivery.local import LocalDelivery
from mailserverd.delivery.spamtrainer import SpamTrainer
from mailserverd.errors import ConfigError
from mailserverd.log import set_level
from mailserverd.metrics import (QUEUE_ENTRIES, SEARCH_LAG, STORE_MAP_SIZE, STORE_READERS, STORE_USED,
                                 Metrics)
from mailserverd.reload import merge_reload
from mailserverd.sdnotify import Notifier
from mailserverd.search.indexer import Indexer
from mailserverd.search.pool import SearchPool
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.queuestore import QueueStore
from mailserverd.store.sealing import load_keyring
from mailserverd.tls import ServerTLS, TLSSettings, TLSSetupError, build_client_context

log = Logger(namespace="mailserverd.service")


def tls_settings(config: Config) -> TLSSettings:
    """The ``[tls]`` table as what :mod:`mailserverd.tls` builds contexts from."""
    return TLSSettings(
        cert=str(config.tls.cert),
        key=str(config.tls.key),
        min_version=config.tls.min_version,
        ciphers=config.tls.ciphers,
    )


def inbound_settings(config: Config) -> InboundSettings:
    """The inbound checks' settings from ``[inbound]`` and ``[dns]``."""
    inbound = config.inbound
    return InboundSettings(
        authserv_id=inbound.authserv_id or config.server.hostname,
        resolver=config.dns.resolver_address,
        dns_timeout=float(config.dns.timeout),
        spf=inbound.spf, dkim=inbound.dkim, dmarc=inbound.dmarc,
        dmarc_reject_action=inbound.dmarc_reject_action,
        dnsbl_zones=inbound.dnsbl_zones,
        junk_threshold=inbound.junk_threshold,
        reject_threshold=inbound.reject_threshold,
        pool_size=config.limits.inbound_threads,
        dkim_signatures_max=config.limits.dkim_signatures_max,
        spf_time_limit=float(config.limits.spf_check_timeout),
        dns_cache_entries=config.limits.dns_cache_entries,
        spf_cache_seconds=float(config.limits.spf_cache_seconds),
    )


def outbound_settings(config: Config):
    """The outbound SMTP client's settings from ``[outbound]`` and ``[limits]``."""
    from mailserverd.queue.attempt import OutboundSettings
    from mailserverd.smtp.client import ClientTimeouts

    limits = config.limits
    return OutboundSettings(
        port=config.outbound.port, helo_name=config.outbound.helo_name or config.server.hostname,
        starttls=config.outbound.starttls, timeouts=ClientTimeouts.from_limits(limits),
        connect_timeout=float(limits.smtp_client_connect_timeout),
        reply_line_max=limits.smtp_client_reply_line_max,
        reply_lines_max=limits.smtp_client_reply_lines_max,
    )


def build_outbound(config: Config, reactor: Any, queue_store: QueueStore, store: LMDBStore,
                   delivery: LocalDelivery):
    """The outbound queue's scheduler, delivering through MX routing on the configured resolver."""
    from mailserverd.delivery.dns import AsyncResolver
    from mailserverd.queue.attempt import DeliveryAttempts
    from mailserverd.queue.dkimsign import DKIMSigner
    from mailserverd.queue.routing import Router
    from mailserverd.queue.scheduler import QueueScheduler

    def is_local(domain: str) -> bool:
        return store.get_domain(domain) is not None

    router = Router(AsyncResolver(config.dns.resolver_address, float(config.dns.timeout), reactor))
    attempts = DeliveryAttempts(reactor, router, delivery, is_local, outbound_settings(config),
                                build_client_context(config.tls.min_version, config.tls.ciphers))
    signer = DKIMSigner(str(config.server.data_dir), is_local, config.limits.dkim_sign_threads, reactor)
    return QueueScheduler(queue_store, attempts, reactor, config.limits, config.server.hostname,
                          signer=signer)


def keyring_of(config: Config):
    """The keyring of the master key ``[encryption]`` names, or None (no
    encryption at rest). Raises MasterKeyError."""
    return load_keyring(config.encryption.master_key_file, config.encryption.master_key_credential)


def open_queue(config: Config, reactor: Any = None) -> QueueStore:
    """Open (creating if needed) the outbound queue in ``data_dir/queue``, its
    contents sealed as the store's (``[encryption]``); raises StoreError."""
    return QueueStore.open(str(config.server.data_dir), config.limits, reactor=reactor, keyring=keyring_of(config))


def open_store(config: Config, reactor: Any = None, keyring: Any = None) -> LMDBStore:
    """Open (creating if needed) the store the config names, encrypted at rest if
    ``[encryption]`` names a master key (or with ``keyring``, when given);
    raises StoreError (MasterKeyError too)."""
    if keyring is None:
        keyring = keyring_of(config)
    return LMDBStore.open(str(config.server.data_dir), config.server.shards, config.limits, reactor=reactor,
                          keyring=keyring)


def protocol_factory(ctx: ServerContext, listener: ListenerConfig, counter: ConnectionCounter):
    """The protocol factory for one listener: connection limits inside, TLS outside for implicit TLS."""
    if listener.protocol == "smtp":
        from mailserverd.smtp.adapter import build_factory
    elif listener.protocol == "imap":
        from mailserverd.imap.adapter import build_factory
    elif listener.protocol == "http":
        from mailserverd.web.site import build_factory
    else:
        from mailserverd.pop3.adapter import build_factory
    inner = build_factory(ctx, listener)
    factory = LimitedFactory(inner, counter, listener.protocol, listener.kind, ctx.metrics, ctx.abuse)
    if listener.implicit_tls:
        # RFC 8314 §3: implicit TLS, the TLS handshake comes before any protocol byte.
        factory = TLSMemoryBIOFactory(ctx.tls.server_creator(), False, factory)
    for layer in {inner, factory, getattr(factory, "wrappedFactory", factory)}:
        layer.noisy = False  # our own "ready" and "connection" lines say it better
    return factory


def instrument_store(metrics: Metrics, writers: list) -> None:
    """Have each store writer (:class:`~mailserverd.store.writer.EnvWriter`)
    report its group commits to ``metrics``, and the store gauges read each
    writer's environment (by the writer's name: meta, shard-NN, queue) at scrape time."""
    for writer in writers:
        writer.observe_batch = metrics.batch_observer(writer.name)

    def gauge(field: str):
        def read() -> dict:
            usages = ((writer.name, writer.store_env.usage()) for writer in writers)
            return {(name,): getattr(usage, field) for name, usage in usages if usage is not None}
        return read

    for spec, field in ((STORE_USED, "used_bytes"), (STORE_MAP_SIZE, "map_size"),
                        (STORE_READERS, "readers")):
        metrics.set_source(spec, gauge(field))


class MailServer:
    """One running mailserverd: store, services and listeners.

    ``start()`` returns a Deferred that fires once every listener accepts
    (or fails with the first error after closing what was opened);
    ``reload()`` re-reads the config file; ``stop()`` ends the sessions,
    stops listening, stops the pools and drains the store's writers so that
    every acknowledged write is committed. ``notifier`` tells systemd about
    each (by default nobody is told).
    """

    def __init__(self, config: Config, reactor: Any, notifier: Notifier | None = None):
        self.config = config
        self.reactor = reactor
        self.notifier = notifier or Notifier({})
        self.store: LMDBStore | None = None
        self.queue_store: QueueStore | None = None
        self.scheduler = None
        self.classifier: SpamClassifier | None = None
        self.trainer: SpamTrainer | None = None
        self.indexer: Indexer | None = None
        self.ctx: ServerContext | None = None
        self.ports: list = []
        self.connections = ConnectionCounter(config.limits.connections_max,
                                             config.limits.connections_per_ip_max)
        self.metrics = Metrics()
        self._account: privileges.Account | None = None
        self._sockets: list = []
        self._watchdog = None

    def prepare(self) -> None:
        """Check who to run as, take systemd's sockets, load TLS and open the store,
        synchronously, before the reactor runs.

        Started as root with ``[server] user``, the data dir is then given to
        that user. Raises TLSSetupError, StoreError, PrivilegeError or
        ListenerError with a message for a person.
        """
        if self.store is not None:
            return
        server = self.config.server
        if server.user:
            self._account = privileges.resolve(server.user, server.group)
            if not privileges.needs_drop(server.user):
                privileges.check_unprivileged(self._account)
        if server.socket_activation:
            self._sockets = listeners.match_sockets(self.config.listeners,
                                                    listeners.passed_sockets())
        self._tls = ServerTLS(tls_settings(self.config))
        self.store = open_store(self.config, self.reactor)
        self.queue_store = open_queue(self.config, self.reactor)
        if self._account is not None and privileges.needs_drop(server.user):
            changed = privileges.give_data_dir(str(server.data_dir), self._account)
            if changed:
                log.info("data-dir-owner user={user} changed={changed}",
                         user=self._account.user, changed=changed)

    @defer.inlineCallbacks
    def start(self):
        config = self.config
        self.prepare()
        try:
            self._start_services()
            self._listen_all()
            self._drop_privileges()
        except Exception:
            yield self.stop()  # a half-started server must not keep its threads alive
            raise
        listeners.resume(self.ports)
        self.scheduler.start()
        if config.auth.allow_plaintext:
            log.warn("auth-plaintext-allowed: [auth] allow_plaintext is on: passwords may cross the "
                     "network in clear text (LOGIN, USER/PASS and AUTH are accepted before TLS)")
        log.info(
            "ready listeners={listeners} data_dir={data_dir} shards={shards}",
            listeners=" ".join(f"{l.kind}:{l.address}:{l.port}" for l in config.listeners),
            data_dir=str(config.server.data_dir),
            shards=config.server.shards,
        )
        self.notifier.ready(f"serving {len(self.ports)} listeners")
        self._watchdog = self.notifier.start_watchdog(self.reactor)

    def _start_services(self) -> None:
        """Start the store's writers and build and start the services into ``self.ctx``
        (set before anything that can fail after the store started, so stop() undoes it)."""
        config = self.config
        self.store.start()
        self.queue_store.start()
        instrument_store(self.metrics, [self.store.meta_writer, *self.store.shard_writers,
                                        self.queue_store.writer])
        queue_store = self.queue_store
        self.metrics.set_source(QUEUE_ENTRIES, lambda: {
            (state,): count for state, count in (queue_store.count_by_state() or {}).items()})
        authenticator = Authenticator(self.store, config.limits, self.reactor, reactor=self.reactor,
                                      metrics=self.metrics)
        self.classifier = SpamClassifier(self.store, config.limits)
        checks = InboundChecks(inbound_settings(config), reactor=self.reactor, classifier=self.classifier)
        delivery = LocalDelivery(self.store, config.server.hostname, self.reactor,
                                 delimiter=config.delivery.recipient_delimiter, checks=checks,
                                 metrics=self.metrics)
        self.ctx = ServerContext(
            config=config,
            store=self.store,
            authenticator=authenticator,
            delivery=delivery,
            tls=self._tls,
            clock=self.reactor,
            metrics=self.metrics,
            queue_store=self.queue_store,
            search=SearchPool(self.reactor, config.limits),
            abuse=AbuseGuard(self.reactor, config.limits, config.abuse, self.metrics),
        )
        authenticator.start()
        checks.start()
        self.ctx.search.start()
        self.trainer = SpamTrainer(self.store, config.limits, self.reactor)
        self.trainer.start()
        self._start_indexer()
        self.scheduler = build_outbound(config, self.reactor, self.queue_store, self.store, delivery)
        self.scheduler.metrics = self.metrics
        delivery.outbound = self.scheduler

    def _start_indexer(self) -> None:
        """Follow the change logs into the search index, its lag a sampled metric."""
        store = self.store
        self.indexer = Indexer(store, self.config.limits, self.reactor)
        self.metrics.set_source(SEARCH_LAG, lambda: {
            (str(number),): store.last_seq(number) - store.search_seq(number)
            for number in range(store.shards)})
        self.indexer.start()

    def _listen_all(self) -> None:
        """Listen on every listener (systemd's sockets, or bound here), accepting paused."""
        sockets = self._sockets or [None] * len(self.config.listeners)
        self._sockets = []
        for listener, sock in zip(self.config.listeners, sockets):
            factory = protocol_factory(self.ctx, listener, self.connections)
            self.ports.append(listeners.listen(self.reactor, listener, factory, sock,
                                               self.config.limits.listen_backlog))
        endpoint = self.config.metrics
        if endpoint.enabled:
            from mailserverd.web import metrics as metrics_endpoint

            self.ports.append(metrics_endpoint.listen(self.reactor, endpoint, self.metrics.registry,
                                                      self.config.limits.metrics_idle_timeout))
            log.info("metrics-endpoint url=http://{host}:{port}/metrics", port=endpoint.port,
                     host=f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address)

    def _drop_privileges(self) -> None:
        """Become ``[server] user`` if we are root; raises PrivilegeError if that fails."""
        account = self._account
        if account is None or not privileges.needs_drop(account.user):
            return
        privileges.drop_privileges(account)
        log.info("privileges-dropped user={user} uid={uid} gid={gid}",
                 user=account.user, uid=account.uid, gid=account.gid)

    def reload(self) -> None:
        """Re-read the config file and the certificates (SIGHUP) and apply them.

        A config with errors, or a certificate that cannot be loaded, is
        logged (every problem) and changes nothing. Keys that need a restart
        (:mod:`mailserverd.reload`) keep their running value and are logged.
        """
        if self.ctx is None:
            log.warn("reload-ignored reason=not-running")
            return
        self.notifier.reloading()
        try:
            self._apply(self._reread())
        except (ConfigError, TLSSetupError) as error:
            problems = error.problems if isinstance(error, ConfigError) else [str(error)]
            log.error("reload-failed path={path} errors={count}: {problems}; the running "
                      "config stays in force", path=self.config.path or "-",
                      count=len(problems), problems="; ".join(problems))
        finally:
            self.notifier.ready()

    def _reread(self) -> Config:
        """The config file again (the running config when it did not come from a file)."""
        return load_config(self.config.path) if self.config.path else self.config

    def _apply(self, new: Config) -> None:
        """Run with ``new`` from now on; raises TLSSetupError before changing anything."""
        old = self.config
        config, kept = merge_reload(old, new)
        self._tls.reload(tls_settings(config))  # the only step that can fail: first
        self.config = self.ctx.config = config
        self.connections.total_max = config.limits.connections_max
        self.connections.per_ip_max = config.limits.connections_per_ip_max
        self.ctx.abuse.configure(config.limits, config.abuse)
        set_level(config.log.level)
        settings = inbound_settings(config)
        if settings != inbound_settings(old):
            checks = InboundChecks(settings, reactor=self.reactor, classifier=self.classifier)
            checks.start()
            retired = self.ctx.delivery.use_checks(checks)
            # Its pool's stop waits for running checks: never on the reactor thread.
            threading.Thread(target=retired.stop, name="inbound-checks-retire", daemon=True).start()
        for key in kept:
            log.warn("reload-kept key={key}: changing it needs a restart; the running value stays",
                     key=key)
        log.info("reloaded path={path} kept={kept}", path=config.path or "-", kept=len(kept))

    @defer.inlineCallbacks
    def stop(self):
        self.notifier.stopping()
        ports, self.ports = self.ports, []
        yield defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        forced = yield self.connections.drain(self.reactor, self.config.limits.shutdown_timeout)
        if forced:
            log.warn("shutdown-forced connections={forced} timeout={timeout}", forced=forced,
                     timeout=self.config.limits.shutdown_timeout)
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.trainer is not None:
            trainer, self.trainer = self.trainer, None
            yield trainer.stop()
        if self.indexer is not None:
            indexer, self.indexer = self.indexer, None
            yield indexer.stop()
        if self.ctx is not None:
            ctx, self.ctx = self.ctx, None
            ctx.authenticator.stop()
            ctx.search.stop()
            ctx.delivery.stop()
        if self.queue_store is not None:
            queue_store, self.queue_store = self.queue_store, None
            yield queue_store.stop()
        if self.store is not None:
            store, self.store = self.store, None
            yield store.stop()
        log.info("stopped")
