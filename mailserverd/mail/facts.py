"""IMAP facts of a message, computed once at delivery and stored beside it.

:func:`compute_facts` parses the message (see :mod:`mailserverd.mail.mime`) and
returns a plain, msgpack-serializable dict, so that FETCH never parses a
message again:

``v``              format version (2; version 1 had no runs, see below)
``size``           RFC822.SIZE: the number of bytes of the message
``header_end``     offset just past the top-level header and its blank line
                   (where the body starts; BODY[HEADER] is raw[:header_end])
``envelope``       the ENVELOPE value tree (RFC 9051 §7.5.2)
``body``           the BODY value tree (non-extensible BODYSTRUCTURE)
``bodystructure``  the BODYSTRUCTURE value tree (RFC 9051 §7.5.2)
``parts``          the part offset tree ``[header_start, body_start, end, children]``
                   used by :mod:`mailserverd.mail.sections`

Value trees are bytes (IMAP string), None (NIL), int (number), list
(parenthesized list) and the run marker ``{"cat": [...]}`` (items written back
to back, no SP between them); :func:`mailserverd.imap.wire.serialize` writes
them, :func:`mailserverd.imap.wire.plain` splices runs away.  Runs hold the
parts of a multipart (``body-type-mpart = 1*body SP media-subtype``) and the
addresses of an ENVELOPE address list (``env-from = "(" 1*address ")"``),
which RFC 9051 §9 writes without SP between them.
Header text stays bytes as it is in the message: encoded words are not decoded
and 8-bit text stays 8-bit.

Where the RFCs leave room, the choices follow what established servers answer
(Dovecot is the reference the tests compare with); each is noted where made.
"""

from __future__ import annotations

import re

from mailserverd.mail.mime import (
    KIND_MESSAGE,
    KIND_MULTIPART,
    Part,
    parse_message,
    parse_params,
    skip_cfws,
)

__all__ = ["FACTS_VERSION", "compute_facts", "envelope_of", "parse_address_list"]

FACTS_VERSION = 2

# The run marker of mailserverd.imap.wire (its RUN_KEY), spelled here so that
# mail/ does not import protocol code.
_RUN_KEY = "cat"


def _run(items: list) -> dict:
    """Items written back to back (RFC 9051 §9 body-type-mpart, env-from)."""
    return {_RUN_KEY: items}


# ------------------------------------------------------------------ addresses
# RFC 5322 address-list parsing for ENVELOPE (RFC 9051 §7.5.2).  Lenient the
# way IMAP clients expect: read as many addresses as possible, stop at the
# first thing that cannot be parsed, and fill what is missing with markers
# instead of failing (the markers Dovecot uses, so clients see the same):
# a mailbox without "@domain" gets host MISSING_DOMAIN, one without a local
# part MISSING_MAILBOX, an <angle-addr> that does not parse host SYNTAX_ERROR;
# with no display name a trailing comment is the name ("user@host (Name)");
# groups become (NIL NIL "name" NIL) ... (NIL NIL NIL NIL).

# Most addresses read from one header field (a guard against huge headers).
ADDRESS_LIST_MAX = 10000

MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"
SYNTAX_ERROR = b"SYNTAX_ERROR"

# RFC 5322 §3.2.3 atext; 8-bit bytes are accepted as atext (RFC 6532 §3.2).
_ATEXT = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    b"!#$%&'*+-/=?^_`{|}~" + bytes(range(0x80, 0x100)))
_ATEXT_OR_DOT = _ATEXT | {0x2E}
_WSP = re.compile(rb"[ \t\r\n]*")
_SIMPLE_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')


