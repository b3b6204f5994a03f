"""ID (RFC 2971): the client says what it is, the server answers in kind.

The client's fields are logged (an ``imap-id`` event), each cut to the sizes
RFC 2971 §3.3 allows, so that a client cannot flood the log; the server
answers with its name and version only (RFC 2971 §5: say no more than needed).
"""

from __future__ import annotations

import re

from twisted.logger import Logger

from mailserverd import __version__
from mailserverd.imap import responses, wire
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion

log = Logger(namespace="mailserverd.imap")

#: RFC 2971 §3.3: at most 30 pairs, field names up to 30 octets, values up to 1024.
FIELDS_MAX = 30
FIELD_NAME_MAX = 30
FIELD_VALUE_MAX = 1024

#: What the server says about itself.
SERVER_ID = (("name", "mailserverd"), ("version", __version__))

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def run(session, command) -> Completion:
    """``ID SP ("(" *(string SP nstring) ")" / NIL)`` (RFC 2971 §4).

    Sends ``* ID (...)`` with :data:`SERVER_ID`. Raises ParseError (BAD) for
    bad syntax or more than :data:`FIELDS_MAX` pairs. Side effect: logs the
    client's fields.
    """
    args = command.args
    args.expect_sp()
    fields = _read_fields(args)
    args.expect_end()
    if fields:
        shown = " ".join(f"{name}={value!r}" for name, value in fields)
        log.info("imap-id ip={ip} user={user} {fields}",
                 ip=session.client_ip, user=session.user or "-", fields=shown)
    items = b" ".join(wire.quoted(name.encode("ascii")) + b" " + wire.quoted(value.encode("ascii"))
                      for name, value in SERVER_ID)
    session.send(responses.untagged(b"ID (" + items + b")"))
    return Completion("ID completed")


def _read_fields(args: ArgCursor) -> list[tuple[str, str]]:
    """The client's pairs, cut to the RFC 2971 §3.3 sizes and made printable; [] for NIL."""
    if args.peek() != 0x28:  # "("
        if args.atom().upper() != b"NIL":
            raise ParseError("Expected a parenthesized list or NIL")
        return []
    args.expect_byte(b"(", "'('")
    fields: list[tuple[str, str]] = []
    while not args.skip_byte(b")"):
        if fields:
            args.expect_sp()
        name = args.string()
        args.expect_sp()
        value = args.nstring()
        if len(fields) == FIELDS_MAX:
            raise ParseError(f"More than {FIELDS_MAX} ID fields")
        fields.append((_printable(name[:FIELD_NAME_MAX]),
                       "NIL" if value is None else _printable(value[:FIELD_VALUE_MAX])))
    return fields


def _printable(data: bytes) -> str:
    """Client bytes as text fit for one log line."""
    return _UNPRINTABLE.sub("?", data.decode("utf-8", "replace"))
