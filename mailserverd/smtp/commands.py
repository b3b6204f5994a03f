"""The SMTP command table and what each command does.

:data:`COMMANDS` maps a command verb to a :class:`Command`: its handler, the
session phases in which it is valid, and its syntax (the one text used both by
HELP and by the 501 reply, aiosmtpd's ``@syntax`` idea). The session looks a
verb up in this table and nowhere else; client input never names a method.

A handler takes the session and the argument bytes after the verb, and returns
a :class:`~mailserverd.smtp.replies.Reply` or a Deferred firing with one (the
session then waits before it reads the next pipelined command, RFC 2920 §3).
It may raise :class:`~mailserverd.errors.MailError` for a reply carried by an
error. Flow changes (enter DATA, start TLS, close) are requested through the
session's methods and happen after the reply is sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Union

from twisted.internet.defer import Deferred

from mailserverd.errors import MailError
from mailserverd.mail.address import AddressError, canonical, parse_path_prefix
from mailserverd.smtp import replies
from mailserverd.smtp.replies import Reply

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.smtp.session import SMTPSession


class Phase(enum.Enum):
    """Where a session is in the dialogue; commands declare the phases they accept."""

    GREETED = "greeted"  # connected (or TLS just started): no HELO/EHLO yet
    READY = "ready"  # HELO/EHLO done, no mail transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one recipient accepted


ANY_PHASE = frozenset(Phase)
AFTER_HELO = frozenset({Phase.READY, Phase.MAIL, Phase.RCPT})


@dataclass
class Transaction:
    """One mail transaction (RFC 5321 §3.3): MAIL, then RCPTs, then DATA.

    ``sender`` is the reverse-path as parsed (``""`` for ``<>``);
    ``recipients`` the canonical forward-paths accepted, in order, without
    duplicates; ``users`` the canonical local accounts they resolve to.
    """

    sender: str
    body: str = "7BIT"  # RFC 6152 BODY= parameter
    declared_size: int | None = None  # RFC 1870 SIZE= parameter
    recipients: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    def add_recipient(self, recipient: str, users: list[str]) -> None:
        """Record an accepted recipient and the local users it reaches (deduplicated)."""
        if recipient not in self.recipients:
            self.recipients.append(recipient)
        for user in users:
            if user not in self.users:
                self.users.append(user)


HandlerResult = Union[Reply, "Deferred[Reply]"]
Handler = Callable[["SMTPSession", bytes], HandlerResult]


@dataclass(frozen=True)
class Command:
    """One table entry: ``handler`` runs when the session is in one of ``phases``.

    ``syntax`` is shown by HELP and in the 501 reply. ``wrong_phase`` maps a
    phase outside ``phases`` to its 503 reply when the default
    (:data:`SEQUENCE_REPLIES`) would be misleading.
    """

    handler: Handler
    phases: frozenset[Phase]
    syntax: str
    wrong_phase: Mapping[Phase, Reply] = field(default_factory=dict)

    def sequence_reply(self, phase: Phase) -> Reply:
        """The 503 reply for this command issued in ``phase`` (RFC 5321 §4.1.4)."""
        return self.wrong_phase.get(phase) or SEQUENCE_REPLIES.get(phase, replies.S503_BAD_SEQUENCE)


SEQUENCE_REPLIES: dict[Phase, Reply] = {
    Phase.GREETED: replies.S503_HELO_FIRST,
    Phase.READY: replies.S503_MAIL_FIRST,
    Phase.MAIL: replies.S503_RCPT_FIRST,
    Phase.RCPT: replies.S503_NESTED_MAIL,
}


# --- arguments


class ArgumentError(Exception):
    """An argument is malformed; ``reply`` is what the client gets."""

    def __init__(self, reply: Reply):
        super().__init__(reply.lines[0])
        self.reply = reply


def _no_argument(arg: bytes, syntax: str) -> None:
    """Raise ArgumentError (501 with ``syntax``) unless ``arg`` is empty (RFC 5321 §4.1.1)."""
    if arg.strip(b" "):
        raise ArgumentError(replies.syntax_error(syntax))


def _client_name(arg: bytes, syntax: str) -> str:
    """The HELO/EHLO name: one token of printable ASCII (RFC 5321 §4.1.1.1).

    Strictly a Domain or address-literal; like Postfix we accept any such
    token, since it is only recorded (in Received:) and never trusted.
    """
    name = arg.strip(b" ")
    if not name or b" " in name or not all(0x21 <= byte <= 0x7E for byte in name):
        raise ArgumentError(replies.reply(501, "", f"Syntax: {syntax}"))
    return name.decode("ascii")


def _split_keyword(arg: bytes, keyword: bytes, syntax: str) -> bytes:
    """Return what follows ``keyword`` (``FROM:``/``TO:``, any case) in ``arg``.

    Spaces after the colon are tolerated (RFC 5321 §4.1.1.2 has none, but
    common clients send them). Raises ArgumentError(501).
    """
    if arg[:len(keyword)].upper() != keyword:
        raise ArgumentError(replies.syntax_error(syntax))
    return arg[len(keyword):].lstrip(b" ")


def _parameters(rest: bytes, syntax: str) -> dict[str, str | None]:
    """Parse ``SP esmtp-param *(SP esmtp-param)`` after a path (RFC 5321 §4.1.2).

    Returns upper-case keyword -> value (``None`` when there is no ``=``).
    Raises ArgumentError: 501 for malformed or repeated parameters.
    """
    params: dict[str, str | None] = {}
    if not rest:
        return params
    if not rest.startswith(b" "):
        raise ArgumentError(replies.syntax_error(syntax))
    for item in rest.split():
        keyword, equals, value = item.partition(b"=")
        if not keyword or not keyword.isascii() or not keyword.replace(b"-", b"").isalnum():
            raise ArgumentError(replies.syntax_error(syntax))
        if not value.isascii() or (equals and not value):
            raise ArgumentError(replies.bad_parameter(f"Bad value for {keyword.decode()}"))
        name = keyword.decode("ascii").upper()
        if name in params:
            raise ArgumentError(replies.bad_parameter(f"Duplicate parameter {name}"))
        params[name] = value.decode("ascii") if equals else None
    return params


# --- handlers (each: the session, the argument bytes -> Reply or Deferred[Reply])


def smtp_helo(session: "SMTPSession", arg: bytes) -> Reply:
    """HELO: RFC 5321 §4.1.1.1; resets any transaction (§4.1.4)."""
    name = _client_name(arg, COMMANDS[b"HELO"].syntax)
    session.greet(name, esmtp=False)
    return replies.helo_ok(session.hostname, name)


def smtp_ehlo(session: "SMTPSession", arg: bytes) -> Reply:
    """EHLO: RFC 5321 §4.1.1.1; answer with the extensions that work now."""
    name = _client_name(arg, COMMANDS[b"EHLO"].syntax)
    session.greet(name, esmtp=True)
    keywords = [
        "PIPELINING",  # RFC 2920
        f"SIZE {session.limits.message_size_max}",  # RFC 1870 §4
        "8BITMIME",  # RFC 6152
        "ENHANCEDSTATUSCODES",  # RFC 2034
    ]
    if session.starttls_offered():
        keywords.append("STARTTLS")  # RFC 3207 §4; not after TLS (§4.2)
    return replies.ehlo_ok(session.hostname, name, keywords)


def smtp_mail(session: "SMTPSession", arg: bytes) -> Reply:
    """MAIL FROM:<reverse-path> [SIZE=n] [BODY=7BIT|8BITMIME] (RFC 5321 §4.1.1.2)."""
    syntax = COMMANDS[b"MAIL"].syntax
    path = _split_keyword(arg, b"FROM:", syntax)
    try:
        sender, rest = parse_path_prefix(path, utf8=False)
    except AddressError as error:
        raise ArgumentError(replies.bad_sender_address(error.reason)) from None
    params = _parameters(rest, syntax)
    if params and not session.esmtp:
        # Parameters are ESMTP: not after HELO (RFC 5321 §4.1.1.2, §2.2.1).
        raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
    transaction = Transaction(sender=sender)
    for name, value in params.items():
        if name == "SIZE":
            # RFC 1870 §3: SIZE=1*20DIGIT; §6.1: too big -> 552.
            if value is None or not value.isdigit() or len(value) > 20:
                raise ArgumentError(replies.bad_parameter("Bad SIZE value"))
            if int(value) > session.limits.message_size_max:
                return replies.S552_MESSAGE_TOO_BIG
            transaction.declared_size = int(value)
        elif name == "BODY":
            # RFC 6152 §2 (8BITMIME); BINARYMIME needs CHUNKING, not offered.
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise ArgumentError(replies.bad_parameter("Bad BODY value"))
            transaction.body = value.upper()
        else:
            raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
    session.begin_transaction(transaction)
    return replies.S250_SENDER_OK


def _forward_path(session: "SMTPSession", path: bytes) -> tuple[str, bytes]:
    """Parse ``<forward-path>`` + rest; ``<Postmaster>`` without a domain is ours (RFC 5321 §4.5.1)."""
    if path[:12].lower() == b"<postmaster>":
        return f"postmaster@{session.hostname}", path[12:]
    try:
        return parse_path_prefix(path, utf8=False, allow_null=False)
    except AddressError as error:
        raise ArgumentError(replies.bad_address(error.reason)) from None


def smtp_rcpt(session: "SMTPSession", arg: bytes) -> HandlerResult:
    """RCPT TO:<forward-path> (RFC 5321 §4.1.1.3): local users and aliases only."""
    syntax = COMMANDS[b"RCPT"].syntax
    address, rest = _forward_path(session, _split_keyword(arg, b"TO:", syntax))
    if _parameters(rest, syntax):
        raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
    try:
        recipient = canonical(address)
    except AddressError as error:
        raise ArgumentError(replies.bad_address(error.reason)) from None
    transaction = session.transaction
    if len(transaction.recipients) >= session.limits.smtp_recipients_max:
        return replies.S452_TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10
    found = session.delivery.check_recipient(recipient)

    def accept(users: list[str]) -> Reply:
        if not users:
            return replies.S550_NO_SUCH_USER
        transaction.add_recipient(recipient, users)
        session.phase = Phase.RCPT
        return replies.S250_RECIPIENT_OK

    if isinstance(found, Deferred):
        return found.addCallback(accept)
    return accept(found)


def smtp_data(session: "SMTPSession", arg: bytes) -> Reply:
    """DATA (RFC 5321 §4.1.1.4): 354, then the session reads the mail text."""
    _no_argument(arg, COMMANDS[b"DATA"].syntax)
    session.begin_data()
    return replies.S354_START_DATA


def smtp_rset(session: "SMTPSession", arg: bytes) -> Reply:
    """RSET (RFC 5321 §4.1.1.5): drop the transaction, keep the HELO."""
    _no_argument(arg, COMMANDS[b"RSET"].syntax)
    session.reset_transaction()
    return replies.S250_RESET


def smtp_noop(session: "SMTPSession", arg: bytes) -> Reply:
    """NOOP (RFC 5321 §4.1.1.9): any argument is ignored."""
    return replies.S250_OK


def smtp_quit(session: "SMTPSession", arg: bytes) -> Reply:
    """QUIT (RFC 5321 §4.1.1.10): 221, then close."""
    _no_argument(arg, COMMANDS[b"QUIT"].syntax)
    session.close_after_reply()
    return replies.S221_BYE


def smtp_starttls(session: "SMTPSession", arg: bytes) -> Reply:
    """STARTTLS (RFC 3207 §4): 220, then TLS; pipelined bytes are dropped, state reset."""
    _no_argument(arg, COMMANDS[b"STARTTLS"].syntax)
    if session.tls_active:
        return replies.S503_ALREADY_TLS  # RFC 3207 §4.2: no second STARTTLS
    if not session.starttls_offered():
        return replies.S454_TLS_UNAVAILABLE
    session.begin_tls()
    return replies.S220_READY_TLS


def smtp_vrfy(session: "SMTPSession", arg: bytes) -> Reply:
    """VRFY (RFC 5321 §3.5.3): 252, never revealing whether a user exists."""
    if not arg.strip(b" "):
        raise ArgumentError(replies.syntax_error(COMMANDS[b"VRFY"].syntax))
    return replies.S252_CANNOT_VRFY


def smtp_help(session: "SMTPSession", arg: bytes) -> Reply:
    """HELP [command] (RFC 5321 §4.1.1.8): the syntax line(s) from the table."""
    topic = arg.strip(b" ").upper()
    if topic:
        command = COMMANDS.get(topic)
        if command is None:
            return replies.S502_NOT_IMPLEMENTED.with_text("No help for that command")
        return replies.help_text([command.syntax])
    return replies.help_text(["Commands: " + " ".join(verb.decode() for verb in COMMANDS)])


def smtp_not_implemented(session: "SMTPSession", arg: bytes) -> Reply:
    """Known commands we do not offer (EXPN, TURN...): 502 (RFC 5321 §4.2.4)."""
    return replies.S502_NOT_IMPLEMENTED


#: The SMTP commands. Order is the HELP listing.
COMMANDS: dict[bytes, Command] = {
    b"HELO": Command(smtp_helo, ANY_PHASE, "HELO hostname"),
    b"EHLO": Command(smtp_ehlo, ANY_PHASE, "EHLO hostname"),
    b"STARTTLS": Command(smtp_starttls, frozenset({Phase.READY}), "STARTTLS",
                         {Phase.MAIL: replies.S503_BAD_SEQUENCE,
                          Phase.RCPT: replies.S503_BAD_SEQUENCE}),
    b"MAIL": Command(smtp_mail, frozenset({Phase.READY}),
                     "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]",
                     {Phase.MAIL: replies.S503_NESTED_MAIL}),
    b"RCPT": Command(smtp_rcpt, frozenset({Phase.MAIL, Phase.RCPT}), "RCPT TO:<address>"),
    # RFC 2920 §3.1 / RFC 5321 §3.3: DATA after only rejected RCPTs -> 554.
    b"DATA": Command(smtp_data, frozenset({Phase.RCPT}), "DATA",
                     {Phase.MAIL: replies.S554_NO_VALID_RECIPIENTS}),
    b"RSET": Command(smtp_rset, ANY_PHASE, "RSET"),
    b"NOOP": Command(smtp_noop, ANY_PHASE, "NOOP [text]"),
    b"QUIT": Command(smtp_quit, ANY_PHASE, "QUIT"),
    b"HELP": Command(smtp_help, ANY_PHASE, "HELP [command]"),
    b"VRFY": Command(smtp_vrfy, ANY_PHASE, "VRFY address"),
    b"EXPN": Command(smtp_not_implemented, ANY_PHASE, "EXPN list"),
}

#: Replies that count as a client error towards ``smtp_bad_commands_max``:
#: unknown, malformed or out-of-sequence commands (RFC 5321 §4.2.4, §4.3.2).
BAD_COMMAND_CODES = frozenset({500, 501, 503, 504, 555})


def is_bad_command_reply(reply: Reply) -> bool:
    """True when ``reply`` answers an unknown, malformed or out-of-sequence command."""
    return reply.code in BAD_COMMAND_CODES


def reply_for_error(error: Exception) -> Reply | None:
    """The reply an expected error carries, or ``None`` for an unexpected one."""
    if isinstance(error, ArgumentError):
        return error.reply
    if isinstance(error, MailError):
        return replies.from_mail_error(error)
    return None