class _Reader:
    """Position over one header value, with RFC 5322 lexical helpers.

    Methods return like the C idiom they mirror: 1 = more input follows,
    0 = end of input reached, -1 = syntax error.
    """

    __slots__ = ("data", "pos", "end", "last_comment")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment = b""

    def peek(self) -> int:
        """The current byte, or 0 at the end (like a NUL-terminated buffer)."""
        return self.data[self.pos] if self.pos < self.end else 0

    def skip_cfws(self) -> int:
        """Skip white space and comments (RFC 5322 §3.2.2); remember the last comment."""
        data, end = self.data, self.end
        while True:
            self.pos = _WSP.match(data, self.pos).end()
            if self.pos >= end:
                return 0
            if data[self.pos] != 0x28:
                return 1
            if self._skip_comment() < 0:
                return -1

    def _skip_comment(self) -> int:
        data, end = self.data, self.end
        out = bytearray()
        self.pos += 1
        level = 1
        while self.pos < end:
            char = data[self.pos]
            if char == 0x28:
                level += 1
            elif char == 0x29:
                level -= 1
                if level == 0:
                    self.pos += 1
                    self.last_comment = bytes(out)
                    return 1
            elif char in (0x0D, 0x0A):
                self.pos += 1
                continue
            elif char == 0x5C and self.pos + 1 < end and data[self.pos + 1] not in b"\r\n\x00":
                self.pos += 1
                char = data[self.pos]
            out.append(char)
            self.pos += 1
        return -1

    def quoted_string(self, out: bytearray) -> int:
        """Append the content of the quoted string at pos (RFC 5322 §3.2.4)."""
        data, end = self.data, self.end
        simple = _SIMPLE_QUOTED.match(data, self.pos)
        if simple is not None:
            out += simple.group(1)
            self.pos = simple.end()
            return self.skip_cfws()
        self.pos += 1
        while self.pos < end:
            char = data[self.pos]
            if char == 0x22:
                self.pos += 1
                return self.skip_cfws()
            if char in (0x0D, 0x0A):
                self.pos += 1
                continue
            if char == 0x5C:
                self.pos += 1
                if self.pos >= end:
                    return -1
                char = data[self.pos]
            out.append(char)
            self.pos += 1
        return -1

    def atom_or_dot(self, out: bytearray) -> int:
        """Append a run of atext and dots (obs-phrase allows dots)."""
        data, end = self.data, self.end
        start = self.pos
        while self.pos < end and data[self.pos] in _ATEXT_OR_DOT:
            self.pos += 1
        out += data[start:self.pos]
        if self.pos >= end:
            return 0
        return self.skip_cfws()

    def phrase(self, out: bytearray) -> int:
        """Parse a display name: words separated by one space (RFC 5322 §3.2.5)."""
        if self.pos >= self.end:
            return 0
        if self.peek() == 0x2E:
            return -1
        while True:
            if self.peek() == 0x22:
                result = self.quoted_string(out)
            else:
                result = self.atom_or_dot(out)
            if result <= 0:
                return result
            char = self.peek()
            if char not in _ATEXT_OR_DOT and char != 0x22:
                break
            out.append(0x20)
        return self.skip_cfws()

    def dot_atom(self, out: bytearray) -> int:
        """Parse a dot-atom, allowing CFWS around dots (RFC 822 compatibility)."""
        data, end = self.data, self.end
        if self.pos >= end or data[self.pos] not in _ATEXT:
            return -1
        start = self.pos
        self.pos += 1
        while self.pos < end:
            if data[self.pos] in _ATEXT:
                self.pos += 1
                continue
            out += data[start:self.pos]
            result = self.skip_cfws()
            if result <= 0:
                return result
            if data[self.pos] != 0x2E:
                return 1
            self.pos += 1
            out.append(0x2E)
            result = self.skip_cfws()
            if result <= 0:
                return result
            start = self.pos
        out += data[start:self.pos]
        return 0

    def domain(self, out: bytearray) -> int:
        """Parse ``"@" domain`` (dot-atom or domain-literal, RFC 5322 §3.4.1)."""
        self.pos += 1  # the '@'
        if self.skip_cfws() <= 0:
            return -1
        if self.peek() != 0x5B:
            return self.dot_atom(out)
        data, end = self.data, self.end
        start = self.pos
        self.pos += 1
        while self.pos < end:
            char = data[self.pos]
            if char == 0x5C:
                self.pos += 1
            elif char == 0x5D:
                self.pos += 1
                out += data[start:self.pos]
                return self.skip_cfws()
            self.pos += 1
        return -1


