"""MAIL and RCPT parameters (RFC 5321 §4.1.2 esmtp-param) and what each extension allows.

:func:`parse_parameters` splits the text after a path into keyword/value
pairs; :func:`apply_mail_parameters` and :func:`recipient_options` check each
one against its extension (SIZE, BODY, SMTPUTF8, AUTH, RET, ENVID, NOTIFY,
ORCPT) and record it. Every refusal is an :class:`ArgumentError` carrying its
reply, or a returned reply where the RFC gives a non-syntax code (552 for SIZE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailserverd.smtp import replies
from mailserverd.smtp.replies import Reply


class ArgumentError(Exception):
    """An argument is malformed; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply):
        super().__init__(reply.lines[0])
        self.reply = reply


@dataclass(frozen=True)
class RecipientOptions:
    """RFC 3461 §4 per-recipient DSN parameters: ``notify`` (``()`` when not
    given, else NEVER or a subset of SUCCESS, FAILURE, DELAY) and ``orcpt``
    (``addr-type;address``, xtext-decoded, or ``""``)."""

    notify: tuple[str, ...] = ()
    orcpt: str = ""


@dataclass
class Transaction:
    """One mail transaction (RFC 5321 §3.3): MAIL, then RCPTs, then DATA or BDAT.

    ``sender`` is the reverse-path as parsed (``""`` for ``<>``);
    ``recipients`` the canonical forward-paths accepted, in order, without
    duplicates, with their DSN ``options``; ``users`` the canonical local
    accounts they resolve to. ``ret``/``envid`` are RFC 3461 §4.3/§4.4;
    ``chunks`` collects BDAT data (RFC 3030) once the first BDAT came.
    """

    sender: str
    body: str = "7BIT"  # RFC 6152 BODY= parameter
    declared_size: int | None = None  # RFC 1870 SIZE= parameter
    smtputf8: bool = False  # RFC 6531 §3.4 SMTPUTF8 parameter
    ret: str = ""  # RFC 3461 §4.3: FULL, HDRS or "" (not given)
    envid: str = ""  # RFC 3461 §4.4, xtext-decoded
    auth: str = ""  # RFC 4954 §5 AUTH= (recorded, never trusted)
    recipients: list[str] = field(default_factory=list)
    options: dict[str, RecipientOptions] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    chunks: bytearray | None = None  # BDAT data so far (None: no BDAT yet)
    chunks_refused: Reply | None = None  # why the BDAT data will be refused at LAST

    def add_recipient(self, recipient: str, users: list[str],
                      options: RecipientOptions = RecipientOptions()) -> None:
        """Record an accepted recipient and the local users it reaches (deduplicated)."""
        if recipient not in self.recipients:
            self.recipients.append(recipient)
            self.options[recipient] = options
        for user in users:
            if user not in self.users:
                self.users.append(user)


def parse_parameters(rest: bytes, syntax: str, utf8: bool = False) -> dict[str, str | None]:
    """Parse ``SP esmtp-param *(SP esmtp-param)`` after a path (RFC 5321 §4.1.2).

    Returns upper-case keyword -> value (``None`` when there is no ``=``).
    Values are ASCII unless ``utf8`` (RFC 6531 §3.3 lets ORCPT carry UTF-8).
    Raises ArgumentError: 501 for malformed or repeated parameters.
    """
    params: dict[str, str | None] = {}
    if not rest:
        return params
    if not rest.startswith(b" "):
        raise ArgumentError(replies.syntax_error(syntax))
    for item in rest.split(b" "):
        if not item:
            continue  # several spaces: tolerated, as Postfix does
        keyword, equals, value = item.partition(b"=")
        if not keyword or not keyword.isascii() or not keyword.replace(b"-", b"").isalnum():
            raise ArgumentError(replies.syntax_error(syntax))
        if (not utf8 and not value.isascii()) or (equals and not value) or _has_controls(value):
            raise ArgumentError(replies.bad_parameter(f"Bad value for {keyword.decode()}"))
        name = keyword.decode("ascii").upper()
        if name in params:
            raise ArgumentError(replies.bad_parameter(f"Duplicate parameter {name}"))
        try:
            params[name] = value.decode("utf-8") if equals else None
        except UnicodeDecodeError:
            raise ArgumentError(replies.bad_parameter(f"Bad value for {name}")) from None
    return params


def _has_controls(value: bytes) -> bool:
    return any(byte < 0x21 or byte == 0x7F for byte in value)


_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


