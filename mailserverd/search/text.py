"""The searchable text of a message: one extraction, used by the scan and the index.

IMAP text keys (RFC 9051 §6.4.4) compare decoded text: RFC 2047 encoded
words decoded, quoted-printable and base64 undone, charsets turned into
Unicode, HTML reduced to its text. Everything here works from the message
bytes and its stored facts (mail/facts.py: ENVELOPE, BODYSTRUCTURE, the part
offset tree), so nothing parses a message again.

Every text and every search string goes through :func:`normalise` once
(NFKC after case folding, close to the i;unicode-casemap comparator of
RFC 5051 §2), and a key matches when the normalised string is a substring of
the normalised text. The scan (:mod:`mailserverd.imap.search`) and the index
(:mod:`mailserverd.search.index`) both read their text from
:class:`MessageText`, so they cannot disagree about what a message says.
"""

from __future__ import annotations

import binascii
import html
import re
import unicodedata
from typing import Callable, Iterator

from mailserverd.mail import mime

__all__ = [
    "ENVELOPE_FIELDS",
    "MessageText",
    "decode_header_value",
    "normalise",
]

#: ENVELOPE (RFC 9051 §7.5.2) positions of the fields FROM/TO/CC/BCC search.
ENVELOPE_FIELDS = {"from": 2, "to": 5, "cc": 6, "bcc": 7}

# The run marker of facts value trees (mail/facts.py _RUN_KEY, imap/wire.py RUN_KEY).
_RUN_KEY = "cat"

# RFC 2047 §2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BASE64_NOISE = re.compile(rb"[^A-Za-z0-9+/]")

# HTML reduced to its text: scripts, styles and comments dropped, block
# elements end a line, other tags vanish, character references resolved.
# Where each thing starts: a comment, a script or style, a block element, a tag.
_HTML_MARK = re.compile(r"(<!--)|<(script|style)\b|(<(?:br|p|div|tr|li|h[1-6]|table|blockquote)\b)|<", re.I)
_HTML_CLOSERS = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}


def normalise(text: str) -> str:
    """``text`` as the comparator sees it: case-folded, then NFKC (RFC 5051 §2).

    Applied once to each searched text and to each search string, so that a
    substring test of the results is the match of RFC 9051 §6.4.4.
    """
    if text.isascii():
        return text.lower()  # casefold and NFKC leave ASCII as lower() does
    return unicodedata.normalize("NFKC", text.casefold())