class _AddressListParser:
    """State of one address-list parse: the reader and the addresses so far."""

    def __init__(self, value: bytes):
        self.reader = _Reader(value)
        self.addresses: list[list] = []
        self._reset()

    def _reset(self) -> None:
        self.name: bytes | None = None
        self.route: bytes | None = None
        self.mailbox: bytes | None = None
        self.domain: bytes | None = None

    def _add(self) -> None:
        self.addresses.append([self.name, self.route, self.mailbox, self.domain])
        self._reset()

    def _add_filled(self) -> None:
        if self.mailbox is None:
            self.mailbox = MISSING_MAILBOX
        if not self.domain:
            self.domain = MISSING_DOMAIN
        self._add()

    def address_list(self) -> None:
        """address-list = address *("," address) (RFC 5322 §3.4)."""
        reader = self.reader
        if reader.skip_cfws() <= 0:
            return
        for _ in range(ADDRESS_LIST_MAX):
            if self._address() == 0:
                break
            if reader.peek() != 0x2C:
                break
            reader.pos += 1
            if reader.skip_cfws() <= 0:
                break

    def _address(self) -> int:
        start = self.reader.pos
        result = self._group()
        if result < 0:
            self.reader.pos = start
            self._reset()
            result = self._mailbox()
        return result

    def _group(self) -> int:
        """group = display-name ":" [group-list] ";" [CFWS] (RFC 5322 §3.4)."""
        reader = self.reader
        name = bytearray()
        if reader.phrase(name) <= 0 or reader.peek() != 0x3A:
            return -1
        reader.pos += 1
        result = reader.skip_cfws()
        self.mailbox = bytes(name)
        self._add()
        if result > 0 and reader.peek() != 0x3B:
            while True:
                if self._mailbox() <= 0:
                    result = -1
                    break
                if reader.peek() != 0x2C:
                    break
                reader.pos += 1
                if reader.skip_cfws() <= 0:
                    result = -1
                    break
        if result >= 0:
            if reader.peek() != 0x3B:
                result = -1
            else:
                reader.pos += 1
                result = reader.skip_cfws()
        self._add()  # end of group marker: (NIL NIL NIL NIL)
        return 0 if result == 0 else 1

    def _mailbox(self) -> int:
        """mailbox = name-addr / addr-spec (RFC 5322 §3.4)."""
        reader = self.reader
        start = reader.pos
        result = self._name_addr()
        if result < 0:
            reader.pos = start
            self._reset()
            result = self._addr_spec()
        self._add_filled()
        return result

    def _name_addr(self) -> int:
        reader = self.reader
        name = bytearray()
        if reader.phrase(name) <= 0 or reader.peek() != 0x3C:
            return -1
        self.name = bytes(name) or None
        if self._angle_addr() < 0:
            self.domain = SYNTAX_ERROR
        return 1 if reader.pos < reader.end else 0

    def _angle_addr(self) -> int:
        """angle-addr = "<" [obs-route] addr-spec ">" (RFC 5322 §3.4, §4.4)."""
        reader = self.reader
        reader.pos += 1
        if reader.skip_cfws() <= 0:
            return -1
        if reader.peek() == 0x40:
            if self._route() > 0 and reader.peek() == 0x3A:
                reader.pos += 1
            elif reader.pos >= reader.end:
                return -1
            if reader.skip_cfws() <= 0:
                return -1
        if reader.peek() != 0x3E:
            if self._addr_spec() < 0 or reader.peek() != 0x3E:
                return -1
        reader.pos += 1
        return reader.skip_cfws()

    def _route(self) -> int:
        reader = self.reader
        route = bytearray()
        while True:
            if reader.pos >= reader.end:
                return 0
            if reader.peek() != 0x40:
                break
            if route:
                route.append(0x2C)
            route.append(0x40)
            result = reader.domain(route)
            if result <= 0:
                return result
            while reader.skip_cfws() > 0 and reader.peek() == 0x2C:
                reader.pos += 1
        self.route = bytes(route)
        return 1

    def _addr_spec(self) -> int:
        """addr-spec = local-part "@" domain (RFC 5322 §3.4.1)."""
        reader = self.reader
        reader.last_comment = b""
        if reader.pos >= reader.end:
            return 0
        local = bytearray()
        if reader.peek() == 0x22:
            result = reader.quoted_string(local)
        else:
            result = reader.dot_atom(local)
        if result < 0:
            return -1
        self.mailbox = bytes(local)
        if result != 0 and reader.peek() == 0x40:
            domain = bytearray()
            domain_result = reader.domain(domain)
            if domain_result >= 0:
                self.domain = bytes(domain)
            if domain_result <= 0:
                result = domain_result
        if reader.last_comment:
            self.name = reader.last_comment
        return result


