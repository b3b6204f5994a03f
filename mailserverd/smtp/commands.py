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
from mailserverd.smtp.auth import offered_mechanisms, smtp_auth
from mailserverd.smtp.framing import ChunkReader, text_rejection
from mailserverd.smtp.params import (
    ArgumentError,
    Transaction,
    apply_mail_parameters,
    parse_parameters,
    recipient_options,
)
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


HandlerResult = Union[Reply, "Deferred[Reply]", None]  # None: the reply comes later (BDAT)
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


# --- handlers (each: the session, the argument bytes -> Reply or Deferred[Reply])


def smtp_helo(session: "SMTPSession", arg: bytes) -> Reply:
    """HELO: RFC 5321 §4.1.1.1; resets any transaction (§4.1.4)."""
    name = _client_name(arg, COMMANDS[b"HELO"].syntax)
    session.greet(name, esmtp=False)
    return replies.helo_ok(session.hostname, name)


def extension_keywords(session: "SMTPSession") -> list[str]:
    """The EHLO keywords for this session now (RFC 5321 §4.1.1.1): only what works."""
    limits = session.limits
    keywords = [
        "PIPELINING",  # RFC 2920
        f"SIZE {limits.message_size_max}",  # RFC 1870 §4
        "8BITMIME",  # RFC 6152
        "SMTPUTF8",  # RFC 6531 §3.2
        "ENHANCEDSTATUSCODES",  # RFC 2034
        "CHUNKING",  # RFC 3030
        "DSN",  # RFC 3461
        f"LIMITS RCPTMAX={limits.smtp_recipients_max}",  # RFC 9422 §4.2
    ]
    if session.starttls_offered():
        keywords.append("STARTTLS")  # RFC 3207 §4; not after TLS (§4.2)
    mechanisms = offered_mechanisms(session)
    if mechanisms:
        keywords.append("AUTH " + " ".join(mechanisms))  # RFC 4954 §3
    return keywords


#: MAIL parameters and the EHLO keyword that makes each valid (RFC 5321 §4.1.1.11).
_MAIL_PARAMETER_EXTENSIONS = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8",
                              "RET": "DSN", "ENVID": "DSN", "AUTH": "AUTH"}


def _offered_parameters(session: "SMTPSession") -> frozenset[str]:
    """Parameter names valid now: none after HELO (RFC 5321 §4.1.1.2, §2.2.1)."""
    if not session.esmtp:
        return frozenset()
    offered = {name for name, extension in _MAIL_PARAMETER_EXTENSIONS.items() if extension != "AUTH"}
    if session.policy.auth_offered:
        offered.add("AUTH")
    return frozenset(offered | {"DSN"})


def smtp_ehlo(session: "SMTPSession", arg: bytes) -> Reply:
    """EHLO: RFC 5321 §4.1.1.1; answer with the extensions that work now."""
    name = _client_name(arg, COMMANDS[b"EHLO"].syntax)
    session.greet(name, esmtp=True)
    return replies.ehlo_ok(session.hostname, name, extension_keywords(session))


def _path(path: bytes, utf8: bool, allow_null: bool, bad: Callable[[str], Reply]) -> tuple[str, bytes]:
    """Parse ``<path>`` + rest; a non-ASCII address unless ``utf8`` is 553 5.6.7
    (RFC 6531 §3.5: UTF-8 addresses only in an SMTPUTF8 transaction)."""
    try:
        address, rest = parse_path_prefix(path, utf8=True, allow_null=allow_null)
    except AddressError as error:
        raise ArgumentError(bad(error.reason)) from None
    if not utf8 and not address.isascii():
        raise ArgumentError(replies.S553_UTF8_ADDRESS)
    return address, rest


