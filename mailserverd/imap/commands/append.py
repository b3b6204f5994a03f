"""APPEND (RFC 3501 §6.3.11, RFC 9051 §6.3.12) with MULTIAPPEND (RFC 3502),
APPENDUID (RFC 4315 §3), APPENDLIMIT (RFC 7889) and BINARY's literal8 (RFC 3516 §4.4).

The message literals are framed and size-checked by the session's literal
policy before their bytes are read (a literal over ``message_size_max`` is
refused with ``NO [TOOBIG]`` and never sent); this module parses the
arguments and stores the messages. Several messages in one command are stored
all or nothing (RFC 3502 §3): the store has one transaction per message, so
if any append fails the ones that succeeded are expunged again before the NO.

A message may be sent as a literal8 (``~{n}``, ``~{n+}``; RFC 3516 §4.4,
RFC 4466 §2.1 append-data, in any message of a MULTIAPPEND). Its NUL octets
are kept by re-encoding the parts that hold them in base64
(:mod:`mailserverd.mail.binary_parts`); a NUL that cannot be kept is
``NO [UNKNOWN-CTE]``. A plain literal holding a NUL is BAD (RFC 3501 §9:
CHAR8 excludes it).
"""

from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass, replace

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from mailserverd.errors import fresh
from mailserverd.imap import responses
from mailserverd.imap.commands.copy import number_set
from mailserverd.imap.commands.fetch_items import UNKNOWN_CTE
from mailserverd.imap.commands.imap4rev2 import has_8bit_header, utf8_headers_allowed
from mailserverd.imap.commands.mailbox_names import read_mailbox_name
from mailserverd.imap.parser import ArgCursor, ParseError
from mailserverd.imap.responses import Completion
from mailserverd.mail.binary_parts import BinaryContentRefused, storable_message
from mailserverd.store.errors import NotFound, StoreError

log = Logger(namespace="mailserverd.imap")

#: RFC 3501 §2.3.2 system flags a client may set, by lower-case name.
#: \Recent is not among them: only the server sets it (RFC 3501 §9 "flag"
#: excludes it; RFC 9051 dropped it).
SETTABLE_SYSTEM_FLAGS = {name.lower(): name for name in (
    "\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")}

#: RFC 7889 §2: the response code and text for a message over the limit.
TOOBIG = responses.mail_error("NO", responses.TOOBIG, "Message too big")
#: RFC 3501 §6.3.11: appending to a mailbox that does not exist.
TRYCREATE = responses.mail_error("NO", "TRYCREATE", "Mailbox doesn't exist")
#: RFC 6855 §4: UTF-8 header fields from a client that has not enabled UTF8=ACCEPT.
UTF8_HEADERS_REFUSED = responses.mail_error(
    "NO", responses.CANNOT, "8-bit header fields need ENABLE UTF8=ACCEPT")
#: RFC 3516 §4.4: binary content the mailbox cannot store (a NUL in a header...).
BINARY_REFUSED = responses.mail_error("NO", UNKNOWN_CTE, "Binary content not storable here")

_MONTHS = {name: number for number, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN",
     b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), start=1)}

# RFC 3501 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year
# SP time SP zone DQUOTE; date-day-fixed is (SP DIGIT) / 2DIGIT. One digit
# without the space is accepted too (clients send it).
_DATE_TIME = re.compile(
    rb"( ?\d|\d\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")