def parse_address_list(value: bytes) -> list[list] | None:
    """Parse an address-list header value into ENVELOPE address structures.

    Takes the raw header value (bytes, folding allowed).  Returns a list of
    [name, adl, mailbox, host] (bytes or None each), or None when there is no
    address.  Never raises.
    """
    parser = _AddressListParser(value)
    parser.address_list()
    return parser.addresses or None


# ------------------------------------------------------------------- envelope
# RFC 9051 §7.5.2 ENVELOPE field order.
_ENVELOPE_STRING_FIELDS = {b"date": 0, b"subject": 1, b"in-reply-to": 8, b"message-id": 9}
_ENVELOPE_ADDRESS_FIELDS = {b"from": 2, b"sender": 3, b"reply-to": 4, b"to": 5, b"cc": 6, b"bcc": 7}


def _unfold(value: bytes) -> bytes:
    """Remove the line breaks of a folded header value (RFC 5322 §2.2.3).

    The white space that starts each continuation line is kept, as unfolding
    requires; IMAP strings in ENVELOPE and BODYSTRUCTURE cannot hold CR/LF.
    """
    if b"\n" in value or b"\r" in value:
        # A tab that starts a continuation line is given as a space (as
        # Dovecot does; both are WSP, RFC 5322 §2.2.3).
        return value.replace(b"\n\t", b"\n ").replace(b"\r", b"").replace(b"\n", b"")
    return value


def envelope_of(fields: list[tuple[bytes, bytes]]) -> list:
    """Build the ENVELOPE value tree from a header's fields (RFC 9051 §7.5.2).

    Takes [(lower-case name, raw value)] as :func:`mime.header_fields` gives.
    Returns [date, subject, from, sender, reply-to, to, cc, bcc, in-reply-to,
    message-id].  Strings are the unfolded raw values (the first field of
    each name counts); address fields given more than once are read as one
    list, as if comma-separated (so that no address a MUA may show is hidden
    from the client).  An address field is NIL or ``[run(addresses)]`` (the
    addresses back to back, RFC 9051 §9 env-from).  Sender and Reply-To
    default to From when absent or empty (RFC 9051 §7.5.2).
    """
    envelope: list = [None] * 10
    addresses_by_index: dict[int, list] = {}
    for name, value in fields:
        index = _ENVELOPE_STRING_FIELDS.get(name)
        if index is not None:
            if envelope[index] is None:
                envelope[index] = _unfold(value)
            continue
        index = _ENVELOPE_ADDRESS_FIELDS.get(name)
        if index is not None:
            addresses = parse_address_list(value)
            if addresses:
                addresses_by_index.setdefault(index, []).extend(addresses)
    for index, addresses in addresses_by_index.items():
        envelope[index] = [_run(addresses)]
    if envelope[3] is None:
        envelope[3] = envelope[2]
    if envelope[4] is None:
        envelope[4] = envelope[2]
    return envelope


# -------------------------------------------------------------- bodystructure
_DEFAULT_CHARSET = b"us-ascii"  # RFC 2045 §5.2
_DEFAULT_ENCODING = b"7bit"     # RFC 2045 §6.1
_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
# RFC 9051 §7.5.2: a multipart with no parts cannot be written; like other
# servers we write one empty text/plain part in its place.
def _empty_body() -> list:
    return [b"text", b"plain", [b"charset", _DEFAULT_CHARSET], None, None, b"7bit", 0, 0]


def _param_list(params: list[tuple[bytes, bytes]], default_charset: bool) -> list | None:
    """Flatten parameters to ("name" "value" ...), NIL when empty.

    With default_charset, a missing charset is given as us-ascii (RFC 2045
    §5.2: the default for text/*).
    """
    flat: list = []
    seen_charset = False
    for name, value in params:
        flat.append(name)
        flat.append(value)
        if name.lower() == b"charset":
            seen_charset = True
    if default_charset and not seen_charset:
        flat.append(b"charset")
        flat.append(_DEFAULT_CHARSET)
    return flat or None


def _token_value(value: bytes | None) -> bytes | None:
    """The first token of a header value (after CFWS), or None."""
    if value is None:
        return None
    match = _TOKEN.match(value, skip_cfws(value, 0))
    return match.group() if match else None


