"""The Authentication-Results header field (RFC 8601) and the header edits around it.

- :func:`remove_claiming` drops incoming Authentication-Results fields that
  claim our authserv-id, so nobody can forge our verdict (RFC 8601 §5);
- :func:`format_field` writes our own field with every method's result;
- :func:`prepend_fields` puts new fields on top of the message.

All of it works on the raw bytes: everything not removed stays byte-identical.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from mailserverd.mail.mime import header_end, parse_quoted_string, skip_cfws

_FIELD_NAME = b"authentication-results"
# RFC 8601 §2.2 pvalue: a token, or [local-part "@"] domain-name; anything
# else goes into a quoted-string.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.@]+\Z")
_TOKEN = re.compile(rb"[^\s;()]+")


@dataclass(frozen=True)
class MethodResult:
    """One ``method=result`` with its properties, e.g. ``MethodResult("spf",
    "pass", (("smtp.mailfrom", "a@example.test"),))``."""

    method: str
    result: str
    properties: tuple[tuple[str, str], ...] = ()


def field_spans(message: bytes) -> list[tuple[bytes, int, int]]:
    """The header fields of ``message`` as ``(lower-case name, start, end)``.

    ``message[start:end]`` is the whole field, continuation lines and final
    line break included. Lines that are not fields are not listed.
    """
    end, _body = header_end(message, 0)
    spans: list[tuple[bytes, int, int]] = []
    pos = 0
    while pos < end:
        line_end = message.find(b"\n", pos, end)
        line_end = end if line_end < 0 else line_end + 1
        first = message[pos:pos + 1]
        if first in (b" ", b"\t") and spans:
            name, start, _ = spans[-1]
            spans[-1] = (name, start, line_end)          # a continuation line
        else:
            colon = message.find(b":", pos, line_end)
            if colon > pos:
                spans.append((message[pos:colon].rstrip(b" \t").lower(), pos, line_end))
        pos = line_end
    return spans


def authserv_id_of(field: bytes) -> str:
    """The authserv-id of one raw Authentication-Results field (RFC 8601 §2.2),
    lower-cased; ``""`` if there is none."""
    value = field.partition(b":")[2]
    pos = skip_cfws(value, 0)
    if value[pos:pos + 1] == b'"':
        token = parse_quoted_string(value, pos)[0]
    else:
        match = _TOKEN.match(value, pos)
        token = match.group(0) if match else b""
    return token.decode("utf-8", "replace").lower()


def remove_claiming(message: bytes, authserv_id: str) -> bytes:
    """``message`` without the Authentication-Results fields whose authserv-id
    is ``authserv_id`` (case-insensitive; RFC 8601 §5). Other fields, and
    other servers' results, are kept byte for byte."""
    ours = authserv_id.lower()
    cut = [(start, end) for name, start, end in field_spans(message)
           if name == _FIELD_NAME and authserv_id_of(message[start:end]) == ours]
    if not cut:
        return message
    pieces, pos = [], 0
    for start, end in cut:
        pieces.append(message[pos:start])
        pos = end
    pieces.append(message[pos:])
    return b"".join(pieces)


def _pvalue(text: str) -> str:
    """A property value as RFC 8601 §2.2 allows it: plain, or a quoted-string."""
    text = text.replace("\r", "").replace("\n", "")
    if text and _PLAIN_VALUE.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(authserv_id: str, results: Sequence[MethodResult]) -> bytes:
    """Our Authentication-Results field, folded one method per line, CRLF-terminated.

    RFC 8601 §2.2: ``authserv-id; method=result ptype.property=value; ...``,
    or ``authserv-id; none`` when no method was run.
    """
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode("utf-8")
    lines = []
    for entry in results:
        props = "".join(f" {name}={_pvalue(value)}" for name, value in entry.properties)
        lines.append(f"{entry.method}={entry.result}{props}")
    body = ";\r\n\t".join(lines)
    return f"Authentication-Results: {authserv_id};\r\n\t{body}\r\n".encode("utf-8")


def prepend_fields(message: bytes, fields: Sequence[bytes]) -> bytes:
    """``message`` with ``fields`` (each a complete CRLF-terminated field) on top."""
    return b"".join(fields) + message
