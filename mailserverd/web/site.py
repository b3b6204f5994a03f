"""The twisted.web adapter of the HTTP gateway: one Site per https/http listener.

Thin by design: :class:`GatewayResource` turns each twisted.web request into
an :class:`~.wire.HTTPRequest`, hands it to the :class:`~.routes.Gateway`
and writes the :class:`~.wire.HTTPResponse` it gets back. What this layer
adds is what only the transport can do:

- the body limit (``http_body_max``): a Content-Length above it is answered
  413 before a byte of the body is read, and a chunked body that grows past
  it is cut off the same way; the refused connection then ends its side
  but reads and drops what the client still sends, up to another
  ``http_body_max`` (a "lingering close", RFC 9112 §9.6), so that the client
  reads the 413 rather than a reset;
- bodies are kept in memory (bounded by that limit), never in the temporary
  file twisted.web would write from the reactor thread;
- ``shut_down`` for the server's drain on SIGTERM (:mod:`mailserverd.connlimit`);
- the plain-HTTP listener (kind ``http``) serves only the routes marked
  ``plain`` (autoconfig): everything else is 404 there.

TLS is outside, as for the mail ports: the listener's factory is wrapped in
the one TLS context of :mod:`mailserverd.tls` by the composition root.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import unquote

from twisted.internet.threads import deferToThreadPool
from twisted.web import http, server
from twisted.web.resource import Resource

from mailserverd import tls
from mailserverd.web import problems
from mailserverd.web.routes import Gateway
from mailserverd.web.wire import HTTPRequest, HTTPResponse


class GatewayChannel(http.HTTPChannel):
    """An HTTPChannel that can refuse a request before its body (413) and
    that the server can shut down."""

    _refused_left: int | None = None  # bytes still dropped after a refusal, or None

    def refuse(self, problem: problems.Problem) -> None:
        """Answer ``problem`` now, ahead of the body, and stop reading requests."""
        if self._refused_left is not None:
            return
        self._refused_left = self.site.body_max
        self.persistent = False
        body = problems.render(problem)
        reason = http.RESPONSES.get(problem.status, b"Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (problem.status, reason,
                                                               problems.CONTENT_TYPE, len(body), body))
        # Over TLS this sends close_notify after the reply and goes on reading until the
        # client closes (or the idle timeout): the client sees the 413, then the end.
        self.loseConnection()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        if self._refused_left is None:
            return super().dataReceived(data)
        self._refused_left -= len(data)
        if self._refused_left <= 0:
            self.transport.abortConnection()  # it will not stop: enough has been read

    def loseConnection(self) -> None:  # noqa: N802 (Twisted's name)
        super().loseConnection()
        # Over TLS the connection stays until the client's close_notify: the idle
        # timeout (off while a request was served) still ends one that never sends it.
        if self.timeOut is None and self._savedTimeOut:
            self.setTimeout(self._savedTimeOut)

    def shut_down(self, force: bool = False) -> None:
        """The server is stopping: an idle connection is closed at once (RFC 9112
        §9.6 lets a server close an idle connection at any time; nothing is in
        flight), one serving a request after its response; ``force`` aborts."""
        self.persistent = False
        if force or (not self.requests and self._refused_left is None):
            self.transport.abortConnection()


class GatewayRequest(server.Request):
    """A request whose body is held in memory and bounded (see the module docstring)."""

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
        self.content = BytesIO()
        self._received = 0
        if length is not None and length > self.channel.site.body_max:
            self.channel.refuse(problems.TOO_LARGE.with_detail(
                f"Content-Length {length} exceeds {self.channel.site.body_max} octets"))

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self._received += len(data)
        if self._received > self.channel.site.body_max:
            self.channel.refuse(problems.TOO_LARGE.with_detail(
                f"the body exceeds {self.channel.site.body_max} octets"))
            return
        self.content.write(data)

    def process(self) -> None:
        if self.channel._refused_left is None:  # a refused request is never run
            super().process()


class GatewaySite(server.Site):
    """The Site of one listener; ``body_max`` is ``http_body_max``."""

    requestFactory = GatewayRequest
    protocol = GatewayChannel

    def __init__(self, resource: Resource, body_max: int, **kwargs: Any):
        super().__init__(resource, **kwargs)
        self.body_max = body_max

    def log(self, request) -> None:
        """No access log line per request: the gateway logs what matters."""


class GatewayResource(Resource):
    """Every path, served by the gateway's route table."""

    isLeaf = True

    def __init__(self, gateway: Gateway, secure: bool, port: int):
        super().__init__()
        self._gateway = gateway
        self._secure = secure
        self._port = port

    def render(self, request) -> Any:
        facts = HTTPRequest(
            method=request.method.decode("ascii", "replace").upper(),
            path=unquote(request.path.decode("utf-8", "replace")),
            query={key.decode("utf-8", "replace"): [value.decode("utf-8", "replace") for value in values]
                   for key, values in (request.args or {}).items()},
            headers={name.decode("latin-1").lower(): values[-1]
                     for name, values in request.requestHeaders.getAllRawHeaders()},
            body=request.content.getvalue() if request.content is not None else b"",
            client_ip=getattr(request.getClientAddress(), "host", ""),
            secure=self._secure,
            tls=tls.describe(request.channel.transport) if self._secure else "",
            port=self._port,
        )
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        answered = self._gateway.dispatch(facts)
        answered.addCallback(self._write, request, gone)
        return server.NOT_DONE_YET

    @staticmethod
    def _write(response: HTTPResponse, request, gone: list[bool]) -> None:
        if gone:
            return  # the client went away; the work done stands (a send is durable)
        request.setResponseCode(response.status)
        request.setHeader(b"Server", b"mailserverd")  # not twisted.web's name and version
        request.setHeader(b"Content-Type", response.content_type)
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in response.headers:
            request.responseHeaders.addRawHeader(name.encode("latin-1"), value.encode("latin-1"))
        request.setHeader(b"Content-Length", b"%d" % len(response.body))
        if request.method != b"HEAD":
            request.write(response.body)
        request.finish()


def build_factory(ctx: Any, listener: Any) -> GatewaySite:
    """The Site for one ``https`` or ``http`` listener, serving from ``ctx``'s services."""
    reactor = ctx.clock

    def in_thread(function, *args):
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    # One gateway per listener: request rates are counted per listener (one https port, as a rule).
    gateway = Gateway(ctx, in_thread)
    resource = GatewayResource(gateway, secure=listener.kind == "https", port=listener.port)
    site = GatewaySite(resource, ctx.config.limits.http_body_max,
                       timeout=ctx.config.limits.http_idle_timeout, reactor=reactor)
    site.displayTracebacks = False
    return site
