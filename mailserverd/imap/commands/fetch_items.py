"""FETCH data items of IMAP extensions: BINARY, OBJECTID, PREVIEW, SAVEDATE.

- ``BINARY[part]<partial>``, ``BINARY.PEEK[...]``, ``BINARY.SIZE[part]``
  (RFC 3516 §4.2-4.3, RFC 9051 §6.4.5): a part with its Content-Transfer-
  Encoding undone; NO [UNKNOWN-CTE] when the encoding is not one we know.
- ``EMAILID`` / ``THREADID`` (RFC 8474 §5): EMAILID derived from the content
  hash (so a COPY or MOVE keeps it, §5.1); THREADID NIL (threading is not
  computed, §5.2 allows NIL). :func:`mailbox_objectid` gives MAILBOXID (§4)
  for SELECT, STATUS and CREATE.
- ``PREVIEW`` / ``PREVIEW (LAZY)`` (RFC 8970): text of the first text part,
  decoded, markup removed, white space folded, at most 200 characters.
- ``SAVEDATE`` (RFC 8514 §4.2): the store keeps no save date, so NIL, which
  §4.2 prescribes for storage without the attribute (and SEARCH
  SAVEDATESUPPORTED matches nothing, consistently).

fetch.py calls :func:`parse_item` for the names in :data:`ITEM_NAMES` and
:func:`respond` for items whose kind is in :data:`KINDS`. Everything is read
from the stored message and its stored facts (offset tree, BODYSTRUCTURE);
nothing is parsed as MIME again.
"""

from __future__ import annotations

import binascii
import codecs
import html
import re

from mailserverd.imap.objectid import email_objectid
from mailserverd.imap import responses, wire
from mailserverd.imap.parser import ArgCursor, ParseError

# fetch.py imports this module; ``fetch`` is only used at call time, so the
# import works in either order (Python finds the half-imported submodule).
from mailserverd.imap.commands import fetch

__all__ = ["ITEM_NAMES", "KINDS", "parse_item", "respond", "binary_content",
           "preview_text", "decode_transfer_encoding",
           "UnknownTransferEncoding"]

ITEM_NAMES = frozenset({b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE", b"EMAILID", b"THREADID",
                        b"PREVIEW", b"SAVEDATE"})
#: FetchItem kinds this module answers (BINARY.PEEK is kind BINARY).
KINDS = frozenset({b"BINARY", b"BINARY.SIZE", b"EMAILID", b"THREADID", b"PREVIEW", b"SAVEDATE"})

UNKNOWN_CTE = "UNKNOWN-CTE"  # RFC 3516 §4.3, RFC 9051 §7.1

# RFC 8970 §3.3: SHOULD be at most 200 preview characters, MUST NOT exceed 256.
PREVIEW_CHARS_MAX = 200
# Encoded bytes of the chosen part read to build a preview: enough for 200
# characters after markup removal in all but pathological HTML, and a bound on
# the work one PREVIEW costs whatever the part's size.
PREVIEW_SOURCE_MAX = 32 * 1024
# RFC 8970 §6: preview-mod = "LAZY"
_PREVIEW_MODIFIERS = frozenset({b"LAZY"})
_SP_THEN_PAREN = re.compile(rb" (?=\()")
_MODIFIER = re.compile(rb"[A-Za-z]+")

# RFC 2045 §6.1: identity encodings (no decoding; the domain differs).
_IDENTITY_ENCODINGS = frozenset({b"7bit", b"8bit", b"binary"})
_BASE64_NOISE = re.compile(rb"[^A-Za-z0-9+/]")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_RUN_KEY = wire.RUN_KEY


class UnknownTransferEncoding(Exception):
    """A part's Content-Transfer-Encoding is not one RFC 2045 §6 defines."""


# ------------------------------------------------------------------ parsing

