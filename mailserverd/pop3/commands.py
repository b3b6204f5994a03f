"""The POP3 command table: each command's handler, the states it is valid in, its syntax.

This is the one table (RFC 1939 commands plus CAPA of RFC 2449, STLS of
RFC 2595, AUTH of RFC 5034 (in :mod:`mailserverd.pop3.authenticate`) and UTF8
of RFC 6856). The session looks the keyword up here, checks the state and the
argument count, and calls the handler; nothing dispatches on client input by
attribute name. The ``syntax`` string is both the documentation and the body
of the reply to a malformed command.

A handler takes ``(session, args)`` and returns a :class:`Reply` (or a SASL
:class:`~mailserverd.pop3.replies.Challenge`), an
:class:`Outcome` (a reply plus a streamed body or an action), or a Deferred
firing with one of those. It raises :class:`CommandSyntaxError` for a
malformed argument, or a ``MailError`` carrying a ``-ERR`` reply. Store errors
are mapped to replies at the protocol edge
(:func:`mailserverd.pop3.maildrop.reply_for_store_error`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Union

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from mailserverd.auth.accounts import AuthFailed, AuthThrottled, AuthUnavailable
from mailserverd.pop3 import replies
from mailserverd.pop3.authenticate import cmd_auth, offered_mechanisms
from mailserverd.mail.dotstuff import stuff_chunks
from mailserverd.pop3.maildrop import open_maildrop, reply_for_store_error
from mailserverd.pop3.replies import Challenge, Reply
from mailserverd.store.errors import StoreError
from mailserverd.store.types import MessageInfo

if TYPE_CHECKING:  # pragma: no cover
    from mailserverd.pop3.session import POP3Session

#: Bytes of a message encoded and handed to the transport per step of RETR/TOP.
BODY_CHUNK_SIZE = 64 * 1024

#: Numbers with more digits than this are not converted: they exceed every maildrop
#: (and every line count), so they stand for "too big" (:data:`_NUMBER_TOO_BIG`).
_NUMBER_DIGITS_MAX = 18
_NUMBER_TOO_BIG = 10 ** _NUMBER_DIGITS_MAX

#: Server name advertised by the IMPLEMENTATION capability (RFC 2449 §6.9).
IMPLEMENTATION = b"mailserverd"


class State(enum.Enum):
    """RFC 1939 §3 session states."""

    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"


#: What the session does after sending an Outcome's reply (and body).
THEN_CONTINUE = ""
THEN_CLOSE = "close"
THEN_STARTTLS = "starttls"


@dataclass(frozen=True)
class Outcome:
    """A handler's result: a reply, an optional body streamed after it, and what follows.

    ``body`` yields wire bytes (already dot-stuffed and terminated); the session
    reads no further command until the whole body has been handed to the
    transport. ``then`` is one of THEN_CONTINUE, THEN_CLOSE, THEN_STARTTLS.
    """

    reply: Reply | Challenge
    body: Iterator[bytes] | None = None
    then: str = THEN_CONTINUE


HandlerResult = Union[Reply, Challenge, Outcome, Deferred]


class CommandSyntaxError(Exception):
    """A command's arguments are malformed; the session answers with the command's syntax."""


def parse_number(arg: bytes) -> int:
    """A non-negative decimal number; raises CommandSyntaxError for anything else.

    Any number of digits is accepted; one too long to be a message number or
    line count comes back as :data:`_NUMBER_TOO_BIG` (never converted whole:
    Python refuses int() of very long digit strings).
    """
    if not arg.isdigit():
        raise CommandSyntaxError(arg)
    if len(arg.lstrip(b"0")) > _NUMBER_DIGITS_MAX:
        return _NUMBER_TOO_BIG
    return int(arg)


def _message(session: "POP3Session", arg: bytes) -> tuple[int, MessageInfo]:
    """The live message numbered ``arg``; raises CommandSyntaxError or a MailError reply."""
    number = parse_number(arg)
    maildrop = session.maildrop
    if not 1 <= number <= len(maildrop.messages) or number in maildrop.deleted:
        raise _reply_error(replies.NO_SUCH_MESSAGE)
    return number, maildrop.messages[number - 1]


def _reply_error(reply: Reply):
    return replies.failure(reply.text, reply.code)


def capabilities(session: "POP3Session") -> tuple[bytes, ...]:
    """The CAPA list for the session's current state: only what works (RFC 2449 §5).

    USER and SASL are AUTHORIZATION capabilities, so they are announced in
    both states (RFC 2449 §5); STLS only while it is permitted (RFC 2595 §4).
    """
    caps = []
    if session.state is State.AUTHORIZATION and not session.tls_active and not session.utf8_mode:
        caps.append(b"STLS")  # RFC 2595 §4: "present and permitted in the current state"
    if session.plaintext_allowed():
        caps.append(b"USER")
    mechanisms = offered_mechanisms(session)
    if mechanisms:
        caps.append(b" ".join([b"SASL"] + [name.encode("ascii") for name in mechanisms]))
    caps += [
        b"TOP",
        b"UIDL",
        b"RESP-CODES",
        b"AUTH-RESP-CODE",  # RFC 3206 §6: [AUTH] is sent on every credential problem
        b"PIPELINING",  # RFC 2449 §6.6: commands are processed strictly one at a time, in order
        b"EXPIRE NEVER",  # RFC 2449 §6.7: the server itself never deletes mail
        b"LOGIN-DELAY 0",  # RFC 2449 §6.5: no minimum time between logins
        b"UTF8 USER",  # RFC 6856 §2.2: UTF-8 user names and passwords are accepted
        b"IMPLEMENTATION " + IMPLEMENTATION,
    ]
    return tuple(caps)


# --- AUTHORIZATION state ---------------------------------------------------

def cmd_capa(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 2449 §5 CAPA."""
    return replies.ok(replies.CAPA_FOLLOWS, capabilities(session))


