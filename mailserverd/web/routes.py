"""The HTTP gateway's core: requests in, responses out, one route table.

:class:`Gateway` holds the services a running server gives the gateway
(store, delivery, authenticator, queue, clock) and :data:`ROUTES` says
which handler serves which method and path, and whether the route is on
the plain-HTTP listener too (autoconfig only). A handler takes the gateway,
an :class:`HTTPRequest` (the facts of the request, read by the adapter in
:mod:`.site`) and the path's ``{id}`` (or ``""``) and returns an
:class:`HTTPResponse` or a Deferred of one; it refuses by raising a
:class:`~.problems.Problem`. Nothing here touches a socket or twisted.web.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from mailserverd.errors import fresh
from mailserverd.mail.address import AddressError, canonical, parse_address, split
from mailserverd.web import api, autoconfig, problems
from mailserverd.ratelimit import TokenBuckets
from mailserverd.web.wire import XML, HTTPRequest, HTTPResponse, json_response, problem_response

log = Logger(namespace="mailserverd.web")

class Gateway:
    """The services the routes use (see the module docstring), read from
    ``ctx`` (the server's :class:`~mailserverd.context.ServerContext`) at each
    use, so that a reload's new config applies at once.

    Through ``ctx``: ``config``; ``store`` (mail store and directory);
    ``delivery``, the :class:`~mailserverd.delivery.local.LocalDelivery` that
    port 587 uses; ``authenticator``; ``queue_store`` (the
    :class:`~mailserverd.store.queuestore.QueueStore`, or None); ``clock``.
    ``in_thread(f, *args)`` runs CPU-heavy pure work (JSON, MIME) off the
    reactor thread and returns a Deferred.
    """

    def __init__(self, ctx: Any, in_thread: Callable[..., Deferred]):
        self.ctx = ctx
        self.in_thread = in_thread
        limits = ctx.config.limits
        self.rate = TokenBuckets.per_minute(ctx.clock, limits.http_requests_per_minute, limits.http_requests_burst)
        #: (user, idempotency key) of sends in progress (a retry meanwhile gets 409).
        self.sending: set[tuple[str, str]] = set()

    config = property(lambda self: self.ctx.config)
    store = property(lambda self: self.ctx.store)
    delivery = property(lambda self: self.ctx.delivery)
    authenticator = property(lambda self: self.ctx.authenticator)
    queue = property(lambda self: self.ctx.queue_store)
    clock = property(lambda self: self.ctx.clock)

    @property
    def limits(self) -> Any:
        return self.config.limits

    def https_base(self) -> str:
        """``https://hostname[:port]`` of the first https listener (the API's address)."""
        host = self.config.server.hostname
        ports = [listener.port for listener in self.config.listeners if listener.kind == "https"]
        port = ports[0] if ports else 443
        return f"https://{host}" + ("" if port == 443 else f":{port}")

    def dispatch(self, request: HTTPRequest) -> Deferred:
        """Serve ``request``: a Deferred that fires with an HTTPResponse (never fails;
        an unexpected error is logged and answered 500)."""
        answered = maybeDeferred(self._route, request)
        answered.addErrback(self._refusal, request)
        return answered

    def _route(self, request: HTTPRequest) -> Any:
        allowed: list[str] = []
        for route in ROUTES:
            matched = route.match(request.path)
            if matched is None or (not request.secure and not route.plain):
                continue
            allowed += route.methods
            if request.method in route.methods or (request.method == "HEAD" and "GET" in route.methods):
                return route.handler(self, request, matched)
        if allowed:  # RFC 9110 §15.5.6: a 405 lists the methods that are
            raise replace(problems.METHOD_NOT_ALLOWED, headers=(("Allow", ", ".join(allowed)),),
                          detail=f"{request.method} is not allowed on {request.path}")
        raise fresh(problems.NOT_FOUND)

    def _refusal(self, failure: Failure, request: HTTPRequest) -> HTTPResponse:
        if failure.check(problems.Problem):
            return problem_response(failure.value)
        log.failure("http-error method={method} path={path}", failure, method=request.method,
                    path=request.path)
        return problem_response(problems.INTERNAL)


@dataclass(frozen=True)
class Route:
    """``methods`` on ``pattern`` (``{id}`` matches one path segment) served by
    ``handler``; ``plain``: also on the plain-HTTP listener; ``fold``: the
    path is matched case-insensitively (Outlook asks for /Autodiscover/...)."""

    methods: tuple[str, ...]
    pattern: str
    handler: Callable[[Gateway, HTTPRequest, str], Any]
    plain: bool = False
    fold: bool = False

    @cached_property
    def _regex(self) -> re.Pattern:
        regex = re.escape(self.pattern).replace(re.escape("{id}"), "([A-Za-z0-9_-]{1,64})")
        return re.compile(regex, re.IGNORECASE if self.fold else 0)

    def match(self, path: str) -> str | None:
        """``""`` or the ``{id}`` segment when ``path`` matches, else None."""
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return found.group(1) if found.groups() else ""


# --- autoconfig and autodiscover


def _served_domain(gateway: Gateway, address: str, host: str = "") -> tuple[str, str]:
    """(address, domain) for a setup request: from the address if given, else
    from an ``autoconfig.``/``autodiscover.`` Host. The domain must be ours:
    Problem 404 otherwise (and 400 for an address that does not parse)."""
    domain = ""
    if address:
        try:
            address = parse_address(address)
            domain = canonical(address).rpartition("@")[2]
            split(address)
        except AddressError as error:
            raise problems.BAD_ADDRESS.with_detail(str(error)) from None
    else:
        name = host.split(":")[0].lower().rstrip(".")
        for prefix in ("autoconfig.", "autodiscover."):
            if name.startswith(prefix):
                domain = name[len(prefix):]
    if not domain or gateway.store.get_domain(domain) is None:
        raise fresh(problems.UNKNOWN_DOMAIN)
    return address, domain


def serve_autoconfig(gateway: Gateway, request: HTTPRequest, _: str) -> HTTPResponse:
    """Thunderbird's config-v1.1.xml for the ``emailaddress`` parameter's domain."""
    host = request.headers.get("host", b"").decode("latin-1")
    _, domain = _served_domain(gateway, request.arg("emailaddress"), host)
    servers = autoconfig.mail_servers(gateway.config.listeners)
    return HTTPResponse(200, autoconfig.render_autoconfig(domain, gateway.config.server.hostname, servers),
                        XML)


def serve_autodiscover(gateway: Gateway, request: HTTPRequest, _: str) -> HTTPResponse:
    """POX autodiscover: the settings for the request's EMailAddress (404 POX error if not ours)."""
    try:
        address, _domain = _served_domain(gateway, autoconfig.parse_autodiscover_request(request.body))
    except problems.Problem as problem:
        code = "603" if problem.status == 404 else "600"
        return HTTPResponse(problem.status, autoconfig.render_autodiscover_error(code, problem.title), XML)
    servers = autoconfig.mail_servers(gateway.config.listeners)
    return HTTPResponse(200, autoconfig.render_autodiscover(address, gateway.config.server.hostname,
                                                            servers), XML)


def serve_autodiscover_json(gateway: Gateway, request: HTTPRequest, _: str) -> HTTPResponse:
    """The JSON variant (``?Email=...&Protocol=AutodiscoverV1``): where the POX
    endpoint for that address is, as Microsoft's autodiscover.json answers."""
    _served_domain(gateway, request.arg("email"))
    protocol = request.arg("protocol")
    if protocol.lower() != "autodiscoverv1":
        raise problems.BAD_REQUEST.with_detail("only Protocol=AutodiscoverV1 is served")
    return json_response(200, {"Protocol": "AutodiscoverV1",
                               "Url": gateway.https_base() + "/autodiscover/autodiscover.xml"})


def serve_openapi(gateway: Gateway, request: HTTPRequest, _: str) -> HTTPResponse:
    from mailserverd.web.openapi import document

    return json_response(200, document(gateway.https_base()))


#: Every path the gateway serves.
ROUTES: tuple[Route, ...] = (
    Route(("GET",), "/.well-known/autoconfig/mail/config-v1.1.xml", serve_autoconfig, plain=True),
    Route(("GET",), "/mail/config-v1.1.xml", serve_autoconfig, plain=True),
    Route(("POST",), "/autodiscover/autodiscover.xml", serve_autodiscover, fold=True),
    Route(("GET",), "/autodiscover/autodiscover.json", serve_autodiscover_json, fold=True),
    Route(("GET",), "/api/v1/openapi.json", serve_openapi),
    Route(("POST",), "/api/v1/messages", api.send_message),
    Route(("GET",), "/api/v1/messages/{id}", api.message_status),
)

