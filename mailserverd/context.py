"""What a protocol factory is given: the services of one running server.

Built once by :mod:`mailserverd.service` (the composition root) and passed to
each protocol's ``build_factory(ctx, listener)``. Protocol code reads only
these attributes; it never builds a store, a TLS context or a pool itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailserverd.metrics import Metrics

if TYPE_CHECKING:  # pragma: no cover - imports only for type checkers
    from twisted.internet.interfaces import IReactorTime

    from mailserverd.auth.accounts import Authenticator
    from mailserverd.config import Config
    from mailserverd.delivery.local import LocalDelivery
    from mailserverd.tls import ServerTLS


@dataclass
class ServerContext:
    """The running server's shared services.

    ``store`` implements both :class:`~mailserverd.store.interface.Directory`
    and :class:`~mailserverd.store.interface.MailStore`. ``tls.server_creator()``
    is what ``transport.startTLS`` takes for STARTTLS/STLS. ``clock`` is the
    reactor (or a ``Clock`` in tests) for timeouts. Connection limits live in
    the listeners' wrapping factories (:mod:`mailserverd.connlimit`), outside
    the protocols. ``metrics`` is the server's :class:`~mailserverd.metrics.Metrics`
    (a fresh, unserved one by default).
    """

    config: "Config"
    store: "Any"  # implements store.interface.Directory and store.interface.MailStore
    authenticator: "Authenticator"
    delivery: "LocalDelivery"
    tls: "ServerTLS"
    clock: "IReactorTime"
    metrics: Metrics = field(default_factory=Metrics)
    #: The outbound queue's store (:class:`~mailserverd.store.queuestore.QueueStore`),
    #: read by the HTTP gateway's status endpoint; None when not opened.
    queue_store: "Any" = None
    #: The :class:`~mailserverd.search.pool.SearchPool` where IMAP searches run
    #: against the search index; None (sessions built without a server): they scan.
    search: "Any" = None
    #: The :class:`~mailserverd.abuse.AbuseGuard` of the shared abuse limits; None
    #: (sessions built without a server): no rate or session-count limits.
    abuse: "Any" = None