def cmd_stls(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 2595 §4 STLS: the session discards pipelined input and resets after the +OK."""
    if session.tls_active:
        return replies.TLS_ACTIVE
    if session.utf8_mode:
        return replies.STLS_AFTER_UTF8  # RFC 6856 §2.1: clients MUST NOT; servers MAY refuse
    return Outcome(replies.STLS_BEGIN, then=THEN_STARTTLS)


def cmd_utf8(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 6856 §2.1 UTF8: enter UTF-8 mode.

    Messages are sent as stored in either mode (the store keeps 8-bit mail as
    received); user names and passwords may be UTF-8 before and after UTF8,
    as the "UTF8 USER" capability allows (RFC 6856 §2.2).
    """
    session.utf8_mode = True
    return replies.UTF8_ENABLED


def cmd_user(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §7 USER. Always +OK when accepted: the reply must not tell whether the user exists.

    The name may be UTF-8 (RFC 6856 §2.2); bytes that are not UTF-8 are refused.
    """
    if not session.plaintext_allowed():
        # Refused at USER already, so that a client never gets as far as sending
        # the password in the clear (RFC 2595 §4, RFC 8314 §3).
        return replies.PLAINTEXT_DISALLOWED
    try:
        session.pending_user = args[0].decode("utf-8")
    except UnicodeDecodeError:
        raise CommandSyntaxError(args[0]) from None
    return replies.USER_ACCEPTED


def cmd_pass(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §7 PASS: authenticate, then snapshot INBOX as the maildrop.

    The whole rest of the line is the password (RFC 1939 §7 allows spaces in it).
    """
    if not session.plaintext_allowed():
        return replies.PLAINTEXT_DISALLOWED
    address, session.pending_user = session.pending_user, None
    if address is None:
        return replies.NO_USER_GIVEN
    try:
        password = args[0].decode("utf-8")
    except UnicodeDecodeError:
        return replies.AUTH_FAILED
    d = maybeDeferred(
        session.ctx.authenticator.authenticate, address, password, session.client_ip, mechanism="USER",
        protocol="pop3",
    )
    d.addCallbacks(lambda user: open_maildrop(session, user), _authentication_failed)
    return d


def _authentication_failed(failure: Failure) -> Reply | Failure:
    if failure.check(AuthFailed):
        return replies.AUTH_FAILED
    if failure.check(AuthThrottled, AuthUnavailable):
        return replies.AUTH_TEMPORARILY_UNAVAILABLE
    return failure  # unexpected: the session logs it and answers [SYS/TEMP]


def cmd_quit(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §6 QUIT: in TRANSACTION, remove the marked messages durably, then +OK and close."""
    hostname = session.ctx.config.server.hostname
    if session.state is not State.TRANSACTION:
        return Outcome(replies.signing_off(hostname), then=THEN_CLOSE)
    session.state = State.UPDATE
    maildrop = session.maildrop
    uids = [maildrop.messages[number - 1].uid for number in sorted(maildrop.deleted)]
    if not uids:
        return Outcome(replies.signing_off(hostname), then=THEN_CLOSE)
    store = session.ctx.store
    # \Deleted then expunge of exactly these UIDs: messages another session marked
    # \Deleted (IMAP) are left for that session to expunge.
    d = store.store_flags(maildrop.user, maildrop.mailbox_id, uids, "+", ["\\Deleted"])
    d.addCallback(lambda _: store.expunge(maildrop.user, maildrop.mailbox_id, uids))
    d.addCallback(lambda _: Outcome(replies.signing_off(hostname), then=THEN_CLOSE))
    d.addErrback(_update_failed)
    return d


def _update_failed(failure: Failure) -> Outcome | Failure:
    if failure.check(StoreError):
        # RFC 1939 §6: "-ERR some deleted messages not removed"; the session ends anyway.
        return Outcome(replies.NOT_ALL_REMOVED, then=THEN_CLOSE)
    return failure


# --- TRANSACTION state -----------------------------------------------------

def cmd_stat(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 STAT: "+OK count octets" of the messages not marked deleted."""
    count, octets = session.maildrop.summary()
    return replies.ok(f"{count} {octets}")


def cmd_list(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 LIST [msg]: sizes in octets of one or every live message."""
    if args:
        number, message = _message(session, args[0])
        return replies.ok(f"{number} {message.size}")
    lines = tuple(b"%d %d" % (number, message.size) for number, message in session.maildrop.live())
    return replies.ok(replies.SCAN_LISTING_FOLLOWS, lines)


def cmd_uidl(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §7 UIDL [msg]: unique-ids of one or every live message."""
    maildrop = session.maildrop
    if args:
        number, message = _message(session, args[0])
        return replies.ok(f"{number} {maildrop.unique_id(message).decode('ascii')}")
    lines = tuple(b"%d %s" % (number, maildrop.unique_id(message)) for number, message in maildrop.live())
    return replies.ok(replies.UIDL_LISTING_FOLLOWS, lines)


def _read_content(session: "POP3Session", message: MessageInfo) -> bytes:
    """The stored bytes of ``message``; raises a MailError reply for store errors.

    RFC 6856 §2.1: outside UTF-8 mode a message whose header holds UTF-8
    (RFC 6532) must not be sent as is; it is refused with ``[UTF8]`` (the
    RFC's other choice, a surrogate message, is not offered). 8-bit bodies
    (8BITMIME) go out as stored, as POP3 servers have always sent them.
    """
    try:
        content = session.ctx.store.read_message(session.maildrop.user, message.blob_id)
    except StoreError as error:
        raise _reply_error(reply_for_store_error(error)) from error
    if not session.utf8_mode and not _header_of(content).isascii():
        raise _reply_error(replies.NEEDS_UTF8)
    return content


def _header_of(content: bytes) -> bytes:
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end]


def cmd_retr(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 RETR msg: the exact stored message, dot-stuffed as a stream."""
    _, message = _message(session, args[0])
    content = _read_content(session, message)
    return Outcome(replies.ok(f"{message.size} octets"), body=stuff_chunks(content, BODY_CHUNK_SIZE))


def top_of_message(content: bytes, body_lines: int) -> bytes:
    """The header, the blank line after it, and the first ``body_lines`` body lines (RFC 1939 §7).

    A message without a blank line is all header and is returned whole.
    """
    if content.startswith(b"\r\n"):
        position = 2
    else:
        end = content.find(b"\r\n\r\n")
        if end < 0:
            return content
        position = end + 4
    for _ in range(body_lines):
        newline = content.find(b"\n", position)
        if newline < 0:
            return content
        position = newline + 1
    return content[:position]


def cmd_top(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §7 TOP msg n."""
    _, message = _message(session, args[0])
    body_lines = parse_number(args[1])
    content = top_of_message(_read_content(session, message), body_lines)
    return Outcome(replies.ok(replies.TOP_FOLLOWS), body=stuff_chunks(content, BODY_CHUNK_SIZE))


def cmd_dele(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 DELE msg: mark only; QUIT removes."""
    number = parse_number(args[0])
    maildrop = session.maildrop
    if number in maildrop.deleted:
        return replies.already_deleted(number)
    if not 1 <= number <= len(maildrop.messages):
        return replies.NO_SUCH_MESSAGE
    maildrop.deleted.add(number)
    return replies.message_deleted(number)


def cmd_rset(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 RSET: unmark every message marked deleted."""
    session.maildrop.deleted.clear()
    return replies.maildrop_summary(*session.maildrop.summary())


def cmd_noop(session: "POP3Session", args: list[bytes]) -> HandlerResult:
    """RFC 1939 §5 NOOP."""
    return replies.OK_PLAIN


# --- the table -------------------------------------------------------------

Handler = Callable[["POP3Session", list[bytes]], HandlerResult]


@dataclass(frozen=True)
class CommandSpec:
    """One command: keyword, handler, states it is valid in, syntax and argument count.

    ``whole_argument`` makes the rest of the line after "KEYWORD " one argument
    (PASS); otherwise arguments are split on spaces and counted against
    ``min_args``..``max_args``.
    """

    name: bytes
    handler: Handler
    states: frozenset[State]
    syntax: str
    min_args: int = 0
    max_args: int = 0
    whole_argument: bool = False


_AUTH = frozenset({State.AUTHORIZATION})
_TRANS = frozenset({State.TRANSACTION})
_BOTH = _AUTH | _TRANS

COMMANDS: dict[bytes, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(b"CAPA", cmd_capa, _BOTH, "CAPA"),
        CommandSpec(b"STLS", cmd_stls, _AUTH, "STLS"),
        CommandSpec(b"USER", cmd_user, _AUTH, "USER name", 1, 1),
        CommandSpec(b"PASS", cmd_pass, _AUTH, "PASS password", 1, 1, whole_argument=True),
        CommandSpec(b"AUTH", cmd_auth, _AUTH, "AUTH [mechanism [initial-response]]", 0, 2),
        CommandSpec(b"UTF8", cmd_utf8, _AUTH, "UTF8"),
        CommandSpec(b"QUIT", cmd_quit, _BOTH, "QUIT"),
        CommandSpec(b"STAT", cmd_stat, _TRANS, "STAT"),
        CommandSpec(b"LIST", cmd_list, _TRANS, "LIST [msg]", 0, 1),
        CommandSpec(b"UIDL", cmd_uidl, _TRANS, "UIDL [msg]", 0, 1),
        CommandSpec(b"RETR", cmd_retr, _TRANS, "RETR msg", 1, 1),
        CommandSpec(b"TOP", cmd_top, _TRANS, "TOP msg n", 2, 2),
        CommandSpec(b"DELE", cmd_dele, _TRANS, "DELE msg", 1, 1),
        CommandSpec(b"RSET", cmd_rset, _TRANS, "RSET"),
        CommandSpec(b"NOOP", cmd_noop, _TRANS, "NOOP"),
    )
}


def split_arguments(spec: CommandSpec, rest: bytes) -> list[bytes]:
    """The arguments of a command line after its keyword; raises CommandSyntaxError."""
    if spec.whole_argument:
        args = [rest] if rest else []
    else:
        args = rest.split()
    if not spec.min_args <= len(args) <= spec.max_args:
        raise CommandSyntaxError(rest)
    return args
