"""The composition root: the only place that picks concrete classes and builds listeners.

:class:`MailServer` opens the store, builds the shared services into a
:class:`~mailserverd.context.ServerContext`, and listens on every configured
listener, wrapping the implicit-TLS ones (smtps, imaps, pop3s) in TLS.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from mailserverd.auth.accounts import Authenticator
from mailserverd.config import Config, ListenerConfig
from mailserverd.connlimit import ConnectionCounter, LimitedFactory
from mailserverd.context import ServerContext
from mailserverd.delivery.checks import InboundChecks, InboundSettings
from mailserverd.delivery.local import LocalDelivery
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.tls import ServerTLS, TLSSettings

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


def open_store(config: Config, reactor: Any = None) -> LMDBStore:
    """Open (creating if needed) the store the config names; raises StoreError."""
    return LMDBStore.open(str(config.server.data_dir), config.server.shards, config.limits, reactor=reactor)


def protocol_factory(ctx: ServerContext, listener: ListenerConfig, counter: ConnectionCounter):
    """The protocol factory for one listener: connection limits inside, TLS outside for implicit TLS."""
    if listener.protocol == "smtp":
        from mailserverd.smtp.adapter import build_factory
    elif listener.protocol == "imap":
        from mailserverd.imap.adapter import build_factory
    else:
        from mailserverd.pop3.adapter import build_factory
    inner = build_factory(ctx, listener)
    factory = LimitedFactory(inner, counter, listener.protocol)
    if listener.implicit_tls:
        # RFC 8314 §3: implicit TLS, the TLS handshake comes before any protocol byte.
        factory = TLSMemoryBIOFactory(ctx.tls.server_creator(), False, factory)
    for layer in {inner, factory, getattr(factory, "wrappedFactory", factory)}:
        layer.noisy = False  # our own "ready" and "connection" lines say it better
    return factory


class MailServer:
    """One running mailserverd: store, services and listeners.

    ``start()`` returns a Deferred that fires once every listener is bound
    (or fails with the first bind error after closing what was opened);
    ``stop()`` stops listening, stops the password pool and drains the
    store's writers so that every acknowledged write is committed.
    """

    def __init__(self, config: Config, reactor: Any):
        self.config = config
        self.reactor = reactor
        self.store: LMDBStore | None = None
        self.ctx: ServerContext | None = None
        self.ports: list = []
        self.connections = ConnectionCounter(config.limits.connections_max,
                                             config.limits.connections_per_ip_max)

    def prepare(self) -> None:
        """Load TLS material and open the store, synchronously, before the reactor runs.

        Raises TLSSetupError or StoreError with a message for a person; nothing
        is left open on failure.
        """
        if self.store is None:
            self._tls = ServerTLS(tls_settings(self.config))
            self.store = open_store(self.config, self.reactor)

    @defer.inlineCallbacks
    def start(self):
        config = self.config
        self.prepare()
        tls = self._tls
        self.store.start()
        authenticator = Authenticator(self.store, config.limits, self.reactor, reactor=self.reactor)
        authenticator.start()
        checks = InboundChecks(inbound_settings(config), reactor=self.reactor)
        checks.start()
        delivery = LocalDelivery(self.store, config.server.hostname, self.reactor,
                                 delimiter=config.delivery.recipient_delimiter, checks=checks)
        self.ctx = ServerContext(
            config=config,
            store=self.store,
            authenticator=authenticator,
            delivery=delivery,
            tls=tls,
            clock=self.reactor,
        )
        try:
            for listener in config.listeners:
                port = yield self._listen(listener)
                self.ports.append(port)
        except Exception:
            yield self.stop()
            raise
        if config.auth.allow_plaintext:
            log.warn("auth-plaintext-allowed: [auth] allow_plaintext is on: passwords may cross the "
                     "network in clear text (LOGIN, USER/PASS and AUTH are accepted before TLS)")
        log.info(
            "ready listeners={listeners} data_dir={data_dir} shards={shards}",
            listeners=" ".join(f"{l.kind}:{l.address}:{l.port}" for l in config.listeners),
            data_dir=str(config.server.data_dir),
            shards=config.server.shards,
        )

    def _listen(self, listener: ListenerConfig):
        endpoint_class = TCP6ServerEndpoint if ":" in listener.address else TCP4ServerEndpoint
        endpoint = endpoint_class(self.reactor, listener.port, interface=listener.address)
        return endpoint.listen(protocol_factory(self.ctx, listener, self.connections))

    @defer.inlineCallbacks
    def stop(self):
        ports, self.ports = self.ports, []
        yield defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports])
        if self.ctx is not None:
            ctx, self.ctx = self.ctx, None
            ctx.authenticator.stop()
            ctx.delivery.stop()
        if self.store is not None:
            store, self.store = self.store, None
            yield store.stop()
        log.info("stopped")
