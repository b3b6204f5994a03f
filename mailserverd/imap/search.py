"""IMAP SEARCH programs: parse them into a small tree of keys, evaluate them by scan.

Two halves, kept apart so that an indexed search can reuse the first and
replace the second:

- :func:`parse_search` reads ``[RETURN (...)] [CHARSET x] key *(SP key)``
  (RFC 9051 §6.4.4, RFC 4731 §3.1, RFC 4466 §2.6) into a :class:`SearchRequest`
  whose ``key`` is a tree of the frozen dataclasses below. Strings are decoded
  and case-folded once, here; dates become :class:`datetime.date`.
- :func:`search_messages` runs a key over the messages of a mailbox, one by
  one. Flags, sizes, dates and numbers come from the message record; text keys
  read the normalised text of :class:`mailserverd.search.text.MessageText`
  (the one extraction the index uses too), built from the stored facts and,
  when they need it, the message bytes. Each message is read at most once
  per search.

Text matching is a substring match of strings normalised by
:func:`mailserverd.search.text.normalise` (RFC 9051 §6.4.4; case folding and
NFKC, close to the i;unicode-casemap comparator of RFC 5051). Only text/* and message/* parts are
searched by BODY and TEXT (RFC 9051 §6.4.4 allows leaving other media out).
"""

from __future__ import annotations

import datetime
import email.utils
import re
from dataclasses import dataclass
from typing import Callable, Container, Iterable

from mailserverd.imap.objectid import email_objectid
from mailserverd.imap.parser import NUMBER64_MAX, ArgCursor, ParseError, SequenceSet
from mailserverd.search.text import MessageText, decode_header_value, normalise

__all__ = [
    "SEARCH_NESTING_MAX",
    "ProgramTooDeep",
    "SUPPORTED_CHARSETS",
    "RETURN_OPTIONS",
    "UnsupportedCharset",
    "SearchRequest",
    "SearchScope",
    "parse_search",
    "parse_search_keys",
    "search_messages",
    "matches",
    "decode_header_value",
    "uses_modseq",
    "uses_recent",
    "Key", "All", "Flag", "Recent", "Not", "Or", "And", "SeqSet", "UidSet",
    "Saved", "DateKey", "SizeKey", "EnvelopeText", "HeaderText", "BodyText",
    "AnyText", "ModSeq", "EmailId", "SaveDateSupported",
]

#: Deepest nesting of NOT, OR and parenthesised lists in one program. A
#: structural bound like mime.MIME_NESTING_MAX: no real client nests deeper,
#: and it keeps a hostile line of ``NOT NOT NOT ...`` from exhausting the stack.
SEARCH_NESTING_MAX = 64

#: RFC 9051 §6.4.4: servers MUST support US-ASCII and UTF-8 (upper-case names).
SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")

#: RFC 4731 §3.1 / RFC 5182 §2: the result options we know (others are BAD).
RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE"})

_DIGITS = re.compile(rb"[0-9]+")
# RFC 9051 §9: date = date-text / DQUOTE date-text DQUOTE;
# date-text = date-day "-" date-month "-" date-year; date-day = 1*2DIGIT.
_DATE_TEXT = rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})"
_DATE = re.compile(_DATE_TEXT)
_QUOTED_DATE = re.compile(rb'"' + _DATE_TEXT + rb'"')
_MONTHS = {name: number for number, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN",
     b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), 1)}


class ProgramTooDeep(Exception):
    """The search program nests deeper than SEARCH_NESTING_MAX: valid syntax
    beyond a limit of ours, so answered ``NO [LIMIT]`` (RFC 5530 §3), not BAD.
    ``options`` as for :class:`UnsupportedCharset` (set by parse_search)."""

    options: frozenset[str] | None = None


class UnsupportedCharset(Exception):
    """CHARSET names a charset we cannot search in (answered NO [BADCHARSET]).

    ``options`` are the RETURN options read before it (None if none), so that
    a refused ``RETURN (SAVE)`` can still empty the saved result (RFC 9051
    §6.4.4.1).
    """

    def __init__(self, charset: str, options: frozenset[str] | None):
        super().__init__(charset)
        self.charset = charset
        self.options = options


# ----------------------------------------------------------------- the tree


