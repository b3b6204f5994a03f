"""MIME structure parser: a message (bytes) into a tree of parts with byte offsets.

The parser works on the raw bytes and never copies or rewrites them; every part
is described by offsets into the message, so FETCH can later slice any section
from the stored message without parsing it again.

Boundary rules follow RFC 2046 §5.1.1 as real servers apply them (Dovecot is the
reference the tests compare with):

- a boundary line is a line that starts with ``--`` followed by the boundary of
  any enclosing multipart; only the start must match (trailing white space or
  anything else may follow), the longest matching boundary wins, and ``--`` after
  it marks the closing delimiter;
- the line break before a boundary line belongs to the boundary, not to the part
  (RFC 2046 §5.1.1: "the CRLF preceding the boundary delimiter line is
  conceptually attached to the boundary");
- a boundary line of an enclosing multipart also ends every part inside it, and
  also ends a header that has no blank line;
- after the closing delimiter, the epilogue runs until an enclosing boundary or
  the end of the message.

Pathological input is bounded: nesting deeper than :data:`MIME_NESTING_MAX` or
more than :data:`MIME_PARTS_MAX` parts turns further multiparts and message
parts into leaves.  The parser is iterative (no recursion) and never raises on
any input bytes.
"""

from __future__ import annotations

import bisect
import re

__all__ = [
    "MIME_NESTING_MAX",
    "MIME_PARTS_MAX",
    "BOUNDARY_MAX",
    "KIND_LEAF",
    "KIND_MULTIPART",
    "KIND_MESSAGE",
    "Part",
    "parse_message",
    "header_fields",
    "FACT_FIELDS",
    "header_end",
    "parse_content_type",
    "parse_params",
    "skip_cfws",
]

# Deepest nesting of multipart and message/rfc822 parts we descend into (Dovecot
# uses the same default, max_nested_mime_parts = 100).  Deeper parts are leaves.
MIME_NESTING_MAX = 100
# Most parts in one message (Dovecot: max_total_mime_parts = 10000).  After
# that, no further boundary is recognised.
MIME_PARTS_MAX = 10000
# RFC 2046 §5.1.1 allows at most 70 characters; longer ones are truncated (as
# Dovecot does) so that a hostile boundary cannot make matching expensive.
BOUNDARY_MAX = 80

# The header fields IMAP facts are made of: MIME (RFC 2045 §3, RFC 2183,
# RFC 3282, RFC 2557) and ENVELOPE (RFC 9051 §7.5.2) fields.
FACT_FIELDS = frozenset((
    b"content-type", b"content-transfer-encoding", b"content-id",
    b"content-description", b"content-disposition", b"content-language",
    b"content-location", b"content-md5",
    b"date", b"subject", b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc",
    b"in-reply-to", b"message-id"))

KIND_LEAF = 0
KIND_MULTIPART = 1
KIND_MESSAGE = 2  # message/rfc822 (or message/global): one child, the message


