"""The Prometheus endpoint: ``GET /metrics`` over HTTP, from the server's reactor.

twisted.web serves it on ``[metrics] address`` and ``port``. The page is
prometheus_client's ``MetricsResource`` (a WSGI app), which renders the
registry in a thread of the reactor's pool: a scrape, which reads the
store's sizes, never runs on the reactor thread. Only ``/metrics`` exists
(anything else is 404), and only GET (and HEAD) of it (other methods 405).
No access log: Prometheus scrapes every few seconds.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.twisted import MetricsResource
from twisted.internet.error import CannotListenError
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site

from mailserverd.config import MetricsConfig
from mailserverd.listeners import ListenerError


class MetricsPage(Resource):
    """``/metrics``: the registry in Prometheus' text format, for GET only."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry):
        super().__init__()
        self._exposition = MetricsResource(registry)

    def render_GET(self, request):  # noqa: N802 (twisted.web's name)
        return self._exposition.render(request)


class _Site(Site):
    """A Site without an access log (twisted.web writes one to the main log
    unless told otherwise)."""

    def log(self, request) -> None:
        pass


def build_site(registry: CollectorRegistry, idle_timeout: float, reactor: Any) -> Site:
    """The HTTP site serving ``registry`` at ``/metrics``; idle connections
    are closed after ``idle_timeout`` seconds."""
    root = NoResource()  # 404 for every path but its children
    root.putChild(b"metrics", MetricsPage(registry))
    site = _Site(root, timeout=idle_timeout, reactor=reactor)
    site.noisy = False
    site.displayTracebacks = False
    return site


def listen(reactor: Any, config: MetricsConfig, registry: CollectorRegistry,
           idle_timeout: float) -> Any:
    """Listen for scrapes on ``config``'s address and port, accepting paused
    (as :func:`mailserverd.listeners.listen`: resume with the others).
    Raises ListenerError (as a listener would) when the address cannot be bound."""
    site = build_site(registry, idle_timeout, reactor)
    try:
        port = reactor.listenTCP(config.port, site, interface=config.address)
    except CannotListenError as error:
        host = f"[{config.address}]" if ":" in config.address else config.address
        raise ListenerError(f"metrics endpoint on {host}:{config.port}: "
                                   f"{error.socketError}") from None
    port.stopReading()
    return port