def _decode_raw(data: bytes) -> str:
    """Header or body bytes with no declared charset: UTF-8 (RFC 6532), else Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_ASCII_NAMES = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "646"})


def _decode_charset(data: bytes, charset: str | None) -> str:
    """``data`` in ``charset``; an unknown or non-text charset falls back to :func:`_decode_raw`.

    8-bit text labelled US-ASCII (as an unlabelled text part is, RFC 2045
    §5.2) is read as :func:`_decode_raw` reads it: mailers that send UTF-8
    or Latin-1 without saying so are common, and Dovecot reads them so too.
    """
    if charset and charset.lower() in _ASCII_NAMES and not data.isascii():
        charset = None
    if charset:
        try:
            return data.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    return _decode_raw(data)


def _decode_base64(data: bytes) -> bytes:
    """Lenient base64 (RFC 2045 §6.8): characters outside the alphabet are
    ignored, missing padding is supplied, a dangling sixth bit is dropped."""
    clean = _BASE64_NOISE.sub(b"", data.split(b"=", 1)[0])
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    try:
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
    except binascii.Error:
        return b""


def _decode_word(match: re.Match) -> str | None:
    """One RFC 2047 encoded word as text, or None if it cannot be decoded."""
    charset = match.group(1).split(b"*", 1)[0].decode("ascii", "replace")  # RFC 2231 §5 language
    text = match.group(3)
    if match.group(2) in b"Bb":
        if _BASE64_NOISE.search(text.rstrip(b"=")):
            return None
        data = _decode_base64(text)
    else:
        data = binascii.a2b_qp(text, header=True)  # RFC 2047 §4.2: "_" is a space
    return _decode_charset(data, charset)


def decode_header_value(value: bytes) -> str:
    """A header field value as text: unfolded, RFC 2047 encoded words decoded.

    White space between two adjacent encoded words is dropped (RFC 2047
    §6.2); other bytes are read as UTF-8 (RFC 6532) or else Latin-1. Never
    raises. Not normalised.
    """
    value = value.replace(b"\r", b"").replace(b"\n", b"")
    out: list[str] = []
    pos = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(value):
        gap = value[pos:match.start()]
        decoded = _decode_word(match)
        if decoded is None:
            continue  # left as it is, part of the next gap
        if not (after_word and not gap.strip(b" \t")):
            out.append(_decode_raw(gap))
        out.append(decoded)
        pos = match.end()
        after_word = True
    out.append(_decode_raw(value[pos:]))
    return "".join(out)


def addresses_text(field) -> str:
    """An ENVELOPE address list as ``name <mailbox@host>`` text (decoded, not normalised)."""
    if not field:
        return ""
    words: list[str] = []
    for entry in field:
        addresses = entry.get(_RUN_KEY, []) if isinstance(entry, dict) else [entry]
        for address in addresses:
            name, _route, mailbox, host = address
            if name:
                words.append(decode_header_value(name))
            if mailbox and host:
                words.append("<" + _decode_raw(mailbox) + "@" + _decode_raw(host) + ">")
            elif mailbox:
                words.append(_decode_raw(mailbox))  # a group name
    return " ".join(words)


def html_text(markup: str) -> str:
    """The text of an HTML body: comments, scripts and styles dropped, a block
    element a line break, other tags removed, character references resolved.

    One pass, in time linear in the markup whatever it holds: a comment,
    script or style without its end, or a ``<`` without a ``>``, is looked
    for once, not again at each later ``<`` (regular expressions with lazy
    matches took minutes over half a megabyte of ``<script>``). An unclosed
    comment, script or style is an ordinary tag; a ``<`` with no ``>`` after
    it is text, and so is everything after it.
    """
    out: list[str] = []
    position, end = 0, len(markup)
    unclosed: set[str] = set()  # closers known to be missing from here on
    while position < end:
        mark = _HTML_MARK.search(markup, position)
        if mark is None:
            break
        out.append(markup[position:mark.start()])
        closed = _html_closed(markup, mark, unclosed)
        if closed is not None:
            position = closed
            continue
        tag_end = markup.find(">", mark.end())
        if tag_end < 0:  # no tag from here on: the rest is text
            position = mark.start()
            break
        if mark.group(3):
            out.append("\n")
        position = tag_end + 1
    out.append(markup[position:])
    return html.unescape("".join(out))


def _html_closed(markup: str, mark: re.Match, unclosed: set[str]) -> int | None:
    """Where a comment, script or style that starts at ``mark`` ends, or None if
    it is not one or has no end (then ``unclosed`` remembers its kind)."""
    kind = "comment" if mark.group(1) else (mark.group(2) or "").lower()
    if not kind or kind in unclosed:
        return None
    if kind == "comment":
        found = markup.find("-->", mark.end())
        closer_end = None if found < 0 else found + 3
    else:
        closer = _HTML_CLOSERS[kind].search(markup, mark.end())
        closer_end = None if closer is None else closer.end()
    if closer_end is None:
        unclosed.add(kind)
    return closer_end


def _fields(raw: bytes, start: int, end: int) -> list[tuple[str, str]]:
    """The header raw[start:end] as normalised ``(name, decoded value)`` pairs."""
    return [(name.decode("latin-1"), normalise(decode_header_value(value)))
            for name, value in mime.header_fields(raw, start, end)]


def _fields_text(fields: list[tuple[str, str]]) -> str:
    """Header fields as the ``name: value`` lines TEXT searches."""
    return "\n".join(normalise(name) + ": " + value for name, value in fields)


def _param(params, name: bytes) -> bytes | None:
    """A parameter's value from a flat BODYSTRUCTURE parameter list."""
    if not params:
        return None
    for index in range(0, len(params) - 1, 2):
        if isinstance(params[index], bytes) and params[index].lower() == name:
            return params[index + 1]
    return None


def _leaf_text(raw: bytes, structure: list, node: list) -> str:
    """A text part's body: transfer encoding undone, charset decoded (RFC 2045 §6),
    HTML reduced to its text."""
    body = raw[node[1]:node[2]]
    encoding = structure[5].lower() if isinstance(structure[5], bytes) else b""
    if encoding == b"base64":
        body = _decode_base64(body)
    elif encoding == b"quoted-printable":
        body = binascii.a2b_qp(body)
    charset = _param(structure[2], b"charset")
    text = _decode_charset(body, charset.decode("ascii", "replace") if charset else None)
    subtype = structure[1].lower() if isinstance(structure[1], bytes) else b""
    return html_text(text) if subtype == b"html" else text