class Part:
    """One MIME part: offsets into the message and its parsed content headers.

    ``header_start``  first byte of the part's header (for a multipart child,
                      the byte after the boundary line; for the top level, 0)
    ``body_start``    first byte of the body (after the blank line, or where a
                      header without blank line stopped)
    ``end``           one past the last byte of the body (the line break before
                      a boundary is not included)
    ``fields``        list of (lower-case name, raw value) of the header fields
                      that matter for IMAP facts (:data:`FACT_FIELDS`); values
                      keep their folding line breaks (as LF), start after the
                      colon and optional leading white space
    ``params``        Content-Type parameters [(name as written, value)]
    ``ctype``/``csubtype``  lower-case bytes, or None when there is no valid
                      Content-Type (RFC 2045 §5.2: then text/plain)
    ``ctype_text``    (type, subtype) as written in the header, or None
    ``ctype_rest``    the Content-Type value after the media type (parameters)
    ``kind``          KIND_LEAF, KIND_MULTIPART or KIND_MESSAGE
    ``children``      child parts (multipart), or [encapsulated message]
    ``in_digest``     True when the parent is multipart/digest (default type
                      message/rfc822, RFC 2046 §5.1.5)
    """

    __slots__ = ("header_start", "body_start", "end", "fields", "ctype",
                 "csubtype", "ctype_text", "ctype_rest", "kind", "children",
                 "in_digest", "depth", "first_fields", "params")

    def __init__(self, header_start: int, depth: int, in_digest: bool = False):
        self.header_start = header_start
        self.body_start = header_start
        self.end = header_start
        self.fields: list[tuple[bytes, bytes]] = []
        self.ctype: bytes | None = None
        self.csubtype: bytes | None = None
        self.ctype_text: tuple[bytes, bytes] | None = None
        self.ctype_rest = b""
        self.kind = KIND_LEAF
        self.children: list[Part] = []
        self.in_digest = in_digest
        self.depth = depth
        self.first_fields: dict[bytes, bytes] | None = None
        self.params: list[tuple[bytes, bytes]] = []

    def field(self, name: bytes) -> bytes | None:
        """Return the raw value of the first field called ``name`` (lower case), or None."""
        first = self.first_fields
        if first is None:
            first = self.first_fields = {}
            for field_name, value in reversed(self.fields):
                first[field_name] = value
        return first.get(name)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Part({self.header_start},{self.body_start},{self.end},"
                f"{self.ctype!r}/{self.csubtype!r},kind={self.kind},"
                f"children={len(self.children)})")


# ---------------------------------------------------------------- header
_HEADER_END = re.compile(rb"\n\r?\n")
_LINE_STARTS_DASHES = re.compile(rb"\n--")


def header_end(raw: bytes, start: int, limit: int | None = None) -> tuple[int, int]:
    """Find the end of the header that starts at ``start``.

    Returns (end of header fields, start of body): the header fields end after
    the last field's line break; the body starts after the blank line (RFC 5322
    §2.1).  A header with no blank line runs to ``limit`` (default: the end).
    """
    if limit is None:
        limit = len(raw)
    if raw.startswith(b"\r\n", start) and start + 2 <= limit:
        return start, start + 2
    if raw.startswith(b"\n", start) and start + 1 <= limit:
        return start, start + 1
    match = _HEADER_END.search(raw, start, limit)
    if match is None:
        return limit, limit
    return match.start() + 1, match.end()


def header_fields(raw: bytes, start: int, end: int,
                  wanted: frozenset[bytes] | None = None) -> list[tuple[bytes, bytes]]:
    """Split the header bytes raw[start:end] into fields.

    Returns a list of (lower-case name, value) in header order, where value
    is everything after the colon with leading white space skipped and the
    final line break removed; folded lines keep their line breaks (RFC 5322
    §2.2.3 unfolding is left to the consumer).  With ``wanted``, only
    fields with those names are returned.
    A line without a colon, and a continuation line at the very start, are
    not fields and are skipped.
    """
    fields: list[list[bytes]] = []
    current = None
    for line in raw[start:end].split(b"\n"):
        if not line:
            continue
        first = line[0]
        if first == 0x20 or first == 0x09:
            if current is not None:
                current.append(line)
            continue
        colon = line.find(b":")
        if colon <= 0:
            current = None
            continue
        name = line[:colon].rstrip(b" \t").lower()
        if wanted is not None and name not in wanted:
            current = None
            continue
        current = [name, line[colon + 1:].lstrip(b" \t")]
        fields.append(current)
    result = []
    for field in fields:
        value = field[1] if len(field) == 2 else b"\n".join(field[1:])
        result.append((field[0], value[:-1] if value.endswith(b"\r") else value))
    return result


# ------------------------------------------------------- content-type syntax
# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>
_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
_WSP = re.compile(rb"[ \t\r\n]*")
_SIMPLE_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')


def skip_cfws(text: bytes, pos: int) -> int:
    """Skip white space, line breaks and (nested) comments (RFC 5322 §3.2.2) from pos."""
    end = len(text)
    while True:
        pos = _WSP.match(text, pos).end()
        if pos >= end or text[pos] != 0x28:  # (
            return pos
        depth = 0
        while pos < end:
            char = text[pos]
            if char == 0x5C:  # quoted-pair
                pos += 2
                continue
            pos += 1
            if char == 0x28:
                depth += 1
            elif char == 0x29:
                depth -= 1
                if depth == 0:
                    break
        pos = min(pos, end)


