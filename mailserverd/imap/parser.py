"""IMAP command parsing, sans-I/O: framing of command lines and literals, and
an argument cursor the command modules read their arguments with.

Two layers:

- :class:`CommandReader` frames the byte stream into whole commands. A command
  is one line, or several lines joined by literals (RFC 3501 §4.3, §7.5): each
  line that ends in ``{n}`` (synchronizing) or ``{n+}`` (non-synchronizing,
  RFC 7888) is followed by exactly n bytes and then the rest of the command.
  It enforces the line limit and asks its owner whether each literal is
  acceptable before any of the literal's bytes are taken.
- :class:`ArgCursor` walks one framed command: tag, command name and the
  arguments, following the RFC 3501 §9 grammar (atoms, quoted strings,
  literals, astrings, numbers, sequence sets, parenthesized lists). Each
  command module parses its own arguments with it (Stalwart's split of parse
  and execute), so there is no generic argument tree to misinterpret.

Every error is a :class:`ParseError`, whose text is safe to send in a BAD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

from mailserverd.imap import mutf7

__all__ = [
    "ParseError",
    "CommandReader",
    "FramedCommand",
    "ContinuationNeeded",
    "LiteralRefused",
    "LineTooLong",
    "ArgCursor",
    "SequenceSet",
    "read_tag",
    "read_command_name",
    "NUMBER_MAX",
    "NUMBER64_MAX",
]

#: RFC 3501 §9: number = 1*DIGIT, an unsigned 32-bit integer.
NUMBER_MAX = 0xFFFFFFFF

#: RFC 9051 §9: literal = "{" number64 ["+"] "}"; no literal can be longer.
NUMBER64_MAX = (1 << 63) - 1

# RFC 7888 §3: the literal marker at the very end of a line.  Any number of
# digits is read (number = 1*DIGIT allows leading zeros), so that no count is
# mistaken for plain text and its literal's bytes never run as a command.
_LITERAL_MARKER = re.compile(rb"\{(\d+)(\+?)\}\Z")

# RFC 3501 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards /
# quoted-specials / resp-specials.  ATOM-CHAR is any other CHAR (7-bit).
_ATOM_RUN = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
# ASTRING-CHAR = ATOM-CHAR / resp-specials ("]").
_ASTRING_RUN = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
# A tag is 1*<any ASTRING-CHAR except "+">.
_TAG_RUN = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_DIGITS = re.compile(rb"[0-9]+")


class ParseError(Exception):
    """A command does not follow the grammar. ``str(error)`` is the BAD text."""


# --------------------------------------------------------------------------
# Framing


@dataclass(frozen=True)
class FramedCommand:
    """One whole command.

    ``segments`` alternates line text and literal data: ``[line0, literal0,
    line1, ..., lineN]``; every line but the last ends with its literal
    marker, no line holds its CRLF.
    """

    segments: tuple[bytes, ...]


@dataclass(frozen=True)
class ContinuationNeeded:
    """A synchronizing literal was accepted: the owner sends ``+ ...`` now."""

    size: int


@dataclass(frozen=True)
class LiteralRefused:
    """A literal was refused; the command it belongs to is dropped.

    ``first_line`` is the command's first line (to find the tag). For a
    synchronizing literal, ``client_did_not_wait`` is true when bytes after the
    marker had already arrived: the client sent the literal without waiting
    for the continuation, so the stream cannot be trusted to resynchronise.
    A refused non-synchronizing literal is swallowed by the reader (RFC 7888
    §4, choice 1), with the rest of its command; one longer than any literal
    can be (over NUMBER64_MAX) cannot be, so ``client_did_not_wait`` is true
    and the reader is broken (RFC 7888 §4, choice 2: BYE and close).
    """

    first_line: bytes
    size: int
    synchronizing: bool
    client_did_not_wait: bool = False


@dataclass(frozen=True)
class LineTooLong:
    """A command line grew past the line limit; the stream cannot be resynchronised."""


ReaderEvent = FramedCommand | ContinuationNeeded | LiteralRefused | LineTooLong

#: ``literal_allowed(first_line, size, total)``: may a literal of ``size``
#: bytes be taken, ``total`` being all literal bytes of this command with it?
LiteralPolicy = Callable[[bytes, int, int], bool]


class CommandReader:
    """Frames an IMAP client's byte stream into commands (RFC 3501 §2.2, §4.3).

    Feed bytes with :meth:`feed`; take events with :meth:`next_event` until it
    returns ``None``. The owner decides when to take the next event, so a
    command that is being executed holds back the next one (and its literal
    continuations) until it completes. Memory is bounded by ``line_max`` plus
    the literals the policy accepts.
    """

    def __init__(self, line_max: int, literal_allowed: LiteralPolicy):
        self.line_max = line_max
        self.literal_allowed = literal_allowed
        self._buffer = bytearray()
        self._segments: list[bytes] = []
        self._line_total = 0
        self._literal_total = 0
        self._literal_pending = 0  # bytes of an accepted literal still to read
        self._literal = bytearray()  # the bytes of that literal read so far
        self._swallow = 0  # bytes of a refused literal still to discard
        self._discarding = False  # dropping the rest of a refused command
        self.broken = False  # after LineTooLong nothing more is framed

    def feed(self, data: bytes) -> None:
        """Append received bytes.

        While an accepted literal is being read and nothing is waiting before
        it, its bytes go straight into the literal's own buffer: a large
        literal (APPEND's message) is copied once on the way in and once when
        it is whole, never re-scanned or re-sliced per chunk.
        """
        if self.broken:
            return
        if self._literal_pending and not self._buffer:
            taken = min(self._literal_pending, len(data))
            self._literal += data if taken == len(data) else memoryview(data)[:taken]
            self._literal_pending -= taken
            data = data[taken:]
        self._buffer += data

    def discard_buffered(self) -> int:
        """Drop every byte received but not yet framed; return how many.

        Used after STARTTLS: plaintext pipelined behind it must never be read
        as commands of the TLS session (CVE-2011-0411 class).
        """
        dropped = len(self._buffer)
        self._buffer.clear()
        self._reset_command()
        return dropped

    def take_buffered(self) -> bytes:
        """Remove and return every byte received but not yet framed.

        Used after COMPRESS (between commands): what the client pipelined
        behind it is compressed, so it is inflated and fed again (RFC 4978 §3).
        """
        taken = bytes(self._buffer)
        self._buffer.clear()
        return taken

    def has_buffered(self) -> bool:
        """Whether received bytes are waiting to be framed."""
        return bool(self._buffer)

    def _reset_command(self) -> None:
        self._segments = []
        self._line_total = 0
        self._literal_total = 0
        self._literal_pending = 0
        self._literal = bytearray()

    def next_event(self) -> ReaderEvent | None:
        """Return the next framing event, or ``None`` when more bytes are needed."""
        while not self.broken:
            if self._swallow:
                taken = min(self._swallow, len(self._buffer))
                del self._buffer[:taken]
                self._swallow -= taken
                if self._swallow:
                    return None
                continue
            if self._literal_pending or self._literal:
                if self._literal_pending and self._buffer:
                    taken = min(self._literal_pending, len(self._buffer))
                    with memoryview(self._buffer) as view:
                        self._literal += view[:taken]
                    del self._buffer[:taken]
                    self._literal_pending -= taken
                if self._literal_pending:
                    return None
                # The one copy made of a whole literal; its buffer is then freed.
                self._segments.append(bytes(self._literal))
                self._literal = bytearray()
                continue
            event = self._take_line()
            if event is _NEED_MORE:
                return None
            if event is not None:
                return event
        return None

    def _take_line(self):
        """Take one line from the buffer and act on it; return an event,
        ``None`` to keep going, or ``_NEED_MORE``."""
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if self._line_total + len(self._buffer) > self.line_max:
                return self._too_long()
            return _NEED_MORE
        line = bytes(self._buffer[:newline])
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._line_total + len(line) > self.line_max:
            return self._too_long()
        del self._buffer[:newline + 1]
        marker = _LITERAL_MARKER.search(line)
        if self._discarding:
            if marker is not None and marker.group(2) == b"+":
                self._swallow = _literal_size(marker.group(1))
                if self._swallow > NUMBER64_MAX:
                    return self._unreadable_literal(b"", self._swallow)
            else:
                # The refused command ends here (a synchronizing literal in
                # its rest will not be sent: the client has our tagged BAD).
                self._discarding = False
            return None
        self._line_total += len(line)
        self._segments.append(line)
        if marker is None:
            command = FramedCommand(tuple(self._segments))
            self._reset_command()
            return command
        return self._literal_announced(line, _literal_size(marker.group(1)), marker.group(2) == b"")

    def _literal_announced(self, line: bytes, size: int, synchronizing: bool):
        """A line ended in a literal marker: accept the literal or refuse it."""
        total = self._literal_total + size
        first_line = self._segments[0]
        if size <= NUMBER_MAX and self.literal_allowed(first_line, size, total):
            self._literal_total = total
            self._literal_pending = size
            if size == 0:
                self._segments.append(b"")  # nothing to wait for: the literal is here
            if synchronizing:
                return ContinuationNeeded(size)
            return None
        self._reset_command()
        if synchronizing:
            return LiteralRefused(first_line, size, True, client_did_not_wait=bool(self._buffer))
        if size > NUMBER64_MAX:
            return self._unreadable_literal(first_line, size)
        # RFC 7888 §4: the bytes are on their way; read and drop them, then
        # the rest of the command, and never run any of it.
        self._swallow = size
        self._discarding = True
        return LiteralRefused(first_line, size, False)

    def _unreadable_literal(self, first_line: bytes, size: int) -> LiteralRefused:
        """A non-synchronizing literal too long to swallow: stop framing.

        RFC 7888 §4 choice 2: its bytes can never all arrive, so nothing
        after them can be framed; the owner says BYE and closes.
        """
        self.broken = True
        self._buffer.clear()
        self._reset_command()
        self._swallow = 0
        self._discarding = False
        return LiteralRefused(first_line, size, False, client_did_not_wait=True)

    def _too_long(self) -> LineTooLong:
        self.broken = True
        self._buffer.clear()
        self._reset_command()
        return LineTooLong()


_NEED_MORE = object()


def _literal_size(digits: bytes) -> int:
    """The count of a literal marker; NUMBER64_MAX + 1 for any larger count."""
    digits = digits.lstrip(b"0") or b"0"
    if len(digits) > len(str(NUMBER64_MAX)):  # int() of a long run would be slow
        return NUMBER64_MAX + 1
    return min(int(digits), NUMBER64_MAX + 1)


# --------------------------------------------------------------------------
# Arguments


class ArgCursor:
    """Reads the arguments of one :class:`FramedCommand`, left to right.

    Methods consume what they return and raise :class:`ParseError` when the
    next bytes are not what the grammar asks for; the cursor does not move on
    error (callers give up on the command anyway).
    """

    def __init__(self, segments: tuple[bytes, ...]):
        self._segments = segments
        self._index = 0  # which line segment (even index) the cursor is in
        self._pos = 0

    # -- low level

    @property
    def _line(self) -> bytes:
        return self._segments[self._index]

    def peek(self) -> int | None:
        """The next byte's value, or ``None`` at the end of a line."""
        line = self._line
        return line[self._pos] if self._pos < len(line) else None

    def at_end(self) -> bool:
        """Whether every byte of the command has been read."""
        return self._index == len(self._segments) - 1 and self._pos == len(self._line)

    def expect_end(self) -> None:
        """Raise ParseError unless the whole command has been read."""
        if not self.at_end():
            raise ParseError("Unexpected extra arguments")

    def skip_byte(self, value: bytes) -> bool:
        """Consume ``value`` (one byte) if it is next; return whether it was."""
        if self.peek() == value[0]:
            self._pos += 1
            return True
        return False

    def expect_byte(self, value: bytes, what: str) -> None:
        """Consume ``value`` (one byte) or raise ParseError naming ``what``."""
        if not self.skip_byte(value):
            raise ParseError(f"Expected {what}")

    def expect_sp(self) -> None:
        """Consume one SP (RFC 3501 §9: arguments are separated by exactly one space)."""
        self.expect_byte(b" ", "a space between arguments")

    def match(self, pattern: re.Pattern, what: str) -> bytes:
        """Consume a non-empty match of ``pattern`` at the cursor (within the
        current line) and return it; raise ParseError naming ``what`` if none."""
        found = pattern.match(self._line, self._pos)
        if found is None or found.end() == self._pos:
            raise ParseError(f"Expected {what}")
        self._pos = found.end()
        return found.group()

    # -- grammar

    def atom(self) -> bytes:
        """RFC 3501 §9 atom: 1*ATOM-CHAR."""
        return self.match(_ATOM_RUN, "an atom")

    def tag(self) -> bytes:
        """RFC 3501 §9 tag: 1*<any ASTRING-CHAR except "+">."""
        return self.match(_TAG_RUN, "a tag")

    def number(self) -> int:
        """RFC 3501 §9 number: 1*DIGIT, at most 2^32-1."""
        digits = self.match(_DIGITS, "a number")
        if len(digits) > 10 or int(digits) > NUMBER_MAX:
            raise ParseError("Number out of range")
        return int(digits)

    def nz_number(self) -> int:
        """RFC 3501 §9 nz-number: a number other than 0 (no leading zero)."""
        if self.peek() == 0x30:
            raise ParseError("Expected a non-zero number")
        return self.number()

    def quoted(self) -> bytes:
        """RFC 3501 §9 quoted: DQUOTE *QUOTED-CHAR DQUOTE, with \\" and \\\\ escapes.

        8-bit bytes are accepted (many clients send UTF-8 passwords quoted);
        NUL, CR and LF are not.
        """
        line = self._line
        pos = self._pos
        if pos >= len(line) or line[pos] != 0x22:
            raise ParseError("Expected a quoted string")
        out = bytearray()
        pos += 1
        while pos < len(line):
            char = line[pos]
            if char == 0x22:
                self._pos = pos + 1
                return bytes(out)
            if char == 0x5C:
                pos += 1
                if pos >= len(line) or line[pos] not in b'"\\':
                    raise ParseError("Bad escape in quoted string")
                char = line[pos]
            elif char == 0:
                raise ParseError("NUL in quoted string")
            out.append(char)
            pos += 1
        raise ParseError("Quoted string not closed")

    def literal(self) -> bytes:
        """RFC 3501 §4.3 literal: the data of the literal whose marker is next.

        The marker must end its line (the reader framed it so); NUL is not a
        CHAR8 and is refused.
        """
        data = self._literal_data(self._pos, "a literal")
        if b"\x00" in data:
            raise ParseError("NUL in literal")
        self._index += 2
        self._pos = 0
        return data

    def literal8(self) -> bytes:
        """RFC 4466 §4 / RFC 9051 §9 literal8: ``"~{" number ["+"] "}" CRLF *OCTET``.

        Returns the data, which may hold any octet, NUL included (RFC 3516
        §4.1). Used by APPEND's ``UTF8 (literal8)`` (RFC 6855 §4). The reader
        frames a literal8 like a literal (its marker ends the line; the "~"
        is the line's last byte before the marker).
        """
        if self.peek() != 0x7E:  # "~"
            raise ParseError("Expected a literal8")
        data = self._literal_data(self._pos + 1, "a literal8")
        self._index += 2
        self._pos = 0
        return data

    def _literal_data(self, marker_pos: int, what: str) -> bytes:
        """The data of the literal whose marker starts at ``marker_pos`` (which
        must end the line); ParseError naming ``what`` if there is none."""
        match = _LITERAL_MARKER.match(self._line, marker_pos)
        if match is None or self._index + 1 >= len(self._segments):
            raise ParseError(f"Expected {what}")
        return self._segments[self._index + 1]

    def string(self) -> bytes:
        """RFC 3501 §9 string: quoted / literal."""
        char = self.peek()
        if char == 0x22:
            return self.quoted()
        if char == 0x7B:
            return self.literal()
        raise ParseError("Expected a string")

    def astring(self) -> bytes:
        """RFC 3501 §9 astring: 1*ASTRING-CHAR / string."""
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self.match(_ASTRING_RUN, "an astring")

    def nstring(self) -> bytes | None:
        """RFC 3501 §9 nstring: string / NIL."""
        if self.peek() in (0x22, 0x7B):
            return self.string()
        if self.atom().upper() == b"NIL":
            return None
        raise ParseError("Expected a string or NIL")

    def mailbox(self) -> str:
        """RFC 3501 §9 mailbox: ``"INBOX"`` (any case) / astring, decoded.

        The name is modified UTF-7 (RFC 3501 §5.1.3); a name that is not valid
        modified UTF-7 is a ParseError. ``INBOX`` in any case is returned as
        ``"INBOX"`` (RFC 3501 §5.1); other names keep their case.
        """
        raw = self.astring()
        if raw.upper() == b"INBOX":
            return "INBOX"
        try:
            return mutf7.decode(raw)
        except mutf7.MUTF7Error as error:
            raise ParseError(f"Mailbox name is not valid modified UTF-7: {error}") from None

    def sequence_set(self) -> "SequenceSet":
        """RFC 3501 §9 sequence-set (numbers checked against 2^32-1, 0 refused),
        or ``$`` (RFC 5182 §2.1, RFC 9051 §9 sequence-set)."""
        if self.skip_byte(b"$"):
            return SequenceSet((), saved=True)
        ranges: list[tuple[int | None, int | None]] = []
        while True:
            first = self._seq_number()
            last = first
            if self.skip_byte(b":"):
                last = self._seq_number()
            ranges.append((first, last))
            if not self.skip_byte(b","):
                return SequenceSet(tuple(ranges))

    def _seq_number(self) -> int | None:
        if self.skip_byte(b"*"):
            return None
        if self.peek() is None or not 0x30 <= self.peek() <= 0x39:
            raise ParseError("Invalid sequence set")
        number = self.number()
        if number == 0:
            raise ParseError("Invalid sequence set: 0 is not a message number")
        return number

    def parenthesized(self, item: Callable[["ArgCursor"], object]) -> list:
        """``"(" [item *(SP item)] ")"``: a list of what ``item(cursor)`` returns."""
        self.expect_byte(b"(", "'('")
        values: list = []
        if self.skip_byte(b")"):
            return values
        while True:
            values.append(item(self))
            if self.skip_byte(b")"):
                return values
            self.expect_sp()


@dataclass(frozen=True)
class SequenceSet:
    """A parsed sequence-set: ranges of numbers, ``None`` standing for ``*``.

    Ranges may be reversed (``4:2`` is ``2:4``, RFC 3501 §9 seq-range).
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    #: ``$``, the saved search result (RFC 5182 §2.1); ``ranges`` is then empty and
    #: the selected mailbox resolves it (SelectedMailbox.saved_search_uids).
    saved: bool = False

    def bounds(self, star: int) -> Iterator[tuple[int, int]]:
        """Each range as ``(low, high)`` with ``*`` replaced by ``star``."""
        for first, last in self.ranges:
            first = star if first is None else first
            last = star if last is None else last
            yield (first, last) if first <= last else (last, first)

    def highest(self, star: int) -> int:
        """The largest number the set names, ``*`` being ``star`` (0 for ``$``)."""
        return max((high for _, high in self.bounds(star)), default=0)


def read_tag(cursor: ArgCursor) -> bytes:
    """Read ``tag SP`` at the start of a command; raise ParseError if there is none.

    The caller answers a tagless command with an untagged BAD.
    """
    tag = cursor.tag()
    cursor.expect_sp()
    return tag


def read_command_name(cursor: ArgCursor) -> str:
    """Read the command name after the tag, upper-cased.

    ``UID`` and the command after it are read together (``"UID FETCH"``,
    RFC 3501 §6.4.8), so that the command table has one entry per variant.
    Raises ParseError when no name can be read.
    """
    name = cursor.atom().upper()
    if name == b"UID":
        cursor.expect_sp()
        name += b" " + cursor.atom().upper()
    return name.decode("ascii")
