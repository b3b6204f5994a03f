"""Reading mbox files (mboxrd and mboxo) for ``mailserverd import mbox``.

An mbox is messages one after another, each starting with a ``From_`` line
(``From sender asctime-date``). Writers quote body lines that would look like
one: mboxo writes ``>From `` for ``From ``; mboxrd adds one ``>`` to every
line matching ``^>*From `` (so ``>From `` in a body survives as ``>>From ``).
Reading undoes one level: mboxrd strips one ``>`` from ``^>+From ``, mboxo
only from ``^>From ``. Every line starting with ``From `` is a message
boundary and must be a valid From_ line; one that is not is an error naming
its line number (an unquoted body line: the file is not a valid mbox, and
splitting there would cut a message in two).

Flags come from the headers mutt, Pine and Dovecot write: ``Status:`` (R =
\\Seen; O = old, not kept) and ``X-Status:`` (A = \\Answered, F = \\Flagged,
T = \\Draft, D = \\Deleted), keywords from ``X-Keywords:``. These headers and
the mbox bookkeeping ones (``X-UID``, ``X-IMAP``, ``X-IMAPbase``,
``Content-Length``) are removed from the stored message. The From_ date,
which carries no zone unless one is written after the time or the year, is
taken as UTC and becomes the INTERNALDATE. Line ends become CRLF.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass

from mailserverd.migration.common import MigrationError, is_keyword, to_crlf

VARIANTS = ("mboxrd", "mboxo")
_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# From_ line: "From " sender, then ctime(3): [weekday] month day hh:mm[:ss] [zone] year [zone].
_FROM_LINE = re.compile(
    rb"From (?P<sender>\S*) +(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +)?"
    rb"(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(?P<day>\d{1,2}) +"
    rb"(?P<hour>\d{1,2}):(?P<minute>\d\d)(?::(?P<second>\d\d))? +"
    rb"(?:(?P<zone1>[+-]\d{4}|[A-Z]{1,5}) +)?(?P<year>\d{4})(?: +(?P<zone2>[+-]\d{4}|[A-Z]{1,5}))? *\r?\n?\Z",
    re.ASCII,
)
_STATUS_LETTERS = {"R": "\\Seen"}
_X_STATUS_LETTERS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
#: Headers that are mbox bookkeeping, not part of the message as sent.
_DROPPED_HEADERS = frozenset({b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap",
                              b"x-imapbase", b"content-length"})


class MboxError(MigrationError):
    """The file is not a valid mbox; ``line`` is the 1-based line number."""

    def __init__(self, path: str, line: int, text: str):
        super().__init__(f"{path}, line {line}: {text}")
        self.line = line


@dataclass(frozen=True)
class MboxEntry:
    """One message of an mbox: its byte range (after the From_ line), date and line."""

    start: int
    end: int
    internaldate: int
    line: int


def parse_from_line(line: bytes) -> int | None:
    """The INTERNALDATE (Unix time) a From_ line gives, or None if it is not one."""
    match = _FROM_LINE.match(line)
    if match is None:
        return None
    month, day, year = _MONTHS[match["month"].decode()], int(match["day"]), int(match["year"])
    hour, minute, second = int(match["hour"]), int(match["minute"]), int(match["second"] or 0)
    if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61 and year >= 1970):
        return None
    when = calendar.timegm((year, month, day, hour, minute, min(second, 59)))
    zone = match["zone1"] or match["zone2"] or b""
    if zone[:1] in (b"+", b"-"):
        offset = int(zone[1:3]) * 3600 + int(zone[3:5]) * 60
        when -= offset if zone[:1] == b"+" else -offset
    return when


def scan_mbox(source, path: str) -> list[MboxEntry]:
    """Index the messages of the binary file ``source`` (read from its start).

    Raises MboxError when the file does not start with a From_ line or has a
    line starting with ``From `` that is not a valid one (nothing is imported
    from a file that fails here).
    """
    entries: list[MboxEntry] = []
    offset = 0
    current = None  # (start, date, line number) of the message being read
    blank = 0  # length of the previous line if it was blank (the separator before a From_ line)
    for number, line in enumerate(source, 1):
        if line.startswith(b"From "):
            date = parse_from_line(line)
            if date is None:
                raise MboxError(path, number, f"bad From_ line {line[:80].decode('latin-1').rstrip()!r}")
            if current is not None:
                entries.append(MboxEntry(current[0], max(current[0], offset - blank), *current[1:]))
            current = (offset + len(line), date, number)
            blank = 0
        elif current is None:
            raise MboxError(path, number, "not an mbox: the first line is not a From_ line")
        else:
            blank = len(line) if line in (b"\n", b"\r\n") else 0
        offset += len(line)
    if current is not None:
        entries.append(MboxEntry(current[0], max(current[0], offset - blank), *current[1:]))
    return entries


def unquote(body: bytes, variant: str) -> bytes:
    """Undo the From_ quoting of one level (see the module docstring)."""
    pattern = rb"^>(>*From )" if variant == "mboxrd" else rb"^>(From )"
    return re.sub(pattern, rb"\1", body, flags=re.MULTILINE)


def message_of(data: bytes, variant: str) -> tuple[bytes, frozenset[str], list[str]]:
    """``(raw, flags, ignored keywords)`` of one message's bytes as the mbox holds them.

    The raw message has the quoting undone, the bookkeeping headers removed
    and CRLF line ends.
    """
    raw = unquote(data, variant)
    blank = re.search(rb"\n\r?\n", raw)
    head, rest = (raw[:blank.start() + 1], raw[blank.start() + 1:]) if blank else (raw, b"")
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line  # a folded header line (RFC 5322 §2.2.3)
        elif line:
            fields.append(line)
    flags: set[str] = set()
    ignored: list[str] = []
    kept = []
    for field in fields:
        name, _, value = field.partition(b":")
        lowered = name.strip().lower()
        if lowered not in _DROPPED_HEADERS:
            kept.append(field)
            continue
        text = value.decode("latin-1").strip()
        if lowered == b"status":
            flags.update(_STATUS_LETTERS[c] for c in text if c in _STATUS_LETTERS)
        elif lowered == b"x-status":
            flags.update(_X_STATUS_LETTERS[c] for c in text if c in _X_STATUS_LETTERS)
        elif lowered == b"x-keywords":
            for word in re.split(r"[\s,]+", text):
                if is_keyword(word):
                    flags.add(word)
                elif word:
                    ignored.append(word)
    return to_crlf(b"".join(kept) + rest), frozenset(flags), ignored
