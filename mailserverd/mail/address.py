"""The one mail address parser: SMTP paths and bare addresses.

Grammar: RFC 5321 §4.1.2 (Path, Mailbox, Local-part, Domain, address-literal),
extended by RFC 6531 §3.3 (UTF-8 in atext, qtextSMTP and sub-domain) when the
caller says SMTPUTF8 is in force. Length limits: RFC 5321 §4.5.3.1.

Internationalised domains: parsing keeps the domain as the client wrote it
(U-labels stay UTF-8, so that mail can be relayed unchanged); each U-label is
checked by converting it with the standard library's ``encodings.idna`` (IDNA
2003 ToASCII with nameprep). :func:`canonical` stores domains in that A-label
form. Known difference from IDNA 2008 (RFC 5890): a few characters such as
"ß" and final sigma are mapped by nameprep (``ß`` -> ``ss``) instead of being
encoded; such domains are rare and the mapping is applied consistently.

Case: :func:`canonical` lower-cases the local part as well as the domain, so
``Alice@Example.COM`` and ``alice@example.com`` are one account, as with the
default case-insensitive lookups of Postfix and Dovecot. RFC 5321 §2.4 lets
the receiving host decide that local parts are case-insensitive.

Everyone who needs an address parsed uses this module: SMTP MAIL/RCPT, the
CLI (``user add``), IMAP/POP3 logins, the directory keys.
"""

from __future__ import annotations

import encodings.idna
import ipaddress

#: RFC 5321 §4.5.3.1.1: maximum octets in a local part.
LOCAL_PART_MAX = 64
#: RFC 5321 §4.5.3.1.2: maximum octets in a domain.
DOMAIN_MAX = 255
#: RFC 5321 §4.5.3.1.3: maximum octets in a path, "<" and ">" included.
PATH_MAX = 256
#: RFC 1035 §2.3.4: maximum octets in one DNS label.
LABEL_MAX = 63

# RFC 5321 §4.1.2 / RFC 5322 §3.2.3: atext, the characters of an Atom.
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LET_DIG = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LDH = _LET_DIG | {"-"}


