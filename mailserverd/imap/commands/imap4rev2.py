"""What changes once a client has enabled IMAP4rev2 (RFC 9051) or UTF8=ACCEPT (RFC 6855).

The commands ask this module rather than looking at ``session.enabled``
themselves, so each rule of RFC 9051 Appendix E that differs from IMAP4rev1
is decided in one place:

- Net-Unicode mailbox names (RFC 9051 §5.1, RFC 6855 §3): no control
  characters, no line or paragraph separators, NFC.
- no ``RECENT`` in responses, no \\Recent, ``STATUS (RECENT)`` and the
  search keys RECENT, NEW and OLD are BAD (RFC 9051 Appendix E item 12;
  §9 has RECENT only as obsolete-recent-response);
- SELECT/EXAMINE: an untagged LIST of the opened mailbox (item 10, §6.3.2),
  no UNSEEN response code (item 11);
- UTF-8 message headers in APPEND only from clients that said they send them
  (RFC 6855 §4), and no SEARCH CHARSET after ``ENABLE UTF8=ACCEPT`` (§3).
"""

from __future__ import annotations

import re

from mailserverd.imap import responses, search
from mailserverd.imap.commands.mailbox_names import DELIMITER, encode_name
from mailserverd.imap.parser import ParseError
from mailserverd.store.types import HIERARCHY_SEPARATOR, MailboxInfo

__all__ = [
    "rev2_enabled",
    "utf8_accept_enabled",
    "utf8_headers_allowed",
    "sends_recent",
    "sends_unseen_code",
    "check_net_unicode",
    "reject_obsolete_status_items",
    "reject_obsolete_search_keys",
    "reject_search_charset",
    "has_8bit_header",
    "selected_list_response",
    "oldname_list_response",
]

# RFC 6855 §3: mailbox names MUST NOT contain control characters
# (U+0000-U+001F, U+0080-U+009F), DEL (U+007F), LINE SEPARATOR (U+2028) or
# PARAGRAPH SEPARATOR (U+2029).
_NOT_NET_UNICODE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# RFC 5322 §2.1: the header ends at the first empty line.
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def rev2_enabled(session) -> bool:
    """Whether the client sent ``ENABLE IMAP4rev2`` (RFC 9051 §6.3.1)."""
    return "IMAP4REV2" in getattr(session, "enabled", ())


def utf8_accept_enabled(session) -> bool:
    """Whether the client sent ``ENABLE UTF8=ACCEPT`` (RFC 6855 §3)."""
    return "UTF8=ACCEPT" in getattr(session, "enabled", ())


def utf8_headers_allowed(session) -> bool:
    """Whether the client may APPEND messages with UTF-8 header fields.

    After ``ENABLE UTF8=ACCEPT`` (RFC 6855 §4) or ``ENABLE IMAP4rev2``
    (RFC 9051 §6.3.12: 8-bit characters are permitted, headers may be
    RFC 6532 ones, Appendix E item 16).
    """
    return rev2_enabled(session) or utf8_accept_enabled(session)


def sends_recent(session) -> bool:
    """Whether responses may carry RECENT: not in IMAP4rev2 (RFC 9051 Appendix E item 12)."""
    return not rev2_enabled(session)


def sends_unseen_code(session) -> bool:
    """Whether SELECT may send ``OK [UNSEEN n]``: not in IMAP4rev2, whose
    resp-text-code has no UNSEEN (RFC 9051 §9; Appendix E item 11)."""
    return not rev2_enabled(session)


def check_net_unicode(name: str) -> None:
    """Raise ``NO [CANNOT]`` unless ``name`` may be a new mailbox's name.

    RFC 9051 §5.1: a server MUST prohibit the creation of names that are not
    Net-Unicode; RFC 6855 §3 lists the characters. Applied to every session
    (a name created by an IMAP4rev1 client is listed to UTF-8 clients too).
    The caller normalizes to NFC first where it accepts denormalized names.
    """
    if _NOT_NET_UNICODE.search(name):
        raise responses.mail_error("NO", responses.CANNOT,
                                   "Mailbox names may not contain control characters")