def parse_quoted_string(text: bytes, pos: int) -> tuple[bytes, int]:
    """Parse a quoted string at text[pos] == '"'; return (content, position after).

    Quoted pairs are unescaped; folding line breaks are removed (RFC 5322
    §3.2.4).  An unterminated string runs to the end.
    """
    simple = _SIMPLE_QUOTED.match(text, pos)
    if simple is not None:
        return simple.group(1), simple.end()
    out = bytearray()
    pos += 1
    end = len(text)
    while pos < end:
        char = text[pos]
        if char == 0x22:
            return bytes(out), pos + 1
        if char == 0x5C and pos + 1 < end:
            pos += 1
            char = text[pos]
        elif char in (0x0D, 0x0A):
            pos += 1
            continue
        out.append(char)
        pos += 1
    return bytes(out), pos


def parse_content_type(value: bytes) -> tuple[bytes | None, bytes | None, bool, int]:
    """Parse the media type of a Content-Type value (RFC 2045 §5.1).

    Returns (type, subtype, ok, position after the media type), type and
    subtype as written (not case-folded); subtype is b"" when missing; ok is
    False when the syntax is broken (parameters should then not be read).
    """
    pos = skip_cfws(value, 0)
    match = _TOKEN.match(value, pos)
    if match is None:
        return None, None, False, pos
    media_type = match.group()
    pos = skip_cfws(value, match.end())
    if pos >= len(value) or value[pos] != 0x2F:  # /
        return media_type, b"", False, pos
    pos = skip_cfws(value, pos + 1)
    match = _TOKEN.match(value, pos)
    if match is None:
        return media_type, b"", False, pos
    return media_type, match.group(), True, skip_cfws(value, match.end())


def parse_params(value: bytes, pos: int = 0) -> list[tuple[bytes, bytes]]:
    """Parse ``*(";" attribute "=" value)`` from value[pos:] (RFC 2045 §5.1).

    Returns [(attribute as written, value bytes)] in order.  RFC 2231
    continuations (``name*0``, ``name*1*``...) are merged into one parameter
    (``name`` or, when any section is extended, ``name*``) without decoding.
    Broken parameters are skipped up to the next ``;``.
    """
    plain: list[tuple[bytes, bytes]] = []
    sections: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    end = len(value)
    while True:
        pos = skip_cfws(value, pos)
        if pos >= end:
            break
        if value[pos] != 0x3B:  # ;
            pos = _skip_to_semicolon(value, pos)
            continue
        pos = skip_cfws(value, pos + 1)
        match = _TOKEN.match(value, pos)
        if match is None:
            pos = _skip_to_semicolon(value, pos)
            continue
        name = match.group()
        pos = skip_cfws(value, match.end())
        if pos >= end or value[pos] != 0x3D:  # =
            pos = _skip_to_semicolon(value, pos)
            continue
        pos = skip_cfws(value, pos + 1)
        if pos < end and value[pos] == 0x22:
            param_value, pos = parse_quoted_string(value, pos)
        else:
            match = _TOKEN.match(value, pos)
            if match is None:
                pos = _skip_to_semicolon(value, pos)
                continue
            param_value = match.group()
            pos = match.end()
        _add_param(plain, sections, name, param_value)
    for name in sorted(sections):
        parts = sorted(sections[name], key=lambda item: item[0])
        extended = any(part[1] for part in parts)
        merged = b"".join(part[2] for part in parts)
        plain.append((name + b"*" if extended else name, merged))
    return plain


def _skip_to_semicolon(value: bytes, pos: int) -> int:
    semicolon = value.find(b";", pos)
    return len(value) if semicolon < 0 else semicolon


_RFC2231_SECTION = re.compile(rb"^(.*?)\*(?:(\d{1,4})(\*)?)?$")