class Key:
    """Base of every search key node (frozen dataclasses, compared by value)."""


@dataclass(frozen=True)
class All(Key):
    """ALL."""


@dataclass(frozen=True)
class Flag(Key):
    """The message has flag ``name`` (system flag or keyword; case-insensitive)."""

    name: str


@dataclass(frozen=True)
class Recent(Key):
    """RECENT: the message is recent in this session (RFC 3501 §6.4.4; NEW and OLD build on it)."""


@dataclass(frozen=True)
class Not(Key):
    key: Key


@dataclass(frozen=True)
class Or(Key):
    left: Key
    right: Key


@dataclass(frozen=True)
class And(Key):
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class SeqSet(Key):
    """A message sequence number set (``*`` is the message count)."""

    seqset: SequenceSet


@dataclass(frozen=True)
class UidSet(Key):
    """UID set (``*`` is the highest UID in the mailbox)."""

    seqset: SequenceSet


@dataclass(frozen=True)
class Saved(Key):
    """``$``: the messages of the saved search result (RFC 5182 §2.1)."""


@dataclass(frozen=True)
class DateKey(Key):
    """BEFORE/ON/SINCE on ``source`` ``"internal"``, ``"sent"`` or ``"saved"``."""

    source: str
    relation: str  # "before", "on", "since"
    day: datetime.date


@dataclass(frozen=True)
class SizeKey(Key):
    """LARGER (``relation`` ``"larger"``) or SMALLER than ``octets``."""

    relation: str
    octets: int


@dataclass(frozen=True)
class EnvelopeText(Key):
    """FROM/TO/CC/BCC/SUBJECT: ``needle`` in the envelope field (RFC 9051 §6.4.4)."""

    field: str  # "from", "to", "cc", "bcc", "subject"
    needle: str  # case-folded


@dataclass(frozen=True)
class HeaderText(Key):
    """HEADER name string: a field called ``name`` whose value holds ``needle``."""

    name: bytes  # lower-case field name
    needle: str


@dataclass(frozen=True)
class BodyText(Key):
    """BODY string: ``needle`` in the decoded text of the body."""

    needle: str


@dataclass(frozen=True)
class AnyText(Key):
    """TEXT string: ``needle`` in the decoded header or body."""

    needle: str


@dataclass(frozen=True)
class ModSeq(Key):
    """MODSEQ: the message's mod-sequence is at least ``value`` (RFC 7162 §3.1.5)."""

    value: int


@dataclass(frozen=True)
class EmailId(Key):
    """EMAILID objectid (RFC 8474 §6): the message with that EMAILID."""

    objectid: bytes


@dataclass(frozen=True)
class SaveDateSupported(Key):
    """SAVEDATESUPPORTED (RFC 8514 §4.3): the store keeps no save date, so none."""


@dataclass(frozen=True)
class SearchRequest:
    """A parsed SEARCH command.

    ``options`` is None when no RETURN was given, else the upper-case option
    names (``RETURN ()`` gives ``{"ALL"}``, RFC 4731 §3.1); ``charset`` the
    upper-cased CHARSET argument or None; ``key`` the program (an :class:`And`
    of the top-level keys).
    """

    options: frozenset[str] | None
    charset: str | None
    key: Key


# ------------------------------------------------------------------ parsing


def parse_search(args: ArgCursor) -> SearchRequest:
    """Read ``[RETURN SP (opts) SP] [CHARSET SP charset SP] search-key *(SP search-key)``.

    Takes the cursor positioned after ``SEARCH SP`` (RFC 4466 §2.6 grammar);
    reads to the end of the command. Returns the :class:`SearchRequest`.
    Raises ParseError (tagged BAD) for bad syntax, an unknown key or return
    option, or a string that is not UTF-8; :class:`ProgramTooDeep` for
    nesting deeper than :data:`SEARCH_NESTING_MAX`; :class:`UnsupportedCharset`
    for a CHARSET other than US-ASCII or UTF-8.
    """
    options = None
    charset = None
    word = _word_if_letter(args)
    if word is not None and word.upper() == b"RETURN":
        args.expect_sp()
        options = _return_options(args)
        args.expect_sp()
        word = _word_if_letter(args)
    if word is not None and word.upper() == b"CHARSET":
        args.expect_sp()
        charset = args.astring().decode("ascii", "replace").upper()
        if charset not in SUPPORTED_CHARSETS:
            raise UnsupportedCharset(charset, options)
        args.expect_sp()
        word = None
    try:
        return SearchRequest(options, charset, _read_program(args, word))
    except ProgramTooDeep as refused:
        refused.options = options
        raise