class AddressError(ValueError):
    """An address or path does not parse; ``reason`` says why, in short words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_path(text: bytes, *, utf8: bool, allow_null: bool = True) -> str:
    """Parse a whole SMTP path ``<local@domain>`` and return ``local@domain``.

    ``text`` is exactly the path, nothing before or after it (see
    :func:`parse_path_prefix` to split off MAIL/RCPT parameters). ``<>`` (the
    null reverse-path) returns ``""`` unless ``allow_null`` is false. A source
    route ``<@a,@b:user@d>`` is checked and dropped (RFC 5321 §4.1.2, App. C).
    Non-ASCII is accepted only when ``utf8`` is true (RFC 6531 §3.3).
    An unnecessarily quoted local part is unquoted (``"ab"@x`` -> ``ab@x``,
    RFC 5321 §4.1.2 says they are the same). The domain is returned as sent.

    Raises :class:`AddressError`.
    """
    address, rest = parse_path_prefix(text, utf8=utf8, allow_null=allow_null)
    if rest:
        raise AddressError("unexpected text after path")
    return address


def parse_path_prefix(text: bytes, *, utf8: bool, allow_null: bool = True) -> tuple[str, bytes]:
    """Parse a path at the start of ``text``; return ``(address, rest)``.

    ``rest`` is every byte after the closing ``>`` unchanged (for SMTP, the
    ``SP`` and the ESMTP parameters). Same rules and errors as :func:`parse_path`;
    the path-length limit counts only the path itself.
    """
    # surrogateescape: bytes after the path (ESMTP parameters) are not ours
    # to judge; undecodable bytes inside the path are refused below.
    decoded = text.decode("utf-8" if utf8 else "ascii", "surrogateescape")
    cursor = _Cursor(decoded, 0)
    try:
        address = _parse_path_at(cursor, utf8, allow_null)
    except AddressError:
        _check_encoding(decoded[:cursor.pos + 1], utf8)
        raise
    path = decoded[:cursor.pos]
    # RFC 5321 §4.5.3.1.3
    if len(path.encode("utf-8")) > PATH_MAX:
        raise AddressError(f"path longer than {PATH_MAX} octets")
    return address, decoded[cursor.pos:].encode("utf-8" if utf8 else "ascii", "surrogateescape")


def _parse_path_at(cursor: "_Cursor", utf8: bool, allow_null: bool) -> str:
    """Path = "<" [ A-d-l ":" ] Mailbox ">" / "<>"; leaves the cursor after ">"."""
    if cursor.take() != "<":
        raise AddressError("path must start with '<'")
    if cursor.peek() == ">":
        if not allow_null:
            raise AddressError("null path not allowed here")
        cursor.pos += 1
        return ""
    if cursor.peek() == "@":
        _skip_source_route(cursor, utf8)
    address = _parse_mailbox(cursor, utf8)
    if cursor.take() != ">":
        raise AddressError("path must end with '>'")
    return address


def _check_encoding(text: str, utf8: bool) -> None:
    """Raise the precise AddressError for undecodable or (without SMTPUTF8) non-ASCII text."""
    if any("\udc80" <= char <= "\udcff" for char in text):
        raise AddressError("address is not valid UTF-8" if utf8 else "non-ASCII address requires SMTPUTF8")


def parse_address(text: str | bytes, *, utf8: bool = True) -> str:
    """Parse a bare ``local@domain`` (no angle brackets), as typed at a login or the CLI.

    Returns the address in the form :func:`parse_path` gives. ``utf8`` allows
    non-ASCII (RFC 6531); logins and the CLI accept it by default.
    Raises :class:`AddressError`.
    """
    decoded = _decode(text, utf8) if isinstance(text, bytes) else text
    if not utf8 and not decoded.isascii():
        raise AddressError("non-ASCII address requires SMTPUTF8")
    cursor = _Cursor(decoded, 0)
    address = _parse_mailbox(cursor, utf8)
    if not cursor.at_end():
        raise AddressError("unexpected text after address")
    # RFC 5321 §4.5.3.1.3 (the path adds two octets for "<" and ">")
    if len(address.encode("utf-8")) + 2 > PATH_MAX:
        raise AddressError(f"address longer than {PATH_MAX - 2} octets")
    return address


def split(address: str) -> tuple[str, str]:
    """Split a parsed address into ``(local_part, domain)`` at its last ``@``.

    A quoted local part may itself contain ``@``; the domain never does.
    Raises :class:`AddressError` when there is no ``@`` or either side is empty.
    """
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise AddressError("address must be local-part@domain")
    return local, domain


def canonical(address: str) -> str:
    """The key form of a parsed address, for store lookups and comparisons.

    Local part and domain are lower-cased (case-insensitive matching, see the
    module docstring); each U-label of the domain becomes its A-label
    (``xn--...``), the form :class:`~mailserverd.store.types.Domain` keeps.
    Quoting is kept as parsed. The null address ``""`` stays ``""``.
    Raises :class:`AddressError` if the address has no ``@`` or its domain is
    invalid (see :func:`canonical_domain`); the local part is not re-checked.
    """
    if address == "":
        return ""
    local, domain = split(address)
    return f"{local.lower()}@{canonical_domain(domain)}"


def canonical_domain(domain: str) -> str:
    """A domain (or address literal) in lower-case A-label form.

    Each label is checked (RFC 5321 §4.1.2 sub-domain, or a valid U-label),
    as is the 255-octet limit, so this also validates a domain typed at the
    CLI. Raises :class:`AddressError`.
    """
    if domain.startswith("["):
        return domain.lower()
    labels = domain.split(".")
    for label in labels:
        _check_label(label)
    key = ".".join(_to_a_label(label) for label in labels)
    if len(key) > DOMAIN_MAX:  # RFC 5321 §4.5.3.1.2
        raise AddressError(f"domain longer than {DOMAIN_MAX} octets")
    return key


# --------------------------------------------------------------------------
# internals


class _Cursor:
    """A position in the text being parsed."""

    def __init__(self, text: str, pos: int):
        self.text = text
        self.pos = pos

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def take(self) -> str:
        char = self.peek()
        self.pos += 1
        return char


def _decode(text: bytes, utf8: bool) -> str:
    """Bytes to str: ASCII only unless ``utf8`` (RFC 6531 §3.3), then strict UTF-8."""
    if not utf8:
        if not text.isascii():
            raise AddressError("non-ASCII address requires SMTPUTF8")
        return text.decode("ascii")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise AddressError("address is not valid UTF-8") from None


def _skip_source_route(cursor: _Cursor, utf8: bool) -> None:
    """Consume ``@dom,@dom:`` (A-d-l ":"); checked for syntax, then ignored (RFC 5321 App. C)."""
    while True:
        if cursor.take() != "@":
            raise AddressError("bad source route")
        _parse_domain(cursor, utf8)
        separator = cursor.take()
        if separator == ":":
            return
        if separator != ",":
            raise AddressError("bad source route")


def _parse_mailbox(cursor: _Cursor, utf8: bool) -> str:
    """Mailbox = Local-part "@" ( Domain / address-literal ), RFC 5321 §4.1.2."""
    if cursor.peek() == '"':
        local = _parse_quoted_local(cursor, utf8)
    else:
        local = _parse_dot_string(cursor, utf8)
    # RFC 5321 §4.5.3.1.1
    if len(local.encode("utf-8")) > LOCAL_PART_MAX:
        raise AddressError(f"local part longer than {LOCAL_PART_MAX} octets")
    if cursor.take() != "@":
        raise AddressError("missing '@' after local part")
    if cursor.peek() == "[":
        domain = _parse_address_literal(cursor)
    else:
        domain = _parse_domain(cursor, utf8)
    # RFC 5321 §4.5.3.1.2
    if len(domain.encode("utf-8")) > DOMAIN_MAX:
        raise AddressError(f"domain longer than {DOMAIN_MAX} octets")
    return f"{local}@{domain}"


def _is_utf8_non_ascii(char: str, utf8: bool) -> bool:
    """RFC 6531 §3.3 UTF8-non-ascii, allowed only under SMTPUTF8 (escaped bad bytes never)."""
    return utf8 and ord(char) > 0x7F and not "\udc80" <= char <= "\udcff"


def _is_atext(char: str, utf8: bool) -> bool:
    # RFC 6531 §3.3: atext =/ UTF8-non-ascii
    return char in _ATEXT or _is_utf8_non_ascii(char, utf8)


def _parse_dot_string(cursor: _Cursor, utf8: bool) -> str:
    """Dot-string = Atom *("." Atom): no leading, trailing or double dots."""
    start = cursor.pos
    while True:
        atom_start = cursor.pos
        while cursor.peek() and _is_atext(cursor.peek(), utf8):
            cursor.pos += 1
        if cursor.pos == atom_start:
            raise AddressError("empty or invalid local part")
        if cursor.peek() != ".":
            return cursor.text[start:cursor.pos]
        cursor.pos += 1


def _parse_quoted_local(cursor: _Cursor, utf8: bool) -> str:
    """Quoted-string = DQUOTE *QcontentSMTP DQUOTE; returns the minimal form.

    The unquoted content is re-quoted only if it is not a valid Dot-string
    (RFC 5321 §4.1.2: the forms are equivalent; SHOULD NOT quote needlessly).
    """
    cursor.take()  # the opening DQUOTE
    content: list[str] = []
    while True:
        char = cursor.take()
        if char == "":
            raise AddressError("unterminated quoted local part")
        if char == '"':
            break
        if char == "\\":
            # quoted-pairSMTP = %d92 %d32-126
            char = cursor.take()
            if not char or not 32 <= ord(char) <= 126:
                raise AddressError("bad quoted pair in local part")
        elif not (32 <= ord(char) <= 126 or _is_utf8_non_ascii(char, utf8)):
            # qtextSMTP = %d32-33 / %d35-91 / %d93-126 (RFC 6531: / UTF8-non-ascii)
            raise AddressError("bad character in quoted local part")
        content.append(char)
    text = "".join(content)
    if _is_dot_string(text, utf8):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_dot_string(text: str, utf8: bool) -> bool:
    atoms = text.split(".")
    return all(atom and all(_is_atext(c, utf8) for c in atom) for atom in atoms)


def _parse_domain(cursor: _Cursor, utf8: bool) -> str:
    """Domain = sub-domain *("." sub-domain); RFC 6531 adds U-label sub-domains."""
    start = cursor.pos
    while True:
        label_start = cursor.pos
        while cursor.peek() and (cursor.peek() in _LDH or _is_utf8_non_ascii(cursor.peek(), utf8)):
            cursor.pos += 1
        _check_label(cursor.text[label_start:cursor.pos])
        if cursor.peek() != ".":
            return cursor.text[start:cursor.pos]
        cursor.pos += 1


def _check_label(label: str) -> None:
    """sub-domain = Let-dig [Ldh-str] (RFC 5321 §4.1.2), or a U-label (RFC 6531 §3.3)."""
    if not label:
        raise AddressError("empty domain label")
    if label.isascii():
        if label[0] not in _LET_DIG or label[-1] not in _LET_DIG or not set(label) <= _LDH:
            raise AddressError("domain label must be letters, digits and inner hyphens")
        if len(label) > LABEL_MAX:
            raise AddressError(f"domain label longer than {LABEL_MAX} octets")
        return
    if not set(_to_a_label(label)) <= _LDH:  # STD3 rules, as for ASCII labels
        raise AddressError("invalid internationalised domain label")


def _to_a_label(label: str) -> str:
    """One label in lower-case ASCII (A-label for a U-label). Raises AddressError."""
    if label.isascii():
        return label.lower()
    try:
        return encodings.idna.ToASCII(label).decode("ascii").lower()
    except UnicodeError:
        raise AddressError("invalid internationalised domain label") from None


def _parse_address_literal(cursor: _Cursor) -> str:
    """address-literal = "[" ( IPv4 / "IPv6:" IPv6 ) "]", RFC 5321 §4.1.3."""
    end = cursor.text.find("]", cursor.pos)
    if end < 0:
        raise AddressError("unterminated address literal")
    inner = cursor.text[cursor.pos + 1:end]
    if inner[:5].lower() == "ipv6:":
        _check_ipv6(inner[5:])
    elif ":" in inner:
        # General-address-literal: only the IPv6 tag is registered.
        raise AddressError("unsupported address literal")
    else:
        _check_ipv4(inner)
    literal = cursor.text[cursor.pos:end + 1]
    cursor.pos = end + 1
    return literal


def _check_ipv4(text: str) -> None:
    """IPv4-address-literal = Snum 3("." Snum), Snum = 1*3DIGIT of value 0-255."""
    parts = text.split(".")
    if len(parts) != 4 or not all(
        1 <= len(p) <= 3 and p.isascii() and p.isdigit() and int(p) <= 255 for p in parts
    ):
        raise AddressError("bad IPv4 address literal")


def _check_ipv6(text: str) -> None:
    """IPv6-addr of RFC 5321 §4.1.3 (full, compressed, and with an IPv4 tail)."""
    if not text.isascii() or "%" in text:
        raise AddressError("bad IPv6 address literal")
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise AddressError("bad IPv6 address literal") from None