def smtp_mail(session: "SMTPSession", arg: bytes) -> HandlerResult:
    """MAIL FROM:<reverse-path> [parameters] (RFC 5321 §4.1.1.2).

    Where the listener requires AUTH, only after it (RFC 4954 §6: 530); the
    sender must then be an address of the authenticated user (553 5.7.1).
    """
    if session.policy.auth_required and not session.authenticated_user:
        return replies.S530_AUTH_REQUIRED
    syntax = COMMANDS[b"MAIL"].syntax
    path = _split_keyword(arg, b"FROM:", syntax)
    sender, rest = _path(path, True, True, replies.bad_sender_address)
    params = parse_parameters(rest, syntax)
    if params and not session.esmtp:
        raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)
    transaction = Transaction(sender=sender)
    refused = apply_mail_parameters(transaction, params, session.limits.message_size_max,
                                    _offered_parameters(session))
    if refused is not None:
        return refused
    if not sender.isascii() and not transaction.smtputf8:
        raise ArgumentError(replies.S553_UTF8_ADDRESS)  # RFC 6531 §3.4
    user = session.authenticated_user
    if user and not session.delivery.sender_allowed(user, sender):
        return replies.S553_SENDER_NOT_OWNED
    session.begin_transaction(transaction)
    return replies.S250_SENDER_OK


def _forward_path(session: "SMTPSession", path: bytes, utf8: bool) -> tuple[str, bytes]:
    """Parse ``<forward-path>`` + rest; ``<Postmaster>`` without a domain is ours (RFC 5321 §4.5.1)."""
    if path[:12].lower() == b"<postmaster>":
        return f"postmaster@{session.hostname}", path[12:]
    return _path(path, utf8, False, replies.bad_address)


def smtp_rcpt(session: "SMTPSession", arg: bytes) -> HandlerResult:
    """RCPT TO:<forward-path> [NOTIFY=...] [ORCPT=...] (RFC 5321 §4.1.1.3, RFC 3461 §4).

    Local recipients (users, aliases, catch-alls, plus-addresses) on every
    listener; other domains only for an authenticated user, and then 451
    4.3.0 until the outbound queue exists. Decided per recipient.
    """
    syntax = COMMANDS[b"RCPT"].syntax
    transaction = session.transaction
    address, rest = _forward_path(session, _split_keyword(arg, b"TO:", syntax), transaction.smtputf8)
    options = recipient_options(parse_parameters(rest, syntax, utf8=transaction.smtputf8)
                                if session.esmtp or not rest else _refuse_parameters(),
                                _offered_parameters(session))
    try:
        recipient = canonical(address)
    except AddressError as error:
        raise ArgumentError(replies.bad_address(error.reason)) from None
    if len(transaction.recipients) >= session.limits.smtp_recipients_max:
        return replies.S452_TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.10, RFC 9422 RCPTMAX
    found = session.delivery.check_recipient(recipient, remote_allowed=bool(session.authenticated_user),
                                             size=transaction.declared_size or 0)

    def accept(users: list[str]) -> Reply:
        if not users:
            return replies.S550_NO_SUCH_USER
        if _greylisted(session, transaction.sender, recipient):
            return replies.S450_GREYLISTED
        transaction.add_recipient(recipient, users, options)
        session.phase = Phase.RCPT
        return replies.S250_RECIPIENT_OK

    if isinstance(found, Deferred):
        return found.addCallback(accept)
    return accept(found)


def _greylisted(session: "SMTPSession", sender: str, recipient: str) -> bool:
    """Greylisting (``[abuse] greylisting``) applies to mail from other MTAs: on
    the MX listener, never to an authenticated user; after the recipient is
    known, so unknown users still get their 550 at once."""
    return (session.guard is not None and session.policy.kind == "smtp"
            and not session.authenticated_user
            and session.guard.greylisted(session.peer.ip, sender or "<>", recipient))


def _refuse_parameters() -> dict:
    raise ArgumentError(replies.S555_UNKNOWN_PARAMETER)  # parameters are ESMTP (RFC 5321 §2.2.1)


def smtp_data(session: "SMTPSession", arg: bytes) -> Reply:
    """DATA (RFC 5321 §4.1.1.4): 354, then the session reads the mail text."""
    _no_argument(arg, COMMANDS[b"DATA"].syntax)
    if session.transaction.chunks is not None:
        return replies.S503_DATA_AFTER_BDAT  # RFC 3030 §2: not both in one transaction
    session.begin_data()
    return replies.S354_START_DATA


def _bdat_arguments(arg: bytes) -> tuple[int, bool] | None:
    """``chunk-size [SP end-marker]`` (RFC 3030 §2), or None when malformed."""
    parts = arg.split(b" ")
    if not 1 <= len(parts) <= 2 or not parts[0].isdigit() or len(parts[0]) > 20:
        return None
    if len(parts) == 2 and parts[1].upper() != b"LAST":
        return None
    return int(parts[0]), len(parts) == 2