def parse_item(args: ArgCursor, name: bytes):
    """Read the rest of one extension fetch-att whose (upper-case) ``name`` was read.

    Takes the cursor after the name. Returns a ``fetch.FetchItem``. Raises
    ParseError for bad syntax (RFC 9051 §9 ``"BINARY" [".PEEK"] section-binary
    [partial] / "BINARY.SIZE" section-binary``; RFC 8970 §6 preview-mod).
    """
    if name in (b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"):
        section = _parse_section_binary(args)
        if name == b"BINARY.SIZE":
            return fetch.FetchItem(name, b"BINARY.SIZE[" + section.label() + b"]", section)
        partial = fetch._parse_partial(args)
        label = b"BINARY[" + section.label() + b"]"
        if partial is not None:
            label += b"<%d>" % partial[0]
        # RFC 3516 §4.2: BINARY sets \Seen like BODY[]; BINARY.PEEK does not.
        return fetch.FetchItem(b"BINARY", label, section, partial, sets_seen=name == b"BINARY")
    if args.peek() == 0x5B:  # "[" after a name that takes no section
        raise ParseError("Invalid fetch attribute")
    if name == b"PREVIEW":
        _parse_preview_modifiers(args)
    return fetch.FetchItem(name, name)


def _parse_section_binary(args: ArgCursor):
    """``section-binary = "[" [section-part] "]"`` (RFC 9051 §9): part numbers only."""
    if args.peek() != 0x5B:
        raise ParseError("Expected '[' after BINARY")
    section = fetch.parse_section(args)
    if section.text:
        raise ParseError("BINARY takes part numbers only")
    return section


def _parse_preview_modifiers(args: ArgCursor) -> frozenset[bytes]:
    """``[SP "(" preview-mod *(SP preview-mod) ")"]`` (RFC 8970 §6).

    Returns the modifiers (upper case). LAZY needs no action: a preview is
    always computed at once (RFC 8970 §4.1 lets LAZY get NIL, never requires it).
    """
    try:
        args.match(_SP_THEN_PAREN, "preview modifiers")
    except ParseError:
        return frozenset()
    words = args.parenthesized(lambda cursor: cursor.match(_MODIFIER, "a preview modifier").upper())
    if not words or any(word not in _PREVIEW_MODIFIERS for word in words):
        raise ParseError("Unknown PREVIEW modifier")
    return frozenset(words)


# ----------------------------------------------------------------- response

def respond(session, info, item) -> bytes:
    """One item of ``* n FETCH (...)`` for message ``info`` (a MessageInfo).

    Reads the message and its facts from the store when the item needs them.
    Raises MailError ``NO [UNKNOWN-CTE]`` when BINARY/BINARY.SIZE meet an
    encoding that cannot be decoded (RFC 3516 §4.3).
    """
    kind = item.kind
    if kind == b"EMAILID":
        return b"EMAILID (" + email_objectid(info.blob_id) + b")"
    if kind == b"THREADID":
        return b"THREADID NIL"  # RFC 8474 §5.2: no THREADID support
    if kind == b"SAVEDATE":
        return b"SAVEDATE NIL"  # RFC 8514 §4.2: storage without save dates
    store = session.ctx.store
    raw = store.read_message(session.user, info.blob_id)
    facts = store.read_facts(session.user, info.blob_id)
    if kind == b"PREVIEW":
        return b"PREVIEW " + wire.string(preview_text(raw, facts).encode("utf-8"))
    try:
        data = binary_content(raw, facts, item.section.part)
    except UnknownTransferEncoding:
        raise responses.mail_error("NO", UNKNOWN_CTE, "Unknown Content-Transfer-Encoding") from None
    if kind == b"BINARY.SIZE":
        return item.label + b" %d" % (0 if data is None else len(data))
    if data is None:
        return item.label + b" NIL"
    if item.partial is not None:
        origin, count = item.partial
        data = data[origin:origin + count]  # RFC 3516 §4.2: offsets in the decoded data
    if b"\x00" in data:
        return item.label + b" ~" + wire.literal(data)  # RFC 3516 §4.3 literal8
    return item.label + b" " + wire.literal(data)




# ----------------------------------------------------------------- BINARY

def binary_content(raw: bytes, facts: dict, path: tuple[int, ...]) -> bytes | None:
    """The bytes of BINARY[path] (RFC 9051 §6.4.5, RFC 3516 §4.2).

    A leaf part gives its body with the transfer encoding undone (text/*
    with CRLF line ends, RFC 9051 §7.5.2). ``path == ()`` gives the message:
    its header followed by the decoded body when the message is a single
    leaf, else the stored bytes. A multipart or message/rfc822 part has an
    identity encoding (RFC 2045 §6.4) and is given as stored. Returns None
    when the part does not exist. Raises UnknownTransferEncoding.
    """
    found = _resolve(facts["parts"], facts["bodystructure"], path)
    if found is None:
        return None
    node, structure = found
    if not _is_leaf(node, structure):
        return raw if not path else raw[node[1]:node[2]]
    body = decode_transfer_encoding(raw[node[1]:node[2]], structure[5])
    if _media_type(structure) == b"text":
        body = _BARE_LF.sub(b"\r\n", body)
    return raw[node[0]:node[1]] + body if not path else body


def decode_transfer_encoding(data: bytes, encoding: bytes | None) -> bytes:
    """``data`` with Content-Transfer-Encoding ``encoding`` undone (RFC 2045 §6).

    Decoding is lenient the way §6.8 asks for base64 (characters outside the
    alphabet are ignored) and §6.7 note 4 for quoted-printable. Raises
    UnknownTransferEncoding for an encoding other than 7bit, 8bit, binary,
    base64 and quoted-printable (absent means 7bit, §6.1).
    """
    name = (encoding or b"7bit").strip().lower()
    if name in _IDENTITY_ENCODINGS:
        return data
    if name == b"base64":
        return _decode_base64(data)
    if name == b"quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownTransferEncoding(name)


def _decode_base64(data: bytes) -> bytes:
    """RFC 2045 §6.8 base64: noise ignored, decoding stops at the first "=" pad."""
    clean = _BASE64_NOISE.sub(b"", data.split(b"=", 1)[0])
    if len(clean) % 4 == 1:
        clean = clean[:-1]  # a lone sixth bit cannot make a byte
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:  # not expected once cleaned and padded; never a crash
        return b""


def _is_multipart(structure) -> bool:
    return isinstance(structure, list) and bool(structure) and isinstance(structure[0], dict)


def _is_message_node(node: list) -> bool:
    """message/rfc822: one child, the message, starting at the part's body (see sections.py)."""
    return len(node[3]) == 1 and node[3][0][0] == node[1]


def _is_leaf(node: list, structure) -> bool:
    return not node[3] and not _is_multipart(structure) and len(structure) > 5


def _media_type(structure) -> bytes:
    first = structure[0] if structure else None
    return first.lower() if isinstance(first, bytes) else b""


def _resolve(parts: list, structure, path: tuple[int, ...]):
    """Walk the offset tree and BODYSTRUCTURE together to ``path``.

    Same numbering as mail/sections.py (RFC 9051 §6.4.5). Returns
    ``(node, structure)`` or None when no such part exists.
    """
    node = parts
    for depth, number in enumerate(path):
        if depth > 0 and _is_message_node(node):
            inner = structure[8] if len(structure) > 8 else None
            if not isinstance(inner, list):
                return None
            node, structure = node[3][0], inner
        if node[3] and not _is_message_node(node):  # a multipart
            children = structure[0].get(_RUN_KEY, []) if _is_multipart(structure) else []
            if not 1 <= number <= min(len(node[3]), len(children)):
                return None
            node, structure = node[3][number - 1], children[number - 1]
        elif number != 1:
            return None  # a non-multipart has only part 1, its body
    return node, structure


# ---------------------------------------------------------------- PREVIEW

_TAGS_DROPPED = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>|<!--.*?-->")
_TAG = re.compile(r"(?s)<[^>]*>")
_SPACE = re.compile(r"[\s\x00-\x1f\x7f]+")


def preview_text(raw: bytes, facts: dict) -> str:
    """RFC 8970 §3.3 preview: plain text of the first text/plain part (else
    the first text/html part, markup removed), white space folded to single
    spaces, at most :data:`PREVIEW_CHARS_MAX` characters; "" when the message
    has no such part (§3.2: "no meaningful preview"). Never raises for
    malformed content.
    """
    plain = html_part = None
    for node, structure in _leaves(facts["parts"], facts["bodystructure"]):
        subtype = structure[1].lower() if isinstance(structure[1], bytes) else b""
        if _media_type(structure) != b"text" or _is_attachment(structure):
            continue
        if subtype == b"plain" and plain is None:
            plain = (node, structure)
            break
        if subtype == b"html" and html_part is None:
            html_part = (node, structure)
    chosen = plain or html_part
    if chosen is None:
        return ""
    node, structure = chosen
    text = _part_text(raw[node[1]:min(node[2], node[1] + PREVIEW_SOURCE_MAX)], structure)
    if chosen is html_part:
        text = html.unescape(_TAG.sub(" ", _TAGS_DROPPED.sub(" ", text)))
    return _SPACE.sub(" ", text).strip()[:PREVIEW_CHARS_MAX]


def _leaves(node: list, structure):
    """Leaf parts in order, not entering attached messages (the preview is of this message)."""
    if _is_multipart(structure):
        children = structure[0].get(_RUN_KEY, [])
        for child_node, child_structure in zip(node[3], children):
            yield from _leaves(child_node, child_structure)
    elif _is_leaf(node, structure):
        yield node, structure


def _is_attachment(structure) -> bool:
    """Content-Disposition: attachment (RFC 2183) in a text leaf's BODYSTRUCTURE (index 9)."""
    disposition = structure[9] if len(structure) > 9 else None
    return (isinstance(disposition, list) and bool(disposition)
            and isinstance(disposition[0], bytes) and disposition[0].lower() == b"attachment")


def _part_text(body: bytes, structure) -> str:
    """A text part's body as str: transfer encoding undone, charset applied."""
    try:
        data = decode_transfer_encoding(body, structure[5])
    except UnknownTransferEncoding:
        return ""
    charset = _param(structure[2], b"charset")
    if charset:
        try:
            codec = codecs.lookup(charset.decode("ascii", "replace"))
            return data.decode(codec.name, "replace").rstrip("\ufffd")
        except (LookupError, UnicodeError, ValueError):
            pass
    try:
        return data.decode("utf-8")  # RFC 6532 content without a charset
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").rstrip("\ufffd")


def _param(params, name: bytes) -> bytes | None:
    """A value from a BODYSTRUCTURE parameter list (name value name value ...)."""
    if not isinstance(params, list):
        return None
    for index in range(0, len(params) - 1, 2):
        key = params[index]
        if isinstance(key, bytes) and key.lower() == name and isinstance(params[index + 1], bytes):
            return params[index + 1]
    return None
