"""Mailbox names on the wire: reading them from commands, writing them in responses.

IMAP4rev1 sends mailbox names in modified UTF-7 (RFC 3501 §5.1.3); once a
client has enabled IMAP4rev2 or UTF8=ACCEPT they are UTF-8 (RFC 9051 §5.1,
RFC 6855 §3). One session flag decides which: ``session.utf8_names`` (read
with a default, so the session need not define it).

The mailbox commands (CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB, STATUS)
read and write names only through this module.
"""

from __future__ import annotations

import re
import unicodedata

from mailserverd.imap import mutf7, wire
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.store.types import HIERARCHY_SEPARATOR

__all__ = [
    "utf8_names",
    "decode_name",
    "read_mailbox_name",
    "read_mailbox_name_as_sent",
    "read_list_pattern",
    "read_reference",
    "without_trailing_separator",
    "encode_name",
    "DELIMITER",
]

#: The hierarchy delimiter as a LIST/NAMESPACE response writes it (RFC 9051 §7.3.1).
DELIMITER = wire.quoted(HIERARCHY_SEPARATOR.encode("ascii"))

# RFC 3501 §9: list-mailbox = 1*list-char / string; list-char = ATOM-CHAR /
# list-wildcards / resp-specials. So: any CHAR but "(", ")", "{", SP, CTL,
# DQUOTE and backslash.
_LIST_CHARS = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')


def utf8_names(session) -> bool:
    """Whether this session's mailbox names are UTF-8 (IMAP4rev2 / UTF8=ACCEPT enabled)."""
    return bool(getattr(session, "utf8_names", False))


def decode_name(session, raw: bytes) -> str:
    """A mailbox name or pattern from its wire bytes, as a str.

    UTF-8 sessions: strict UTF-8 (RFC 6855 §3), normalized to NFC: CREATE
    makes NFC names, and a server that accepts denormalized names MUST
    accept them in every command (RFC 9051 §5.1); otherwise strict modified
    UTF-7 (RFC 3501 §5.1.3). ``INBOX`` in any case becomes ``"INBOX"``
    (RFC 3501 §5.1). Raises ParseError (tagged BAD) for bytes that are not
    valid in the session's encoding.
    """
    name = _decode_as_sent(session, raw)
    return unicodedata.normalize("NFC", name) if utf8_names(session) else name


def _decode_as_sent(session, raw: bytes) -> str:
    """:func:`decode_name` without the NFC normalization."""
    if raw.upper() == b"INBOX":
        return "INBOX"
    if utf8_names(session):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Mailbox name is not valid UTF-8") from None
    try:
        return mutf7.decode(raw)
    except mutf7.MUTF7Error as error:
        raise ParseError(f"Mailbox name is not valid modified UTF-7: {error}") from None


def read_mailbox_name(session, args: ArgCursor) -> str:
    """Read one ``mailbox`` argument (RFC 3501 §9: astring) and decode it.

    One trailing hierarchy separator is dropped (:func:`without_trailing_separator`).
    Raises ParseError for a missing or badly encoded name.
    """
    return without_trailing_separator(decode_name(session, args.astring()))


def read_reference(session, args: ArgCursor) -> str:
    """Read LIST's reference name (RFC 9051 §6.3.9): decoded, its trailing
    separator kept (``Archive/`` + ``%`` lists the children of Archive).

    Raises ParseError for a missing or badly encoded name.
    """
    return decode_name(session, args.astring())


def without_trailing_separator(name: str) -> str:
    """``name`` without one trailing hierarchy separator: ``Trash/`` names ``Trash``.

    Client quirk, accommodated as Dovecot's ``tb-extra-mailbox-sep`` does:
    Thunderbird sometimes appends the separator to a mailbox name it got from
    LIST, then SELECTs or APPENDs to that. RFC 3501 §6.3.3 already gives a
    trailing separator this meaning for CREATE ("foo/" creates "foo").
    """
    if len(name) > 1 and name.endswith(HIERARCHY_SEPARATOR):
        return name[:-1]
    return name


def read_mailbox_name_as_sent(session, args: ArgCursor) -> tuple[str, str]:
    """Read one ``mailbox`` argument; return ``(name, supplied)``.

    ``name`` is what :func:`read_mailbox_name` returns; ``supplied`` is the
    name as the client wrote it, before NFC normalization, for the OLDNAME
    of RFC 9051 §6.3.9.7 (they differ only in UTF-8 sessions). Raises
    ParseError as :func:`read_mailbox_name` does.
    """
    raw = args.astring()
    return (without_trailing_separator(decode_name(session, raw)),
            without_trailing_separator(_decode_as_sent(session, raw)))


def read_list_pattern(session, args: ArgCursor) -> str:
    """Read one ``list-mailbox`` (RFC 3501 §9: wildcards allowed unquoted) and decode it.

    Raises ParseError for a missing or badly encoded pattern.
    """
    if args.peek() in (0x22, 0x7B):
        raw = args.string()
    else:
        raw = args.match(_LIST_CHARS, "a mailbox name or pattern")
    return decode_name(session, raw)


def encode_name(session, name: str) -> bytes:
    """``name`` as an IMAP string for a response (LIST, LSUB, STATUS).

    Modified UTF-7 for IMAP4rev1 sessions, UTF-8 for UTF-8 sessions (in a
    quoted string, which RFC 6855 §3 allows to hold UTF-8). Long names go as
    literals.
    """
    if utf8_names(session):
        data = name.encode("utf-8")
        if len(data) <= wire.QUOTED_MAX and not re.search(rb"[\x00\r\n]", data):
            return wire.quoted(data)
        return wire.literal(data)
    data = mutf7.encode(name)  # printable ASCII only
    if len(data) <= wire.QUOTED_MAX:
        return wire.quoted(data)
    return wire.literal(data)
