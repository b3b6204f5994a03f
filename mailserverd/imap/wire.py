"""IMAP value serializer and a small parser for IMAP values.

Value trees (RFC 9051 §4):

- ``bytes``  an IMAP string (quoted or literal on the wire)
- ``None``   NIL
- ``int``    a number
- ``list``   a parenthesized list
- ``str``    an atom (only produced by :func:`parse_values`, and accepted by
             :func:`serialize` to write an atom as is, e.g. ``FLAGS``)
- ``{"cat": [v, ...]}``  a run: its items are written back to back, with no
             space between them and no parentheses around them, in place of
             one item of the enclosing list (see :func:`run`).  Made for the
             places where the grammar concatenates lists: the parts of a
             multipart body and the addresses of an ENVELOPE address list.
             A dict because trees are stored with msgpack (facts), which keeps
             only dict/list/bytes/int/None.

:func:`serialize` writes a tree as IMAP bytes; :func:`parse_values` reads a
sequence of IMAP values back into trees (tests use it to compare our FETCH
output with a reference server's, and the IMAP server may use it for
command arguments).  :func:`parse_values` does not produce runs: a run reads
back as its items spliced into the enclosing list, which :func:`plain` gives.
"""

from __future__ import annotations

import re

__all__ = [
    "WireParseError",
    "quoted",
    "literal",
    "string",
    "nstring",
    "astring",
    "RUN_KEY",
    "run",
    "plain",
    "serialize",
    "parse_values",
]

# Strings longer than this are sent as literals even when a quoted string
# would be legal: long quoted strings are harder on clients' line buffers.
QUOTED_MAX = 128

# RFC 9051 §4.3: a quoted string may not hold CR, LF or NUL; 8-bit text is only
# allowed with UTF8=ACCEPT, so we use a literal for it.  '"' and '\' could be
# escaped, but (like Dovecot) we send a literal instead.
_NEEDS_LITERAL = re.compile(rb'[\x00\r\n"\\\x80-\xff]')

# RFC 9051 §9 formal syntax: ATOM-CHAR = any CHAR except atom-specials;
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials
# / resp-specials.  ASTRING-CHAR additionally allows "]".
_NOT_ASTRING_CHAR = re.compile(rb'[\x00-\x20\x7f-\xff(){%*"\\]')


class WireParseError(ValueError):
    """Raised by :func:`parse_values` when the input is not valid IMAP values."""


def quoted(data: bytes) -> bytes:
    """Return ``data`` as an IMAP quoted string.

    Takes bytes without CR, LF or NUL (the caller checks); escapes ``"`` and
    ``\\`` (RFC 9051 §4.3).  Raises ValueError if CR, LF or NUL is present.
    """
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        raise ValueError("CR, LF and NUL cannot be sent in a quoted string")
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def literal(data: bytes) -> bytes:
    """Return ``data`` as a synchronizing IMAP literal ``{n}\\r\\n...``."""
    return b"{%d}\r\n" % len(data) + data


def string(data: bytes) -> bytes:
    """Return ``data`` as an IMAP string: quoted when safe and short, else a literal."""
    if len(data) > QUOTED_MAX or _NEEDS_LITERAL.search(data):
        return literal(data)
    return b'"' + data + b'"'


def nstring(data: bytes | None) -> bytes:
    """Return ``data`` as an IMAP nstring: NIL for None, else :func:`string`."""
    return b"NIL" if data is None else string(data)


def astring(data: bytes) -> bytes:
    """Return ``data`` as an IMAP astring: a bare atom when every byte is an
    ASTRING-CHAR (and it is not empty nor ``NIL``), else :func:`string`."""
    if data and not _NOT_ASTRING_CHAR.search(data) and data.upper() != b"NIL":
        return data
    return string(data)


# The key of a run marker (see the module docstring).  mailserverd.mail.facts
# writes the same marker without importing this module (mail/ stays below the
# protocol servers).
RUN_KEY = "cat"


def run(items) -> dict:
    """Return a run marker: ``items`` written back to back inside a list.

    RFC 9051 §9: ``body-type-mpart = 1*body SP media-subtype ...`` and
    ``env-from = "(" 1*address ")" / nil`` (likewise sender, reply-to, to,
    cc, bcc) concatenate their elements with no SP, where every other list
    separates elements by SP.  ``[run([a, b]), c]`` is written ``(A B C)``
    with A and B back to back: ``((...)(...) C)``.
    """
    return {RUN_KEY: list(items)}


def _run_items(marker: dict) -> list:
    """The items of a run marker; TypeError if ``marker`` is not one."""
    if len(marker) != 1 or not isinstance(marker.get(RUN_KEY), (list, tuple)):
        raise TypeError(f"a dict in a value tree must be {{{RUN_KEY!r}: [...]}}")
    return marker[RUN_KEY]


def plain(value):
    """Return ``value`` with its runs spliced into their enclosing lists.

    This is the tree :func:`parse_values` reads back from
    ``serialize(value)``: ``plain([run([a, b]), c]) == [a, b, c]``.  A run at
    the top is returned as the list of its (plain) items.  Takes and returns
    value trees; raises TypeError for a malformed run marker.  Uses an
    explicit stack (no recursion).
    """
    root: list = []
    stack: list = [(iter((value,)), root)]
    while stack:
        items, out = stack[-1]
        try:
            item = next(items)
        except StopIteration:
            stack.pop()
            continue
        if isinstance(item, dict):
            stack.append((iter(_run_items(item)), out))  # splice into the same list
        elif isinstance(item, (list, tuple)):
            new: list = []
            out.append(new)
            stack.append((iter(item), new))
        else:
            out.append(item)
    return root if isinstance(value, dict) else root[0]


