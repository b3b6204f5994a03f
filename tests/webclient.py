"""Helpers for the HTTP gateway tests: a daemon with https and http listeners,
API tokens made with the real CLI, and requests through the standard library's
http.client over TLS verified against the test CA (never switched off)."""

from __future__ import annotations

import base64
import http.client
import json
import socket
from dataclasses import dataclass

from conftest import free_ports, make_daemon

ALICE = "alice@example.test"
BOB = "bob@example.test"


def gateway_config(extra: str = "") -> tuple[str, dict[str, int]]:
    """``[[listener]]`` tables for an https and an http listener on free ports (and
    ``extra`` ``[limits]`` lines before them), and the ports they take."""
    https, plain = free_ports(2)
    text = extra + "".join(
        f'\n[[listener]]\nkind = "{kind}"\naddress = "127.0.0.1"\nport = {port}\n'
        for kind, port in (("https", https), ("http", plain)))
    return text, {"https": https, "http": plain}


def gateway_daemon(root, limits: str = "", dns=None, domain: str = "example.test"):
    """A daemon (not started) with ``domain``, alice and bob, and the two HTTP listeners."""
    text, ports = gateway_config(limits)
    d = make_daemon(root, extra_config=text, dns=dns)
    d.ports.update(ports)
    d.cli("domain", "add", domain)
    if domain == "example.test":
        d.add_user(ALICE, "alice-secret-1")
        d.add_user(BOB, "bob-secret-2")
    return d


def create_token(daemon, user: str = ALICE, name: str = "test") -> tuple[str, str]:
    """``(token, id)`` from ``mailserverd token create`` (the token is its first line)."""
    out = daemon.cli("token", "create", user, "--name", name).stdout.splitlines()
    return out[0], out[1].split()[1]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0]


def request(daemon, method: str, path: str, body: bytes | None = None, *, token: str = "",
            basic: tuple[str, str] | None = None, content_type: str = "application/json",
            headers: dict[str, str] | None = None, kind: str = "https") -> Reply:
    """One request to the daemon's ``kind`` listener; any status is returned, not raised."""
    port = daemon.ports[kind]
    if kind == "https":
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=daemon.ssl_context(), timeout=60)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if basic:
        sent["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
    if body is not None and content_type:
        sent["Content-Type"] = content_type
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def send_json(daemon, doc: dict, token: str, **kwargs) -> Reply:
    return request(daemon, "POST", "/api/v1/messages", json.dumps(doc).encode(), token=token, **kwargs)


def tls_socket(daemon) -> socket.socket:
    """A raw TLS connection to the https listener, for requests http.client will not send."""
    raw = socket.create_connection(("127.0.0.1", daemon.ports["https"]), timeout=60)
    return daemon.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1")


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets after its reply)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, OSError):
            return received
        if not chunk:
            return received
        received += chunk