def parse_search_keys(args: ArgCursor) -> Key:
    """Read ``search-key *(SP search-key)`` to the end of the command.

    For commands whose search program follows their own arguments (SORT and
    THREAD, RFC 5256 §5 search-criteria, after the charset). Returns the
    program (an :class:`And` of the top-level keys). Raises ParseError and
    ProgramTooDeep as :func:`parse_search` does.
    """
    return _read_program(args, None)


def _read_program(args: ArgCursor, word: bytes | None) -> Key:
    """The keys to the end of the command; ``word`` is the first key's name if read already."""
    reader = _ProgramReader(args)
    keys = [reader.key(word)]
    while not args.at_end():
        args.expect_sp()
        keys.append(reader.key())
    return And(tuple(keys))


def _word_if_letter(args: ArgCursor) -> bytes | None:
    """Read an atom if the next byte is a letter (a key name, RETURN, CHARSET)."""
    char = args.peek()
    if char is not None and (0x41 <= char <= 0x5A or 0x61 <= char <= 0x7A):
        return args.atom()
    return None


def _return_options(args: ArgCursor) -> frozenset[str]:
    """``"(" [search-return-opt *(SP search-return-opt)] ")"`` (RFC 9051 §9).

    An empty list means ALL (RFC 4731 §3.1); an unknown option is BAD
    (RFC 9051 §6.4.4).
    """
    names = args.parenthesized(ArgCursor.atom)
    options = frozenset(name.decode("ascii").upper() for name in names)
    unknown = options - RETURN_OPTIONS
    if unknown:
        raise ParseError(f"Unknown search return option {sorted(unknown)[0]}")
    return options or frozenset({"ALL"})