def serialize(value) -> bytes:
    """Serialize a value tree to IMAP bytes.

    Takes bytes (string), None (NIL), int (number), bool is rejected, str
    (atom, written as ASCII as is), list/tuple (parenthesized, items separated
    by one space), a run marker ``{"cat": [...]}`` (its items written back to
    back in place of one item, see :func:`run`; an empty run writes nothing
    and is not an item).  Returns bytes.  Raises TypeError for anything else.
    Nesting is handled with an explicit stack, so deep trees cannot exhaust
    the Python stack.
    """
    out: list[bytes] = []
    # One frame per open list or run: [items, closing bytes, is_run, wrote_any].
    # The bottom frame holds the value itself and writes no parentheses.
    stack: list = [[iter((value,)), b"", False, False]]
    while stack:
        frame = stack[-1]
        try:
            item = next(frame[0])
        except StopIteration:
            stack.pop()
            out.append(frame[1])
            continue
        if isinstance(item, dict):
            stack.append([iter(_run_items(item)), b"", True, False])
            continue
        if _separator_due(stack):
            out.append(b" ")
        if isinstance(item, bytes):
            out.append(string(item))
        elif item is None:
            out.append(b"NIL")
        elif isinstance(item, bool):
            raise TypeError("bool is not an IMAP value")
        elif isinstance(item, int):
            out.append(b"%d" % item)
        elif isinstance(item, (list, tuple)):
            out.append(b"(")
            stack.append([iter(item), b")", False, False])
        elif isinstance(item, str):
            out.append(item.encode("ascii"))
        else:
            raise TypeError(f"cannot serialize {type(item).__name__} as an IMAP value")
    return b"".join(out)


def _separator_due(stack: list) -> bool:
    """Whether an SP goes before the item about to be written; marks it written.

    In a list, every item but the first follows an SP.  In a run, items
    follow each other directly, and the run's first item takes the place of
    the run in the enclosing list (or run), so it is decided there.
    """
    index = len(stack) - 1
    while stack[index][2] and not stack[index][3] and index > 0:
        stack[index][3] = True
        index -= 1
    frame = stack[index]
    due = frame[3] and not frame[2]
    frame[3] = True
    return due


_LITERAL_HEAD = re.compile(rb"\{(\d+)(\+|-)?\}\r\n")
_ATOM = re.compile(rb'\\?[^\x00-\x20\x7f(){"\\\[\]]+')


def parse_values(data: bytes) -> list:
    """Parse a sequence of IMAP values separated by spaces.

    Takes bytes.  Returns a list of trees: quoted strings and literals become
    bytes, ``NIL`` (any case) None, digit-only atoms int, parenthesized lists
    list, other atoms str.  An atom may contain a bracketed section such as
    ``BODY[HEADER.FIELDS (SUBJECT FROM)]<0>``; the whole is one atom.
    Literals are ``{n}\\r\\n`` followed by exactly n bytes (``{n+}`` is accepted).
    Leading/trailing whitespace and a trailing CRLF are ignored.
    Raises WireParseError on malformed input.
    """
    pos = 0
    end = len(data)
    root: list = []
    stack: list[list] = [root]
    while True:
        while pos < end and data[pos] in b" \r\n":
            pos += 1
        if pos >= end:
            break
        char = data[pos]
        if char == 0x28:  # (
            new: list = []
            stack[-1].append(new)
            stack.append(new)
            pos += 1
        elif char == 0x29:  # )
            if len(stack) == 1:
                raise WireParseError(f"unbalanced ')' at {pos}")
            stack.pop()
            pos += 1
        elif char == 0x22:  # "
            value, pos = _parse_quoted(data, pos)
            stack[-1].append(value)
        elif char == 0x7B:  # {
            match = _LITERAL_HEAD.match(data, pos)
            if match is None:
                raise WireParseError(f"bad literal header at {pos}")
            size = int(match.group(1))
            start = match.end()
            if start + size > end:
                raise WireParseError(f"literal of {size} bytes runs past the end")
            stack[-1].append(data[start:start + size])
            pos = start + size
        else:
            value, pos = _parse_atom(data, pos)
            stack[-1].append(value)
    if len(stack) != 1:
        raise WireParseError("unbalanced '(': list not closed")
    return root


def _parse_quoted(data: bytes, pos: int) -> tuple[bytes, int]:
    """Parse a quoted string starting at data[pos] == '"'; return (value, next pos)."""
    out = bytearray()
    pos += 1
    end = len(data)
    while pos < end:
        char = data[pos]
        if char == 0x22:
            return bytes(out), pos + 1
        if char == 0x5C:  # backslash
            pos += 1
            if pos >= end:
                break
            char = data[pos]
        elif char in (0x0D, 0x0A):
            raise WireParseError(f"CR/LF inside a quoted string at {pos}")
        out.append(char)
        pos += 1
    raise WireParseError("quoted string not closed")


def _parse_atom(data: bytes, pos: int) -> tuple:
    """Parse an atom (with an optional bracketed section) at data[pos]."""
    start = pos
    end = len(data)
    match = _ATOM.match(data, pos)
    pos = match.end() if match else pos
    if pos < end and data[pos] == 0x5B:  # [ ... ] section, may hold spaces and parens
        close = data.find(b"]", pos)
        if close < 0:
            raise WireParseError(f"section not closed at {pos}")
        pos = close + 1
        match = _ATOM.match(data, pos)  # e.g. <0.100>
        if match:
            pos = match.end()
    if pos == start:
        raise WireParseError(f"unexpected byte {data[pos:pos + 1]!r} at {pos}")
    text = data[start:pos]
    if text.isdigit():
        return int(text), pos
    if text.upper() == b"NIL":
        return None, pos
    return text.decode("latin-1"), pos
