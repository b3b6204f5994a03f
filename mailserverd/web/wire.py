"""HTTP requests and responses as the gateway's core sees them (no twisted.web)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mailserverd.web import problems

JSON = b"application/json"
XML = b"application/xml"


@dataclass(frozen=True)
class HTTPRequest:
    """What a handler may know of a request: ``method``, ``path`` (decoded, no
    query), ``query`` (name -> values), ``headers`` (lower-case name -> last
    value), ``body``, the client's ``client_ip``, ``secure`` (TLS), ``tls``
    (version and cipher for Received:, or ``""``) and the ``port`` it came in on."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, bytes] = field(default_factory=dict)
    body: bytes = b""
    client_ip: str = ""
    secure: bool = True
    tls: str = ""
    port: int = 443

    def arg(self, name: str) -> str:
        """The first value of query parameter ``name`` (case-insensitive), or ``""``."""
        for key, values in self.query.items():
            if key.lower() == name.lower() and values:
                return values[0]
        return ""

    def media_type(self) -> str:
        """The Content-Type's type/subtype, lower-case, without parameters."""
        return self.headers.get("content-type", b"").split(b";")[0].strip().lower().decode("latin-1")


@dataclass(frozen=True)
class HTTPResponse:
    """``status``, ``body``, its ``content_type`` and more ``headers`` ((name, value) pairs)."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, document: object, headers: tuple = ()) -> HTTPResponse:
    return HTTPResponse(status, json.dumps(document, ensure_ascii=False).encode("utf-8"), JSON, headers)


def problem_response(problem: problems.Problem) -> HTTPResponse:
    return HTTPResponse(problem.status, problems.render(problem), problems.CONTENT_TYPE, problem.headers)
