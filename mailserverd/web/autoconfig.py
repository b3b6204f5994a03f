"""Client setup documents, sans I/O: Thunderbird autoconfig and Outlook autodiscover.

Both describe the listeners actually configured (:func:`mail_servers`): the
IMAP, POP3 and submission ports with their TLS (implicit TLS first, RFC 8314
§5.1 prefers it; STARTTLS after) and password authentication over TLS. The
server name is ``[server] hostname``; the login is the full address. Plain
ports without TLS are never offered, and neither is port 25 (MX).

- Autoconfig: Mozilla's ``clientConfig`` version 1.1, the fields Thunderbird
  reads (``emailProvider/@id``, ``domain``, ``displayName``,
  ``incomingServer``/``outgoingServer`` with ``hostname``, ``port``,
  ``socketType`` SSL or STARTTLS, ``authentication`` password-cleartext,
  ``username``).
- Autodiscover "POX": the request schema's ``EMailAddress`` in, the
  ``outlook/responseschema/2006a`` ``Account`` with one ``Protocol`` per
  server out (``Encryption`` SSL or TLS).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterable

from mailserverd.web import problems

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

# kind -> (protocol, implicit TLS); the order of this table is the order offered.
_MAIL_KINDS = (
    ("imaps", "imap", True), ("imap", "imap", False),
    ("pop3s", "pop3", True), ("pop3", "pop3", False),
    ("smtps", "smtp", True), ("submission", "smtp", False),
)


@dataclass(frozen=True)
class MailServer:
    """One way in for a mail client: ``protocol`` imap, pop3 or smtp, ``port``,
    ``implicit_tls`` (else STARTTLS/STLS)."""

    protocol: str
    port: int
    implicit_tls: bool


def mail_servers(listeners: Iterable) -> list[MailServer]:
    """The client-facing servers among ``listeners`` (``ListenerConfig``), best first,
    each port once."""
    by_kind: dict[str, list[int]] = {}
    for listener in listeners:
        by_kind.setdefault(listener.kind, [])
        if listener.port not in by_kind[listener.kind]:
            by_kind[listener.kind].append(listener.port)
    return [MailServer(protocol, port, implicit)
            for kind, protocol, implicit in _MAIL_KINDS for port in by_kind.get(kind, [])]


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    if text is not None:
        element.text = text
    return element


def render_autoconfig(domain: str, hostname: str, servers: list[MailServer]) -> bytes:
    """Thunderbird's ``config-v1.1.xml`` for ``domain`` served by ``hostname``."""
    root = ET.Element("clientConfig", version="1.1")
    provider = _sub(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"{domain} mail")
    _sub(provider, "displayShortName", domain)
    for server in servers:
        tag = "outgoingServer" if server.protocol == "smtp" else "incomingServer"
        entry = _sub(provider, tag, type=server.protocol)
        _sub(entry, "hostname", hostname)
        _sub(entry, "port", str(server.port))
        _sub(entry, "socketType", "SSL" if server.implicit_tls else "STARTTLS")
        # Passwords only ever cross TLS here: the plain ports require STARTTLS first.
        _sub(entry, "authentication", "password-cleartext")
        _sub(entry, "username", "%EMAILADDRESS%")
    return _xml(root)


def parse_autodiscover_request(body: bytes) -> str:
    """The ``EMailAddress`` of a POX autodiscover request. Raises Problem 400.

    A DOCTYPE is refused before parsing (no entity expansion, no external
    entities: the XML comes from anyone).
    """
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise problems.BAD_REQUEST.with_detail("DOCTYPE is not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise problems.BAD_REQUEST.with_detail("the body is not XML") from None
    found = root.find(f"{{{AUTODISCOVER_REQUEST_NS}}}Request/{{{AUTODISCOVER_REQUEST_NS}}}EMailAddress")
    if found is None:
        found = root.find("Request/EMailAddress")  # clients that leave out the namespace
    if found is None or not (found.text or "").strip():
        raise problems.BAD_REQUEST.with_detail("no Request/EMailAddress")
    return found.text.strip()


def render_autodiscover(address: str, hostname: str, servers: list[MailServer]) -> bytes:
    """The POX response for ``address``: one Protocol per server."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    response = _sub(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for server in servers:
        protocol = _sub(account, "Protocol")
        _sub(protocol, "Type", server.protocol.upper())
        _sub(protocol, "Server", hostname)
        _sub(protocol, "Port", str(server.port))
        _sub(protocol, "LoginName", address)
        _sub(protocol, "DomainRequired", "off")
        _sub(protocol, "SPA", "off")
        _sub(protocol, "SSL", "on")
        _sub(protocol, "Encryption", "SSL" if server.implicit_tls else "TLS")
        _sub(protocol, "AuthRequired", "on")
    return _xml(root)


def render_autodiscover_error(code: str, message: str) -> bytes:
    """A POX error response (``600`` invalid request, ``603`` unknown user)."""
    root = ET.Element("Autodiscover", xmlns=AUTODISCOVER_RESPONSE_NS)
    error = _sub(_sub(root, "Response"), "Error")
    _sub(error, "ErrorCode", code)
    _sub(error, "Message", message)
    _sub(error, "DebugData", "")
    return _xml(root)