def _body_texts(raw: bytes, structure: list, node: list) -> Iterator[str]:
    """The normalised texts BODY searches, walking BODYSTRUCTURE beside the offset tree.

    Multiparts give their parts' texts; a message/rfc822 part its message's
    header and body; a text/* leaf its decoded body; other media nothing
    (RFC 9051 §6.4.4 allows leaving them out). Depth is bounded by the
    stored tree (mime.MIME_NESTING_MAX).
    """
    first = structure[0]
    if isinstance(first, dict):  # multipart: the parts, back to back
        for child_structure, child_node in zip(first.get(_RUN_KEY, []), node[3]):
            yield from _body_texts(raw, child_structure, child_node)
        return
    media = first.lower() if isinstance(first, bytes) else b"text"
    if media == b"message" and len(structure) > 8 and isinstance(structure[8], list) and node[3]:
        inner = node[3][0]
        yield _fields_text(_fields(raw, inner[0], inner[1]))
        yield from _body_texts(raw, structure[8], inner)
    elif media == b"text":
        yield normalise(_leaf_text(raw, structure, node))


class MessageText:
    """The normalised searchable text of one message, each part decoded at most once.

    ``load_raw()`` and ``load_facts()`` give the message bytes and its stored
    facts; each is called at most once, and only when a field needs it (the
    envelope fields need only the facts). Every method returns normalised
    text (:func:`normalise`).
    """

    __slots__ = ("_load_raw", "_load_facts", "_raw", "_facts", "_fields", "_header", "_body", "_envelope")

    def __init__(self, load_raw: Callable[[], bytes], load_facts: Callable[[], dict]):
        self._load_raw = load_raw
        self._load_facts = load_facts
        self._raw = self._facts = self._fields = self._header = self._body = None
        self._envelope: dict[str, str] = {}

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._load_raw()
        return self._raw

    def facts(self) -> dict:
        if self._facts is None:
            self._facts = self._load_facts()
        return self._facts

    def envelope(self, field: str) -> str:
        """FROM/TO/CC/BCC (``name <mailbox@host>`` per address) or SUBJECT, from ENVELOPE."""
        text = self._envelope.get(field)
        if text is None:
            envelope = self.facts()["envelope"]
            if field == "subject":
                text = decode_header_value(envelope[1] or b"")
            else:
                text = addresses_text(envelope[ENVELOPE_FIELDS[field]])
            text = self._envelope[field] = normalise(text)
        return text

    def fields(self) -> list[tuple[str, str]]:
        """Every top-level header field as ``(lower-case name, decoded value)``, in order."""
        if self._fields is None:
            self._fields = _fields(self.raw(), 0, self.facts()["header_end"])
        return self._fields

    def header_values(self, name: str) -> list[str]:
        """The decoded values of the top-level fields called ``name`` (lower-case)."""
        return [value for field, value in self.fields() if field == name]

    def header(self) -> str:
        """The top-level header as ``name: value`` lines (what TEXT searches besides the body)."""
        if self._header is None:
            self._header = _fields_text(self.fields())
        return self._header

    def body(self) -> str:
        """The decoded text of the body's text and message parts (what BODY searches)."""
        if self._body is None:
            facts = self.facts()
            self._body = "\n".join(_body_texts(self.raw(), facts["bodystructure"], facts["parts"]))
        return self._body

    def document(self) -> dict:
        """Every field the text keys read, for the index to store (see :class:`StoredText`)."""
        doc = {field: self.envelope(field) for field in ("from", "to", "cc", "bcc", "subject")}
        doc["fields"] = [list(pair) for pair in self.fields()]
        doc["body"] = self.body()
        return doc

    def searched_texts(self) -> list[str]:
        """The texts some key compares with (each header value is inside :meth:`header`)."""
        return [self.envelope(field) for field in ("from", "to", "cc", "bcc", "subject")] + [
            self.header(), self.body()]


class StoredText:
    """What :meth:`MessageText.document` gave, with the same reading methods;
    without its ``"body"``, ``load_body()`` gives it when first read."""

    __slots__ = ("_doc", "_header", "_load_body")

    def __init__(self, doc: dict, load_body: Callable[[], str] | None = None):
        self._doc = doc
        self._header = None
        self._load_body = load_body

    def envelope(self, field: str) -> str:
        return self._doc[field]

    def header_values(self, name: str) -> list[str]:
        return [value for field, value in self._doc["fields"] if field == name]

    def header(self) -> str:
        if self._header is None:
            self._header = _fields_text(self._doc["fields"])
        return self._header

    def body(self) -> str:
        if "body" not in self._doc:
            self._doc["body"] = self._load_body()
        return self._doc["body"]