def _add_param(plain, sections, name: bytes, param_value: bytes) -> None:
    """Store one parameter; RFC 2231 §3/§4 sections are collected for merging."""
    if b"*" not in name:
        plain.append((name, param_value))
        return
    match = _RFC2231_SECTION.match(name)
    if match is None:
        plain.append((name, param_value))
        return
    base, number, star = match.groups()
    if number is None:  # name* : a single extended value
        sections.setdefault(base, []).append((0, True, param_value))
    else:
        sections.setdefault(base, []).append((int(number), star is not None, param_value))


# ----------------------------------------------------------------- boundaries
class _Boundaries:
    """The boundary lines of a message and the stack of active boundaries.

    Matching a line against all active boundaries is one regular expression
    match (alternatives longest first), so a message full of boundary-like
    lines under deep nesting costs time linear in its size.
    """

    __slots__ = ("raw", "_lines", "index", "active", "disabled", "_pattern", "_owner_of")

    def __init__(self, raw: bytes):
        self.raw = raw
        self._lines: list[int] | None = None
        self.index = 0
        self.active: list[tuple[bytes, Part]] = []
        self.disabled = False
        self._pattern = None
        self._owner_of: dict[bytes, int] = {}

    def push(self, boundary: bytes, part: Part) -> None:
        """Make ``boundary`` (owned by the multipart ``part``) active."""
        self.active.append((boundary, part))
        self._pattern = None

    def truncate(self, count: int) -> None:
        """Keep only the ``count`` outermost active boundaries."""
        del self.active[count:]
        self._pattern = None

    def find(self, pos: int, limit: int, peek: bool = False) -> tuple[int, int, bool, int] | None:
        """Return the first boundary line starting in [pos, limit) as
        (line start, index in active stack, is closing, next line start), or None.

        Lines before the one returned are not looked at again by later calls,
        unless ``peek`` is set.
        """
        if not self.active or self.disabled:
            return None
        lines = self._lines
        if lines is None:  # start offsets of all lines that begin with "--"
            lines = [m.start() + 1 for m in _LINE_STARTS_DASHES.finditer(self.raw)]
            if self.raw.startswith(b"--"):
                lines.insert(0, 0)
            self._lines = lines
        if self._pattern is None:
            self._compile()
        pattern = self._pattern
        raw = self.raw
        index = bisect.bisect_left(lines, pos, self.index)
        count = len(lines)
        while index < count and lines[index] < limit:
            start = lines[index]
            index += 1
            line_end = raw.find(b"\n", start)
            text_end = len(raw) if line_end < 0 else line_end
            match = pattern.match(raw, start + 2, text_end)
            if match is not None:
                if not peek:
                    self.index = index - 1
                boundary = match.group()
                # RFC 2046 §5.1.1: "--" right after the boundary closes the multipart
                closing = raw.startswith(b"--", match.end()) and match.end() + 2 <= text_end
                next_line = len(raw) if line_end < 0 else line_end + 1
                return start, self._owner_of[boundary], closing, next_line
        if not peek:
            self.index = index
        return None

    def _compile(self) -> None:
        # The longest matching boundary wins; for equal boundaries, the
        # innermost (RFC 2046 §5.1.2 asks for distinct ones, but nested
        # parts reuse them in the wild).
        owner_of = {}
        for which, (boundary, _part) in enumerate(self.active):
            owner_of[boundary] = which
        self._owner_of = owner_of
        alternatives = sorted(owner_of, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(b) for b in alternatives))