def appendlimit_capability(limits) -> str:
    """The ``APPENDLIMIT=n`` capability (RFC 7889 §2 (a)): one limit for every mailbox."""
    return f"APPENDLIMIT={limits.message_size_max}"


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND: its bytes, flags and INTERNALDATE (unix seconds or
    None); ``literal8`` when it was sent as one (it may hold NULs)."""

    raw: bytes
    flags: tuple[str, ...]
    internaldate: int | None
    literal8: bool = False


def run(session, command) -> Deferred:
    """``APPEND SP mailbox 1*(append-opts SP literal)`` (RFC 3502 §6).

    Fires with ``OK [APPENDUID uidvalidity uid-set]`` (RFC 4315 §3) after every
    message is durably stored; if the mailbox is the selected one, the new
    EXISTS is sent first (RFC 3501 §6.3.11). Raises ParseError (BAD) for bad
    syntax or flags, MailError ``NO [TRYCREATE]`` for a missing mailbox,
    ``NO [TOOBIG]`` for a message over ``message_size_max``, ``NO [CANNOT]``
    for 8-bit header fields unless the client enabled UTF8=ACCEPT or
    IMAP4rev2 (RFC 6855 §4, RFC 9051 §6.3.12), ``NO [UNKNOWN-CTE]`` for a
    literal8's NUL that no encoding can keep (RFC 3516 §4.4); store errors (quota,
    temporary) are mapped by the session. Nothing is stored when any message
    fails.
    """
    args = command.args
    args.expect_sp()
    mailbox = read_mailbox_name(session, args)
    messages = parse_messages(args)
    limit = session.limits.message_size_max
    for message in messages:
        # The literal policy refuses these before they are sent; this is the
        # check that holds whatever the policy.
        if len(message.raw) > limit:
            raise fresh(TOOBIG)
        if not message.raw:
            raise responses.mail_error("NO", None, "Can't save an empty message")
        if not utf8_headers_allowed(session) and has_8bit_header(message.raw):
            raise fresh(UTF8_HEADERS_REFUSED)
    messages = [_storable(message) for message in messages]
    store = session.ctx.store
    try:
        store.get_mailbox(session.user, mailbox)
    except NotFound:
        raise fresh(TRYCREATE) from None
    return Deferred.fromCoroutine(_store_all(session, mailbox, messages))


def parse_messages(args: ArgCursor) -> list[AppendMessage]:
    """The messages after the mailbox name: each ``SP [flag-list SP] [date-time SP]
    (literal / literal8 / "UTF8" SP "(" literal8 ")")`` (RFC 4466 §2.1
    append-data, RFC 3516 §4.4, RFC 6855 §4 utf8-literal).

    Raises ParseError for anything else, and for a NUL in a plain literal.
    """
    messages = []
    while True:
        args.expect_sp()
        flags: tuple[str, ...] = ()
        internaldate = None
        if args.peek() == 0x28:  # "("
            flags = tuple(args.parenthesized(read_flag))
            args.expect_sp()
        if args.peek() == 0x22:  # DQUOTE
            internaldate = parse_date_time(args.quoted())
            args.expect_sp()
        data, literal8 = _read_message_data(args)
        messages.append(AppendMessage(data, flags, internaldate, literal8))
        if args.at_end():
            return messages


def _read_message_data(args: ArgCursor) -> tuple[bytes, bool]:
    """``literal / literal8 / "UTF8" SP "(" literal8 ")"``: the message's bytes
    and whether they came in a literal8 (RFC 3516 §4.4, RFC 6855 §4)."""
    if args.peek() == 0x7B:  # "{"
        return args.literal(), False
    if args.peek() == 0x7E:  # "~"
        return args.literal8(), True
    if args.peek() in (0x55, 0x75) and args.atom().upper() == b"UTF8":  # "U" / "u"
        args.expect_sp()
        args.expect_byte(b"(", "'(' before the UTF8 literal8")
        data = args.literal8()
        args.expect_byte(b")", "')' after the UTF8 literal8")
        return data, True
    raise ParseError("Expected the message as a literal")


def _storable(message: AppendMessage) -> AppendMessage:
    """The message as it is stored: a literal8's NULs kept in base64 parts
    (RFC 3516 §4.4); MailError ``NO [UNKNOWN-CTE]`` where they cannot be."""
    if not message.literal8:
        return message
    try:
        raw = storable_message(message.raw)
    except BinaryContentRefused:
        raise fresh(BINARY_REFUSED) from None
    return message if raw is message.raw else replace(message, raw=raw)


def read_flag(args: ArgCursor) -> str:
    """RFC 3501 §9 flag as APPEND takes it: a settable system flag or a keyword.

    System flags come back in their canonical case. ``\\Recent`` and unknown
    system flags are a ParseError (BAD), as Dovecot answers.
    """
    if args.skip_byte(b"\\"):
        name = "\\" + args.atom().decode("ascii")
        canonical = SETTABLE_SYSTEM_FLAGS.get(name.lower())
        if canonical is None:
            raise ParseError(f"Invalid system flag {name}")
        return canonical
    return args.atom().decode("ascii")


def parse_date_time(text: bytes) -> int:
    """RFC 3501 §9 date-time (without its quotes) as unix seconds; ParseError if invalid."""
    match = _DATE_TIME.match(text)
    month = _MONTHS.get(match.group(2).upper()) if match else None
    if match is None or month is None:
        raise ParseError("Invalid date-time")
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    try:
        timestamp = calendar.timegm(_checked_fields(
            int(year), month, int(day), int(hour), int(minute), int(second)))
    except ValueError:
        raise ParseError("Invalid date-time") from None
    offset = (int(zone_hours) * 60 + int(zone_minutes)) * 60
    timestamp -= offset if sign == b"+" else -offset
    if timestamp < 0:
        raise ParseError("Invalid date-time: before 1970")
    return timestamp


def _checked_fields(year: int, month: int, day: int, hour: int, minute: int, second: int) -> tuple:
    """The fields as a time tuple; ValueError unless they name a real moment (60 s allowed)."""
    datetime.datetime(year, month, day, hour, minute, min(second, 59))
    if second > 60:
        raise ValueError(second)
    return (year, month, day, hour, minute, second, 0, 0, 0)


async def _store_all(session, mailbox: str, messages: list[AppendMessage]) -> Completion:
    """Append every message (in order, so their UIDs ascend); undo all if one fails."""
    store = session.ctx.store
    user = session.user
    # Calls to one shard's writer are applied in call order: issuing them all
    # at once lets one group commit serve the whole MULTIAPPEND.
    pending = [store.append(user, mailbox, message.raw, message.flags, message.internaldate)
               for message in messages]
    outcomes = await DeferredList(pending, consumeErrors=True)
    stored = [result for ok, result in outcomes if ok]
    failures = [failure for ok, failure in outcomes if not ok]
    if failures:
        if stored:
            try:
                await _undo(store, user, stored)
            except StoreError as error:
                log.error("append-undo-failed user={user} uids={uids} error={error}",
                          user=user, uids=[result.uid for result in stored],
                          error=type(error).__name__)
        failures[0].raiseException()
    mailbox_id = stored[0].mailbox_id
    selected = session.selected
    if selected is not None and selected.mailbox_id == mailbox_id:
        session.report_mailbox_changes()  # RFC 3501 §6.3.11: the new EXISTS
    uids = number_set(result.uid for result in stored).decode("ascii")
    code = f"APPENDUID {stored[0].uidvalidity} {uids}"
    return Completion("Append completed", code)


async def _undo(store, user: str, stored) -> None:
    """RFC 3502 §3 all or nothing: expunge the messages already appended."""
    mailbox_id = stored[0].mailbox_id
    uids = [result.uid for result in stored]
    await store.store_flags(user, mailbox_id, uids, "+", ["\\Deleted"])
    await store.expunge(user, mailbox_id, uids)