def _disposition(part: Part) -> list | None:
    """Content-Disposition as ("type" (params)) (RFC 2183, RFC 9051 §7.5.2)."""
    value = part.field(b"content-disposition")
    if value is None:
        return None
    match = _TOKEN.match(value, skip_cfws(value, 0))
    if match is None:
        return None
    return [match.group(), _param_list(parse_params(value, match.end()), False)]


def _languages(part: Part) -> list | None:
    """Content-Language as a list of tags (RFC 3282), NIL when absent."""
    value = part.field(b"content-language")
    if value is None:
        return None
    tags = [tag for tag in (_token_value(item) for item in value.split(b",")) if tag]
    return tags or None


def _extension_tail(part: Part) -> list:
    """body-fld-dsp, body-fld-lang, body-fld-loc (RFC 9051 §9)."""
    location = part.field(b"content-location")
    return [_disposition(part), _languages(part),
            None if location is None else _unfold(location)]


def _optional_field(part: Part, name: bytes) -> bytes | None:
    value = part.field(name)
    return None if value is None else _unfold(value)


def _structures(raw: bytes, part: Part) -> tuple[list, list]:
    """Return (BODY, BODYSTRUCTURE) value trees for ``part`` (RFC 9051 §7.5.2).

    Recursion depth is bounded by mime.MIME_NESTING_MAX.
    """
    if part.kind == KIND_MULTIPART:
        if part.children:
            pairs = [_structures(raw, child) for child in part.children]
            bodies = [pair[0] for pair in pairs]
            structures = [pair[1] for pair in pairs]
        else:
            bodies = [_empty_body()]
            structures = [_empty_body() + [None, None, None, None]]
        # RFC 9051 §9 body-type-mpart = 1*body SP media-subtype: parts back to back.
        body = [_run(bodies)]
        structure = [_run(structures)]
        subtype = part.ctype_text[1] if part.ctype_text else b""
        body.append(subtype)
        params = part.params
        structure += [subtype, _param_list(params, False)] + _extension_tail(part)
        return body, structure
    if part.kind == KIND_MESSAGE:
        media_type, subtype = b"message", part.csubtype
    elif part.ctype == b"message" and part.csubtype in (b"rfc822", b"global"):
        # Nested deeper than MIME_NESTING_MAX: not parsed, so it is sent as
        # opaque data (body-type-msg would need its envelope and structure).
        media_type, subtype = b"application", b"octet-stream"
    elif part.ctype_text is not None:
        media_type, subtype = part.ctype_text
    else:  # RFC 2045 §5.2 default
        media_type, subtype = b"text", b"plain"
    is_text = part.ctype in (None, b"text")
    params = part.params
    encoding = _token_value(part.field(b"content-transfer-encoding")) or _DEFAULT_ENCODING
    basic = [media_type, subtype, _param_list(params, is_text),
             _optional_field(part, b"content-id"),
             _optional_field(part, b"content-description"),
             encoding, part.end - part.body_start]
    body = list(basic)
    structure = basic
    if is_text:
        lines = raw.count(b"\n", part.body_start, part.end)
        body.append(lines)
        structure.append(lines)
    elif part.kind == KIND_MESSAGE:
        child = part.children[0]
        envelope = envelope_of(child.fields)
        child_body, child_structure = _structures(raw, child)
        lines = raw.count(b"\n", part.body_start, part.end)
        body += [envelope, child_body, lines]
        structure += [envelope, child_structure, lines]
    structure += [_optional_field(part, b"content-md5")] + _extension_tail(part)
    return body, structure


def _offsets(part: Part) -> list:
    """The part offset tree [header_start, body_start, end, children]."""
    return [part.header_start, part.body_start, part.end,
            [_offsets(child) for child in part.children]]


def compute_facts(raw: bytes) -> dict:
    """Compute the IMAP facts of a message, to be stored at delivery.

    Takes the whole message (bytes, CRLF line ends).  Returns the dict
    described in the module docstring (only dict/list/bytes/int/None values,
    msgpack-serializable).  Never raises on any input bytes; work is linear
    in the message size and nesting is bounded by mime.MIME_NESTING_MAX.
    """
    root = parse_message(raw)
    body, structure = _structures(raw, root)
    return {
        "v": FACTS_VERSION,
        "size": len(raw),
        "header_end": root.body_start,
        "envelope": envelope_of(root.fields),
        "body": body,
        "bodystructure": structure,
        "parts": _offsets(root),
    }