def decode_xtext(value: str, what: str) -> str:
    """RFC 3461 §4: xtext = *( xchar / "+" 2HEXCHAR ), xchar = 33..126 but "+" and "=".

    The decoded text must be printable US-ASCII (RFC 3461 §4.2, §4.4): no
    control character can be smuggled into a later DSN's header fields.
    Raises ArgumentError(501) for anything else.
    """
    plain = _XTEXT_HEX.sub("", value)
    if "+" in plain or "=" in plain or not all(33 <= ord(char) <= 126 for char in plain):
        raise ArgumentError(replies.bad_parameter(f"Bad xtext in {what}"))
    decoded = _XTEXT_HEX.sub(lambda match: chr(int(match.group(1), 16)), value)
    if not all(32 <= ord(char) <= 126 for char in decoded):
        raise ArgumentError(replies.bad_parameter(f"Bad character in {what}"))
    return decoded


def apply_mail_parameters(transaction: Transaction, params: dict[str, str | None],
                          size_max: int, offered: frozenset[str]) -> Reply | None:
    """Check MAIL's ``params`` and record them in ``transaction``.

    ``offered`` names the extensions advertised to this client (EHLO);
    a parameter of another one is 555 (RFC 5321 §4.1.1.11). Returns 552 when
    SIZE exceeds ``size_max`` (RFC 1870 §6.1), else ``None``. Raises
    ArgumentError for a bad value.
    """
    for name, value in params.items():
        if name not in offered:
            raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
        if name == "SIZE":
            # RFC 1870 §3: SIZE=1*20DIGIT.
            if value is None or not value.isdigit() or len(value) > 20:
                raise ArgumentError(replies.bad_parameter("Bad SIZE value"))
            if int(value) > size_max:
                return replies.S552_MESSAGE_TOO_BIG
            transaction.declared_size = int(value)
        elif name == "BODY":
            # RFC 6152 §2 (8BITMIME); BINARYMIME (RFC 3030 §3) is not offered.
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise ArgumentError(replies.bad_parameter("Bad BODY value"))
            transaction.body = value.upper()
        elif name == "SMTPUTF8":
            if value is not None:  # RFC 6531 §3.4: no value
                raise ArgumentError(replies.bad_parameter("SMTPUTF8 takes no value"))
            transaction.smtputf8 = True
        elif name == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):  # RFC 3461 §4.3
                raise ArgumentError(replies.bad_parameter("Bad RET value"))
            transaction.ret = value.upper()
        elif name == "ENVID":
            envid = decode_xtext(value or "", "ENVID")
            if not value or len(value) > 100:  # RFC 3461 §4.4: at most 100 characters
                raise ArgumentError(replies.bad_parameter("Bad ENVID value"))
            transaction.envid = envid
        elif name == "AUTH":
            # RFC 4954 §5: AUTH=<> or an xtext mailbox; recorded, never believed.
            if value is None:
                raise ArgumentError(replies.bad_parameter("Bad AUTH value"))
            transaction.auth = value if value == "<>" else decode_xtext(value, "AUTH")
    return None


_NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")


def recipient_options(params: dict[str, str | None], offered: frozenset[str]) -> RecipientOptions:
    """Check RCPT's ``params`` (RFC 3461 §4.1 NOTIFY, §4.2 ORCPT). Raises ArgumentError."""
    notify: tuple[str, ...] = ()
    orcpt = ""
    for name, value in params.items():
        if name not in ("NOTIFY", "ORCPT") or "DSN" not in offered:
            raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
        if name == "NOTIFY":
            words = tuple((value or "").upper().split(","))
            valid = words == ("NEVER",) or (
                words and all(word in _NOTIFY_KEYWORDS for word in words)
                and len(set(words)) == len(words))
            if not valid:
                raise ArgumentError(replies.bad_parameter("Bad NOTIFY value"))
            notify = words
        else:
            addr_type, semicolon, address = (value or "").partition(";")
            # RFC 3461 §4.2 rfc822; RFC 6533 §3 utf-8 (with SMTPUTF8).
            if not semicolon or not address or addr_type.lower() not in ("rfc822", "utf-8"):
                raise ArgumentError(replies.bad_parameter("Bad ORCPT value"))
            if addr_type.lower() == "rfc822":
                address = decode_xtext(address, "ORCPT")
            if len(address) > 500:
                raise ArgumentError(replies.bad_parameter("ORCPT too long"))
            orcpt = f"{addr_type.lower()};{address}"
    return RecipientOptions(notify=notify, orcpt=orcpt)