class _ProgramReader:
    """Reads search keys (RFC 9051 §9 search-key) with a nesting bound."""

    def __init__(self, args: ArgCursor):
        self.args = args
        self.depth = 0

    def key(self, word: bytes | None = None) -> Key:
        """Read one search-key; ``word`` is its name if that was read already."""
        args = self.args
        if word is None:
            char = args.peek()
            if char == 0x28:  # (
                return self._nested(self._list)
            if char == 0x24:  # $ (RFC 5182 §2.1)
                args.skip_byte(b"$")
                return Saved()
            if char is not None and (0x30 <= char <= 0x39 or char == 0x2A):
                return SeqSet(args.sequence_set())
            word = args.atom()
        reader = _KEY_READERS.get(word.upper())
        if reader is None:
            raise ParseError("Unknown search key")
        return reader(self)

    def _nested(self, read: Callable[[], Key]) -> Key:
        self.depth += 1
        if self.depth > SEARCH_NESTING_MAX:
            raise ProgramTooDeep("Search program nested too deeply")
        try:
            return read()
        finally:
            self.depth -= 1

    def _list(self) -> Key:
        """``"(" search-key *(SP search-key) ")"``."""
        args = self.args
        args.expect_byte(b"(", "'('")
        keys = [self.key()]
        while not args.skip_byte(b")"):
            args.expect_sp()
            keys.append(self.key())
        return keys[0] if len(keys) == 1 else And(tuple(keys))

    # -- argument readers (each after the key name)

    def sp_key(self) -> Key:
        self.args.expect_sp()
        return self.key()

    def needle(self) -> str:
        """``SP astring``: the search string, decoded as UTF-8 and normalised.

        US-ASCII is a subset of UTF-8, so one decoder serves both charsets.
        """
        self.args.expect_sp()
        data = self.args.astring()
        try:
            return normalise(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ParseError("Search string is not valid UTF-8") from None

    def date(self) -> datetime.date:
        """``SP date`` (RFC 9051 §9): ``1-Feb-1994`` or ``"1-Feb-1994"``."""
        args = self.args
        args.expect_sp()
        quoted = args.peek() == 0x22
        text = args.match(_QUOTED_DATE if quoted else _DATE, "a date")
        day, month, year = (_QUOTED_DATE if quoted else _DATE).match(text).groups()
        number = _MONTHS.get(month.upper())
        if number is None:
            raise ParseError("Invalid month in date")
        try:
            return datetime.date(int(year), number, int(day))
        except ValueError:
            raise ParseError("Invalid date") from None

    def number64(self) -> int:
        """``SP number64`` (RFC 9051 §9): 0 .. 2^63-1."""
        self.args.expect_sp()
        digits = self.args.match(_DIGITS, "a number")
        if len(digits) > 19 or int(digits) > NUMBER64_MAX:
            raise ParseError("Number out of range")
        return int(digits)

    def objectid(self) -> bytes:
        """``SP objectid`` (RFC 8474 §3: 1*255 of ALPHA / DIGIT / "_" / "-")."""
        self.args.expect_sp()
        value = self.args.atom()
        if not 1 <= len(value) <= 255 or not value.replace(b"_", b"").replace(b"-", b"").isalnum():
            raise ParseError("Bad object id")
        return value

    def keyword(self) -> str:
        """``SP flag-keyword`` (an atom, RFC 9051 §9)."""
        self.args.expect_sp()
        return self.args.atom().decode("ascii")

    def modseq(self) -> Key:
        """``MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer``.

        RFC 7162 §3.1.5: a server without per-flag mod-sequences ignores the
        entry name and type, but they must still be well-formed.
        """
        args = self.args
        args.expect_sp()
        if args.peek() == 0x22:
            entry = args.quoted()
            if not entry.lower().startswith(b"/flags/"):
                raise ParseError("Invalid MODSEQ entry name")
            args.expect_sp()
            if args.atom().lower() not in (b"priv", b"shared", b"all"):
                raise ParseError("Invalid MODSEQ entry type")
            args.expect_sp()
        digits = args.match(_DIGITS, "a mod-sequence")
        if len(digits) > 19 or int(digits) > NUMBER64_MAX:
            raise ParseError("Mod-sequence out of range")
        return ModSeq(int(digits))

    def uid(self) -> Key:
        args = self.args
        args.expect_sp()
        if args.skip_byte(b"$"):
            return Saved()  # RFC 5182 §2.1: "$" stands for the messages, whatever the context
        return UidSet(args.sequence_set())

    def header(self) -> Key:
        args = self.args
        args.expect_sp()
        name = args.astring()
        return HeaderText(name.lower(), self.needle())


def _date_reader(source: str, relation: str):
    return lambda reader: DateKey(source, relation, reader.date())


def _flag_reader(flag: str, present: bool):
    node = Flag(flag) if present else Not(Flag(flag))
    return lambda reader: node


def _no_thread(objectid: bytes) -> Key:
    """THREADID objectid: every THREADID is NIL here (RFC 8474 §5.2), so no message matches."""
    return Not(All())


def _envelope_reader(field: str):
    return lambda reader: EnvelopeText(field, reader.needle())


# RFC 9051 §6.4.4 and RFC 3501 §6.4.4 keys; MODSEQ (RFC 7162 §3.1.5);
# SAVED* (RFC 8514 §4.3). Dispatch by exact name, never by attribute lookup.
_KEY_READERS: dict[bytes, Callable[[_ProgramReader], Key]] = {
    b"ALL": lambda reader: All(),
    b"OLD": lambda reader: Not(Recent()),  # RFC 3501 §6.4.4: NOT RECENT
    b"RECENT": lambda reader: Recent(),
    b"NEW": lambda reader: And((Recent(), Not(Flag("\\Seen")))),  # RFC 3501 §6.4.4: RECENT UNSEEN
    b"NOT": lambda reader: Not(reader._nested(reader.sp_key)),
    b"OR": lambda reader: reader._nested(lambda: Or(reader.sp_key(), reader.sp_key())),
    b"UID": _ProgramReader.uid,
    b"KEYWORD": lambda reader: Flag(reader.keyword()),
    b"UNKEYWORD": lambda reader: Not(Flag(reader.keyword())),
    b"LARGER": lambda reader: SizeKey("larger", reader.number64()),
    b"SMALLER": lambda reader: SizeKey("smaller", reader.number64()),
    b"BODY": lambda reader: BodyText(reader.needle()),
    b"TEXT": lambda reader: AnyText(reader.needle()),
    b"HEADER": _ProgramReader.header,
    b"MODSEQ": _ProgramReader.modseq,
    b"SAVEDATESUPPORTED": lambda reader: SaveDateSupported(),
    # RFC 8474 §6; THREADID is always NIL here, so THREADID matches nothing.
    b"EMAILID": lambda reader: EmailId(reader.objectid()),
    b"THREADID": lambda reader: _no_thread(reader.objectid()),
}
for _name, _flag in (("ANSWERED", "\\Answered"), ("DELETED", "\\Deleted"), ("DRAFT", "\\Draft"),
                     ("FLAGGED", "\\Flagged"), ("SEEN", "\\Seen")):
    _KEY_READERS[_name.encode()] = _flag_reader(_flag, True)
    _KEY_READERS[b"UN" + _name.encode()] = _flag_reader(_flag, False)
for _field in ("from", "to", "cc", "bcc", "subject"):
    _KEY_READERS[_field.upper().encode()] = _envelope_reader(_field)
for _source, _prefix in (("internal", ""), ("sent", "SENT"), ("saved", "SAVED")):
    for _relation in ("before", "on", "since"):
        _KEY_READERS[(_prefix + _relation.upper()).encode()] = _date_reader(_source, _relation)


def _uses(key: Key, kind: type) -> bool:
    """Whether the program has a key of type ``kind`` anywhere."""
    if isinstance(key, kind):
        return True
    if isinstance(key, Not):
        return _uses(key.key, kind)
    if isinstance(key, Or):
        return _uses(key.left, kind) or _uses(key.right, kind)
    if isinstance(key, And):
        return any(_uses(child, kind) for child in key.keys)
    return False


def uses_modseq(key: Key) -> bool:
    """Whether the program has a MODSEQ key (its answer then carries MODSEQ, RFC 7162 §3.1.5)."""
    return _uses(key, ModSeq)


def uses_recent(key: Key) -> bool:
    """Whether the program has RECENT, NEW or OLD (none of them is IMAP4rev2, RFC 9051 §6.4.4)."""
    return _uses(key, Recent)


# --------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class SearchScope:
    """What a search runs against besides each message.

    ``store``/``user`` read facts and bytes; ``count`` is the number of
    messages in the session's view (``*`` of a sequence set); ``max_uid`` its
    highest UID (``*`` of a UID set); ``saved_uids`` the saved result ``$``;
    ``recent_uids`` the UIDs recent in the session (RFC 3501 §2.3.2).
    """

    store: object
    user: str
    count: int
    max_uid: int
    saved_uids: frozenset[int] = frozenset()
    recent_uids: Container[int] = frozenset()


def search_messages(key: Key, messages: Iterable[tuple[int, object]], scope: SearchScope) -> list[tuple[int, object]]:
    """The ``(seq, MessageInfo)`` pairs of ``messages`` that ``key`` matches, in order.

    Reads facts and message bytes through ``scope.store`` only for messages
    whose cheaper keys matched (And's keys are tried cheapest first). Raises
    the store's errors (a temporary failure ends the search).
    """
    key = _cheapest_first(key)
    return [(seq, info) for seq, info in messages if matches(key, _Message(seq, info, scope))]


def matches(key: Key, message: "_Message") -> bool:
    """Whether one message matches ``key`` (dispatch on the node's type)."""
    return _EVALUATORS[type(key)](key, message)


class _Message:
    """One message under evaluation; ``text`` reads and decodes its content at most once."""

    __slots__ = ("seq", "info", "scope", "text")

    def __init__(self, seq: int, info, scope: SearchScope):
        self.seq = seq
        self.info = info
        self.scope = scope
        store, user, blob_id = scope.store, scope.user, info.blob_id
        self.text = MessageText(lambda: store.read_message(user, blob_id),
                                lambda: store.read_facts(user, blob_id))

    def facts(self) -> dict:
        return self.text.facts()


def _flag(key: Flag, message: _Message) -> bool:
    wanted = key.name.lower()
    return any(flag.lower() == wanted for flag in message.info.flags)


def _in_set(seqset: SequenceSet, number: int, star: int) -> bool:
    return any(low <= number <= high for low, high in seqset.bounds(star))


def _date_of(source: str, message: _Message) -> datetime.date:
    """The day a DateKey compares (RFC 9051 §6.4.4: time and timezone disregarded)."""
    if source == "sent":
        sent = _sent_date(message.facts()["envelope"][0])
        if sent is not None:
            return sent
        # No usable Date: field: the internal date stands in, as RFC 5256 §2.2
        # prescribes for sorting by sent date.
    # "saved": the store keeps no save date; RFC 8514 §4.3 then uses the internal date.
    # INTERNALDATE is stored as UTC seconds, so its day is the UTC day.
    try:
        return datetime.datetime.fromtimestamp(message.info.internaldate, datetime.timezone.utc).date()
    except (OverflowError, OSError, ValueError):
        return datetime.date.min


def _sent_date(value: bytes | None) -> datetime.date | None:
    """The day written in a Date: field (its own timezone, RFC 9051 §6.4.4), or None."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_tz(value.decode("ascii", "replace"))
        if parsed is None:
            return None
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _date(key: DateKey, message: _Message) -> bool:
    day = _date_of(key.source, message)
    if key.relation == "before":
        return day < key.day
    if key.relation == "on":
        return day == key.day
    return day >= key.day


def _header(key: HeaderText, message: _Message) -> bool:
    # RFC 9051 §6.4.4: an empty string matches every message that has the field.
    values = message.text.header_values(key.name.decode("latin-1"))
    return any(key.needle in value for value in values)


def _any_text(key: AnyText, message: _Message) -> bool:
    return key.needle in message.text.header() or key.needle in message.text.body()


_EVALUATORS: dict[type, Callable[[Key, _Message], bool]] = {
    All: lambda key, message: True,
    Recent: lambda key, message: message.info.uid in message.scope.recent_uids,
    SaveDateSupported: lambda key, message: False,
    EmailId: lambda key, message: email_objectid(message.info.blob_id) == key.objectid,
    Flag: _flag,
    Not: lambda key, message: not matches(key.key, message),
    Or: lambda key, message: matches(key.left, message) or matches(key.right, message),
    And: lambda key, message: all(matches(child, message) for child in key.keys),
    SeqSet: lambda key, message: _in_set(key.seqset, message.seq, message.scope.count),
    UidSet: lambda key, message: _in_set(key.seqset, message.info.uid, message.scope.max_uid),
    Saved: lambda key, message: message.info.uid in message.scope.saved_uids,
    DateKey: _date,
    SizeKey: lambda key, message: (message.info.size > key.octets if key.relation == "larger"
                                   else message.info.size < key.octets),
    ModSeq: lambda key, message: message.info.modseq >= key.value,
    EnvelopeText: lambda key, message: key.needle in message.text.envelope(key.field),
    HeaderText: _header,
    BodyText: lambda key, message: key.needle in message.text.body(),
    AnyText: _any_text,
}

# What a key costs to evaluate: 0 the message record, 1 the stored facts,
# 2 the message bytes' header, 3 the decoded body.
_COSTS: dict[type, int] = {EnvelopeText: 1, HeaderText: 2, BodyText: 3, AnyText: 3}


def _cost(key: Key) -> int:
    if isinstance(key, DateKey):
        return 1 if key.source == "sent" else 0
    if isinstance(key, Not):
        return _cost(key.key)
    if isinstance(key, Or):
        return max(_cost(key.left), _cost(key.right))
    if isinstance(key, And):
        return max((_cost(child) for child in key.keys), default=0)
    return _COSTS.get(type(key), 0)


def _cheapest_first(key: Key) -> Key:
    """The same program with each And's keys sorted by cost (AND commutes)."""
    if isinstance(key, Not):
        return Not(_cheapest_first(key.key))
    if isinstance(key, Or):
        return Or(_cheapest_first(key.left), _cheapest_first(key.right))
    if isinstance(key, And):
        return And(tuple(sorted((_cheapest_first(child) for child in key.keys), key=_cost)))
    return key