def reject_obsolete_status_items(session, items) -> None:
    """Raise ParseError (BAD) for ``RECENT`` in an IMAP4rev2 session's STATUS items.

    RFC 9051 §9 status-att has no RECENT (Appendix E item 12), so after
    ``ENABLE IMAP4rev2`` it is a syntax error (STATUS and LIST RETURN
    (STATUS ...)); IMAP4rev1 clients still get RECENT.
    """
    if rev2_enabled(session) and "RECENT" in items:
        raise ParseError("STATUS RECENT is not part of IMAP4rev2")


def reject_obsolete_search_keys(session, key) -> None:
    """Raise ParseError (BAD) for RECENT, NEW or OLD in an IMAP4rev2 session's search program.

    RFC 9051 §9 search-key has none of them (Appendix E item 12), as
    status-att has no RECENT: the same answer as for STATUS (RECENT).
    """
    if rev2_enabled(session) and search.uses_recent(key):
        raise ParseError("SEARCH RECENT, NEW and OLD are not part of IMAP4rev2")


def reject_search_charset(session, charset: str | None) -> None:
    """Raise ParseError (BAD) for a SEARCH CHARSET after ``ENABLE UTF8=ACCEPT``.

    RFC 6855 §3: the client MUST NOT send one then; the server SHOULD
    answer BAD (the charset labels conflict).
    """
    if charset is not None and utf8_accept_enabled(session):
        raise ParseError("SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT")


def has_8bit_header(raw: bytes) -> bool:
    """Whether the header of message ``raw`` holds any octet above 0x7F.

    The header is everything before the first empty line (the whole message
    if there is none).
    """
    end = _HEADER_END.search(raw)
    header = raw[:end.start()] if end else raw
    return not header.isascii()


def selected_list_response(session, info: MailboxInfo, supplied: str | None = None) -> bytes:
    """The untagged LIST of the mailbox SELECT/EXAMINE opens, for IMAP4rev2, else ``b""``.

    RFC 9051 §6.3.2 (Appendix E item 10): the attributes MUST be accurate:
    \\HasChildren or \\HasNoChildren (RFC 9051 §7.3.1), and the special use
    (RFC 6154 §2); a ``supplied`` name that differs from the mailbox's
    (denormalized UTF-8) is given as OLDNAME (§6.3.9.7). Reads the user's
    mailbox list from the store.
    """
    if not rev2_enabled(session):
        return b""
    prefix = info.name + HIERARCHY_SEPARATOR
    mailboxes = session.ctx.store.list_mailboxes(session.user)
    children = any(other.name.startswith(prefix) for other in mailboxes)
    attributes = ["\\HasChildren" if children else "\\HasNoChildren"]
    if info.special_use:
        attributes.append(info.special_use)
    line = (b"LIST (" + " ".join(attributes).encode("ascii") + b") " + DELIMITER + b" "
            + encode_name(session, info.name))
    if supplied is not None and supplied != info.name:
        line += b' ("OLDNAME" (' + encode_name(session, supplied) + b"))"
    return responses.untagged(line)


def oldname_list_response(session, name: str, supplied: str, *, nonexistent: bool = False) -> bytes:
    """``* LIST (...) "/" name ("OLDNAME" (supplied))`` when a denormalized name
    was normalized, else ``b""`` (RFC 9051 §6.3.9.7).

    ``nonexistent`` gives the ``\\NonExistent`` attribute (after DELETE,
    RFC 9051 §6.3.5).
    """
    if name == supplied:
        return b""
    attributes = b"\\NonExistent" if nonexistent else b""
    return responses.untagged(b"LIST (" + attributes + b") " + DELIMITER + b" "
                              + encode_name(session, name)
                              + b' ("OLDNAME" (' + encode_name(session, supplied) + b"))")
