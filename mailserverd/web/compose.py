"""Turning an API request into a message and its envelope, sans I/O.

Two forms come in (``POST /api/v1/messages``):

- JSON (:func:`compose_json`): ``from``, ``to``/``cc``/``bcc``, ``subject``,
  ``text`` and/or ``html``, extra ``headers``, ``attachments`` (base64
  ``content`` with ``filename`` and ``content_type``). The message is built
  here as RFC 5322 + MIME (RFC 2045-2049), CRLF lines, 7-bit (non-ASCII text
  quoted-printable, names as encoded words, RFC 2047), so any peer takes it.
- a raw message (:func:`compose_raw`, ``message/rfc822``): the envelope comes
  from its From/To/Cc/Bcc fields and Bcc is removed, as ``sendmail -t``
  does; Date and Message-ID are added when missing (RFC 6409 §8.2, §8.3).

Both return a :class:`Composed` or raise a :class:`~.problems.Problem`:
a line break or control character in any header text (header injection),
an address that is not a mailbox (parsed by :mod:`mailserverd.mail.address`,
the one address parser), bad base64, a reserved header. Pure functions:
the caller runs them off the reactor thread (a large body takes a while).
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
import re
import secrets
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser

from mailserverd.errors import fresh
from mailserverd.mail.address import AddressError, parse_address, split
from mailserverd.web import problems

#: Header fields the API sets itself (or that only servers may add): refused in ``headers``.
RESERVED_HEADERS = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "content-disposition", "received",
    "return-path", "dkim-signature", "authentication-results", "sender",
})
# RFC 5322 §3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}\Z")
# Any C0 or C1 control (CR and LF above all), DEL, or a Unicode line or paragraph
# separator (str.splitlines breaks there, and so would the header): never header text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\Z")
_POLICY = email.policy.SMTP.clone(max_line_length=78)


@dataclass(frozen=True)
class Composed:
    """A message ready for the submission path: the envelope ``sender``, the
    ``recipients`` (To, Cc and Bcc, each once, in order), ``raw`` (CRLF lines)
    and ``eight_bit`` (whether a byte is over 127: BODY=8BITMIME, RFC 6152)."""

    sender: str
    recipients: tuple[str, ...]
    raw: bytes

    @property
    def eight_bit(self) -> bool:
        return not self.raw.isascii()


def _text(value: object, field: str, optional: bool = True) -> str:
    """A string member that goes into a header: no line breaks, no controls."""
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise problems.BAD_REQUEST.with_detail(f"{field} must be a string")
    if _CONTROL.search(value):
        raise problems.HEADER_INJECTION.with_detail(f"{field} contains a control character")
    return value


def _mailbox(value: object, field: str) -> Address:
    """``"a@b"`` or ``{"address": "a@b", "name": "A"}`` as an Address (ASCII mailbox)."""
    name = ""
    if isinstance(value, dict):
        unknown = set(value) - {"address", "name"}
        if unknown:
            raise problems.BAD_REQUEST.with_detail(f"{field}: unknown member {sorted(unknown)[0]!r}")
        name = _text(value.get("name"), f"{field}.name")
        value = value.get("address")
    text = _text(value, field, optional=False)
    try:
        address = parse_address(text, utf8=False)
        split(address)  # a mailbox, local@domain
    except AddressError as error:
        raise problems.BAD_ADDRESS.with_detail(f"{field}: {error}") from None
    return Address(display_name=name, addr_spec=address)


def _mailboxes(value: object, field: str) -> list[Address]:
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    return [_mailbox(item, f"{field}[{index}]") for index, item in enumerate(value)]


def _unique(addresses: list[Address]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address.addr_spec, None)
    return tuple(seen)


def _missing_ids(present, hostname: str, when: float) -> list[tuple[str, str]]:
    """The Date and Message-ID fields ``present`` (a message's header) lacks, as a
    submission server adds them (RFC 6409 §8.2, §8.3)."""
    added = []
    if present["Date"] is None:
        added.append(("Date", email.utils.formatdate(when, usegmt=True)))
    if present["Message-ID"] is None:
        added.append(("Message-ID", f"<{secrets.token_hex(12)}@{hostname}>"))
    return added


def _body_text(message: EmailMessage, text: str, subtype: str, add) -> None:
    # 7-bit on the wire: peers without 8BITMIME take it unchanged (RFC 6152 §3).
    cte = "7bit" if text.isascii() else "quoted-printable"
    add(text, subtype=subtype, charset="utf-8", cte=cte)


def _attach(message: EmailMessage, item: object, index: int) -> None:
    field = f"attachments[{index}]"
    if not isinstance(item, dict):
        raise problems.BAD_REQUEST.with_detail(f"{field} must be an object")
    unknown = set(item) - {"filename", "content_type", "content"}
    if unknown:
        raise problems.BAD_REQUEST.with_detail(f"{field}: unknown member {sorted(unknown)[0]!r}")
    filename = _text(item.get("filename"), f"{field}.filename", optional=False)
    content_type = _text(item.get("content_type", "application/octet-stream"), f"{field}.content_type")
    if not _MIME_TYPE.match(content_type):
        raise problems.BAD_REQUEST.with_detail(f"{field}.content_type is not a MIME type")
    encoded = item.get("content")
    if not isinstance(encoded, str):
        raise problems.BAD_BASE64.with_detail(f"{field}.content must be a base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise problems.BAD_BASE64.with_detail(f"{field}.content is not valid base64") from None
    maintype, subtype = content_type.lower().split("/")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)


def _extra_headers(message: EmailMessage, headers: object) -> None:
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise problems.BAD_REQUEST.with_detail("headers must be an object of strings")
    for name, value in headers.items():
        if not _FIELD_NAME.match(name):
            raise problems.HEADER_INJECTION.with_detail(f"header name {name[:40]!r} is not a field name")
        if name.lower() in RESERVED_HEADERS:
            raise problems.BAD_REQUEST.with_detail(f"header {name} is set by the server or the request")
        message[name] = _text(value, f"headers.{name}", optional=False)


JSON_MEMBERS = frozenset({"from", "to", "cc", "bcc", "subject", "text", "html", "headers",
                          "attachments", "idempotency_key"})


def compose_json(doc: object, hostname: str, when: float) -> Composed:
    """Build the message a JSON request describes (see module docstring).

    ``hostname`` names us in the Message-ID; ``when`` (unix seconds) is its
    Date. Raises Problem for anything invalid, naming the member.
    """
    if not isinstance(doc, dict):
        raise fresh(problems.BAD_JSON)
    unknown = set(doc) - JSON_MEMBERS
    if unknown:
        raise problems.BAD_REQUEST.with_detail(f"unknown member {sorted(unknown)[0]!r}")
    sender = _mailbox(doc.get("from"), "from")
    to, cc, bcc = (_mailboxes(doc.get(name), name) for name in ("to", "cc", "bcc"))
    if not (to or cc or bcc):
        raise problems.BAD_REQUEST.with_detail("at least one of to, cc, bcc is required")
    text, html = _text_body(doc, "text"), _text_body(doc, "html")
    attachments = doc.get("attachments") or []
    if not isinstance(attachments, list):
        raise problems.BAD_REQUEST.with_detail("attachments must be an array")
    if text is None and html is None and not attachments:
        raise problems.BAD_REQUEST.with_detail("text, html or an attachment is required")
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    for name, addresses in (("To", to), ("Cc", cc)):
        if addresses:
            message[name] = addresses
    message["Subject"] = _text(doc.get("subject"), "subject")
    _extra_headers(message, doc.get("headers"))
    for name, value in _missing_ids(message, hostname, when):
        message[name] = value
    if text is not None:
        _body_text(message, text, "plain", message.set_content)
    if html is not None:
        add = message.add_alternative if text is not None else message.set_content
        _body_text(message, html, "html", add)
    for index, item in enumerate(attachments):
        _attach(message, item, index)
    return Composed(sender.addr_spec, _unique(to + cc + bcc), message.as_bytes(policy=_POLICY))


def _text_body(doc: dict, name: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise problems.BAD_REQUEST.with_detail(f"{name} must be a string")
    return value


_LINE_END = re.compile(rb"\r?\n")


def compose_raw(raw: bytes, hostname: str, when: float) -> Composed:
    """Take a complete RFC 5322 message; envelope from its header (see module docstring).

    Line ends become CRLF; a bare CR is refused. Raises Problem.
    """
    lines = _LINE_END.sub(b"\r\n", raw)
    if b"\r" in lines.replace(b"\r\n", b"") or b"\0" in lines:
        raise problems.INVALID_MESSAGE.with_detail("bare CR or NUL in the message")
    head, separator, body = lines.partition(b"\r\n\r\n")
    if not separator:
        head, body = lines, b""
    header = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head + b"\r\n\r\n")
    if header.defects or not header.keys():
        raise problems.INVALID_MESSAGE.with_detail("the header section is not valid RFC 5322")
    senders = email.utils.getaddresses(header.get_all("From", []))
    if len(senders) != 1:
        raise problems.INVALID_MESSAGE.with_detail("the message needs exactly one From address")
    sender = _mailbox(senders[0][1], "From")
    recipients = [_mailbox(address, name) for name in ("To", "Cc", "Bcc")
                  for _, address in email.utils.getaddresses(header.get_all(name, [])) if address]
    if not recipients:
        raise problems.INVALID_MESSAGE.with_detail("the message has no To, Cc or Bcc address")
    added = b"".join(f"{name}: {value}\r\n".encode("ascii")
                     for name, value in _missing_ids(header, hostname, when))
    return Composed(sender.addr_spec, _unique(recipients),
                    added + _without_bcc(head) + b"\r\n\r\n" + body)


def _without_bcc(head: bytes) -> bytes:
    """``head`` (CRLF-joined field lines) without the Bcc field and its folded lines."""
    kept, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == b"bcc"
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept)