# --------------------------------------------------------------------- parser
def parse_message(raw: bytes) -> Part:
    """Parse ``raw`` (a whole message) into its MIME tree.

    Takes the message bytes (CRLF line ends expected; bare LF is tolerated).
    Returns the root :class:`Part` (header_start 0, end len(raw)).  Never
    raises on any input; iterative, bounded by MIME_NESTING_MAX/MIME_PARTS_MAX.
    """
    size = len(raw)
    bounds = _Boundaries(raw)
    root = Part(0, 0)
    open_parts: list[Part] = [root]  # chain from the root to the current part
    part_count = 1
    part = root
    while True:
        found = _read_header(raw, part, bounds, size)
        part_count = _classify(part, bounds, part_count)
        if part.kind == KIND_MESSAGE:
            child = Part(part.body_start, part.depth + 1)
            part.children.append(child)
            open_parts.append(child)
            part = child
            continue
        scan_from = part.body_start
        if found is None:
            found = bounds.find(scan_from, size)
        # walk boundary lines until one starts a new part (or the message ends)
        while True:
            if found is None:
                for open_part in open_parts:
                    open_part.end = size
                return root
            line_start, which, closing, next_line = found
            owner = bounds.active[which][1]
            _close_until(open_parts, owner, raw, line_start, scan_from)
            if closing:
                # RFC 2046 §5.1.1: the epilogue follows the close delimiter's line.
                bounds.truncate(which)
                scan_from = next_line
                found = bounds.find(scan_from, size)
                continue
            bounds.truncate(which + 1)
            if part_count >= MIME_PARTS_MAX:
                bounds.disabled = True
                found = None
                continue
            part_count += 1
            in_digest = owner.csubtype == b"digest"
            part = Part(next_line, owner.depth + 1, in_digest)
            owner.children.append(part)
            open_parts.append(part)
            break


def _read_header(raw: bytes, part: Part, bounds: _Boundaries, size: int):
    """Find the part's header end and fields.  Returns a boundary match if a
    boundary line ended the header (body is then empty), else None."""
    # A boundary line also ends a header that lacks its blank line; looking
    # for the blank line only up to the next boundary keeps this linear.
    found = bounds.find(part.header_start, size, peek=True)
    limit = size if found is None else found[0]
    fields_end, body_start = header_end(raw, part.header_start, limit)
    if found is not None and fields_end >= limit:  # no blank line before it
        found = bounds.find(part.header_start, size)  # commit the match
        fields_end = body_start = found[0]
    else:
        found = None
    part.body_start = body_start
    part.fields = header_fields(raw, part.header_start, fields_end, FACT_FIELDS)
    return found


def _classify(part: Part, bounds: _Boundaries, part_count: int) -> int:
    """Set the part's content type and kind; push its boundary if multipart.

    Returns the part count, raised by one for an encapsulated message.
    """
    value = part.field(b"content-type")
    if value is not None:
        media_type, subtype, valid, rest = parse_content_type(value)
        # RFC 2045 §5.2: a syntactically invalid Content-Type is taken as
        # text/plain; charset=us-ascii, like a missing one.
        if valid:
            part.ctype, part.csubtype = media_type.lower(), subtype.lower()
            part.ctype_text = (media_type, subtype)
            part.ctype_rest = value[rest:]
            part.params = parse_params(part.ctype_rest)
    elif part.in_digest:
        # RFC 2046 §5.1.5: in a digest the default type is message/rfc822.
        part.ctype, part.csubtype = b"message", b"rfc822"
        part.ctype_text = (b"message", b"rfc822")
    too_deep = part.depth >= MIME_NESTING_MAX - 1 or part_count >= MIME_PARTS_MAX
    if part.ctype == b"multipart":
        # A multipart without a usable boundary (or too deep) has no parts.
        part.kind = KIND_MULTIPART
        if not too_deep:
            for name, param in part.params:
                if name.lower() == b"boundary":
                    if param:
                        bounds.push(param[:BOUNDARY_MAX], part)
                    break
    elif part.ctype == b"message" and part.csubtype in (b"rfc822", b"global") \
            and not too_deep:
        part.kind = KIND_MESSAGE
        return part_count + 1
    return part_count


def _close_until(open_parts: list[Part], owner: Part, raw: bytes,
                 line_start: int, scan_from: int) -> None:
    """Close every open part inside ``owner`` at the boundary line ``line_start``.

    The line break before the boundary line belongs to the boundary (RFC 2046
    §5.1.1), so a part's body ends before it, unless that line break was
    already consumed before ``scan_from`` (it ended a previous boundary line
    or the header).
    """
    floor_base = scan_from
    while open_parts and open_parts[-1] is not owner:
        closed = open_parts.pop()
        floor = max(closed.body_start, floor_base)
        end = line_start
        if end > floor and raw[end - 1] == 0x0A:
            end -= 1
            if end > floor and raw[end - 1] == 0x0D:
                end -= 1
        closed.end = end