def smtp_bdat(session: "SMTPSession", arg: bytes) -> Reply | None:
    """BDAT chunk-size [LAST] (RFC 3030 §2): read exactly that many octets, then reply.

    Valid in every phase so that a refused chunk is still read off the wire
    (its bytes must never run as commands); the sequence error is the reply
    after it. A size that cannot be parsed leaves no way to find the next
    command: 501, then close. Chunks beyond ``message_size_max`` are read
    and dropped, and the transaction is answered 552 (RFC 1870 §6.3).
    """
    parsed = _bdat_arguments(arg)
    if parsed is None:
        session.close_after_reply()
        return replies.syntax_error(COMMANDS[b"BDAT"].syntax)
    size, last = parsed
    transaction = session.transaction
    if session.phase is not Phase.RCPT:
        refusal = COMMANDS[b"BDAT"].sequence_reply(session.phase)
        session.read_chunk(ChunkReader(size, None), lambda: refusal)
        return None
    if transaction.chunks is None:
        transaction.chunks = bytearray()
    if transaction.chunks_refused is None and \
            len(transaction.chunks) + size > session.limits.message_size_max:
        transaction.chunks_refused = replies.S552_MESSAGE_TOO_BIG
        transaction.chunks.clear()
    keep = transaction.chunks if transaction.chunks_refused is None else None
    session.read_chunk(ChunkReader(size, keep),
                       lambda: _chunk_done(session, transaction, size, last))
    return None


def _chunk_done(session: "SMTPSession", transaction: Transaction, size: int, last: bool) -> HandlerResult:
    """A chunk was read: acknowledge it, or after LAST deliver the message."""
    if not last:
        return transaction.chunks_refused or replies.chunk_received(size)
    session.end_transaction()
    if transaction.chunks_refused is not None:
        return transaction.chunks_refused
    message = bytes(transaction.chunks)
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"  # RFC 5322 §2.1: a message is lines, each ending in CRLF
    rejection = text_rejection(message, session.limits.smtp_text_line_max)
    if rejection is not None:
        return rejection
    return session.deliver(transaction, message)


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
    """HELP [command] (RFC 5321 §4.1.1.8): the syntax line(s) from the table,
    for the commands this session can use now (no STARTTLS or AUTH where not offered)."""
    hidden = set()
    if not session.starttls_offered():
        hidden.add(b"STARTTLS")
    if not offered_mechanisms(session):
        hidden.add(b"AUTH")
    topic = arg.strip(b" ").upper()
    if topic:
        command = COMMANDS.get(topic) if topic not in hidden else None
        if command is None:
            return replies.S502_NOT_IMPLEMENTED.with_text("No help for that command")
        return replies.help_text([command.syntax])
    return replies.help_text(["Commands: " + " ".join(
        verb.decode() for verb in COMMANDS if verb not in hidden)])


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
                     "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8] "
                     "[RET=FULL|HDRS] [ENVID=id] [AUTH=address]",
                     {Phase.MAIL: replies.S503_NESTED_MAIL}),
    b"AUTH": Command(smtp_auth, frozenset({Phase.READY}), "AUTH mechanism [initial-response]",
                     {Phase.MAIL: replies.S503_AUTH_IN_TRANSACTION,
                      Phase.RCPT: replies.S503_AUTH_IN_TRANSACTION}),
    b"RCPT": Command(smtp_rcpt, frozenset({Phase.MAIL, Phase.RCPT}),
                     "RCPT TO:<address> [NOTIFY=...] [ORCPT=addr-type;address]"),
    # RFC 2920 §3.1 / RFC 5321 §3.3: DATA after only rejected RCPTs -> 554.
    b"DATA": Command(smtp_data, frozenset({Phase.RCPT}), "DATA",
                     {Phase.MAIL: replies.S554_NO_VALID_RECIPIENTS}),
    # RFC 3030 §2: every phase, so the chunk is read even when refused; see smtp_bdat.
    b"BDAT": Command(smtp_bdat, ANY_PHASE, "BDAT size [LAST]",
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
