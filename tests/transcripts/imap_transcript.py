"""Replay ``C:``/``S:`` IMAP dialogues against ImapSession on the real LMDB store.

A transcript file (``tests/transcripts/imap/*.txt``) is a preamble of
directives, then the dialogue. Lines starting ``#`` and blank lines are
ignored everywhere.

Directives (``name: value``):

``state: not-authenticated | authenticated | selected BOX | examined BOX``
    Where the dialogue starts (default not-authenticated). The harness gets
    there with real commands (LOGIN, ENABLE, SELECT/EXAMINE) whose output is
    not part of the transcript.
``enable: EXT ...``
    ENABLE these extensions after LOGIN, before any SELECT.
``tls: off``
    A cleartext connection (port 143 before STARTTLS); default is TLS on.
``quota: BYTES``
    The account's storage quota (set as the administrator would).
``mailbox: NAME [\\Special]``
    Create a mailbox in the store (the account starts with INBOX, Sent,
    Drafts, Trash, Junk and Archive).
``message: BOX [(FLAGS)] ["INTERNALDATE"]``
    Put a message in BOX through the store; its lines follow, each
    prefixed ``| `` (joined with CRLF, with a final CRLF). The default
    INTERNALDATE is ``02-Jan-2024 03:04:05 +0000``. UIDs are given in order.
``xfail: REASON``
    The server is known to answer otherwise (a strict xfail).

``mailbox:`` and ``message:`` may also appear inside the dialogue: they run
at that point (another client's delivery, say, seen by IDLE or NOOP).

Dialogue lines:

``C: text``
    Bytes the client sends: ``text`` + CRLF; lines with no ``S:`` line
    between them arrive in one chunk (pipelined). Literals need no markup: the
    lines after ``{n}`` simply carry its bytes (with their CRLFs), and the
    server's ``+`` continuation is an ``S:`` line in between, as in RFC 3501.
``S: text``
    The next line the server writes, compared byte for byte, except for
    placeholders ``{kind}`` or ``{kind:label}``: ``kind`` says what the value
    may look like (``uidvalidity``, ``modseq``, ``mailboxid``, ``emailid``,
    ``threadid``, ``date``, ``recent``, ``number``, ``version``,
    ``capabilities``); a label binds the value,
    so the same label must match the same bytes later, and a ``C:`` line may
    use a bound ``{kind:label}`` to send the value back (QRESYNC, say). A
    server literal's lines are ``S:`` lines like any other.
``E: start_tls | close``
    What the session next does to its connection (STARTTLS, LOGOUT, BYE).

If the dialogue starts with ``S:`` in the not-authenticated state, those
lines are the greeting. After each run of ``S:`` lines the output so far must
be exactly those lines; at the end nothing may be left unread.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imap_real_store import USER, RealStoreClient, seen_before

DEFAULT_INTERNALDATE = "02-Jan-2024 03:04:05 +0000"

#: Placeholder kinds: what each may match (RFC 9051 §9 grammar).
KINDS: dict[str, bytes] = {
    "uidvalidity": rb"[1-9][0-9]*",  # nz-number
    "modseq": rb"[1-9][0-9]*",  # mod-sequence-value, RFC 7162 §7
    "recent": rb"[0-9]+",
    "number": rb"[0-9]+",
    "mailboxid": rb"[A-Za-z0-9_-]{1,255}",  # objectid, RFC 8474 §7
    "emailid": rb"[A-Za-z0-9_-]{1,255}",
    "threadid": rb"[A-Za-z0-9_-]{1,255}",
    "version": rb"[0-9A-Za-z.+-]+",  # the server's release, in ID (RFC 2971)
    # A CAPABILITY list where the list is not the point (a LOGIN's OK code).
    "capabilities": rb"[A-Za-z0-9=+.-]+(?: [A-Za-z0-9=+.-]+)*",
    "date": rb'"[ 0-3][0-9]-[A-Z][a-z]{2}-[0-9]{4} [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [+-][0-9]{4}"',
}
PLACEHOLDER = re.compile(rb"\{([a-z]+)(?::([A-Za-z0-9_.-]+))?\}")
STATES = ("not-authenticated", "authenticated", "selected", "examined")
EVENTS = ("start_tls", "close")
_MESSAGE = re.compile(r'(\S+)(?:\s+\(([^)]*)\))?(?:\s+"([^"]+)")?')


class TranscriptSyntaxError(ValueError):
    """A transcript file that does not follow the format above."""


@dataclass
class Step:
    """One dialogue step: ``kind`` is ``C``, ``S``, ``E``, ``mailbox`` or ``message``."""

    kind: str
    lineno: int
    #: The line's bytes (C:, S:, E:) or the message's bytes.
    data: bytes = b""
    #: The mailbox to create, or the one the message goes to.
    mailbox: str = ""
    special_use: str | None = None
    flags: tuple[str, ...] = ()
    internaldate: int = 0


@dataclass
class Transcript:
    """A parsed transcript file."""

    name: str
    state: str = "not-authenticated"
    state_mailbox: str = "INBOX"
    enable: tuple[str, ...] = ()
    tls: bool = True
    quota: int | None = None
    xfail: str | None = None
    setup: list[Step] = field(default_factory=list)
    dialogue: list[Step] = field(default_factory=list)


def parse_file(path: Path) -> Transcript:
    """Parse a transcript file; raises TranscriptSyntaxError naming the line."""
    return parse(path.read_bytes(), path.name)


def parse(text: bytes, name: str = "<transcript>") -> Transcript:
    """Parse transcript bytes (UTF-8 lines, LF or CRLF ends)."""
    transcript = Transcript(name)
    lines = text.split(b"\n")
    index = 0
    while index < len(lines):
        lineno, line = index + 1, lines[index].rstrip(b"\r")
        index += 1
        if not line.strip() or line.startswith(b"#"):
            continue
        if line[:2] in (b"C:", b"S:", b"E:"):
            transcript.dialogue.append(_dialogue_line(line, lineno, name))
            continue
        key, sep, value = line.decode("utf-8").partition(":")
        if not sep:
            raise TranscriptSyntaxError(f"{name}:{lineno}: not a directive or dialogue line: {line!r}")
        value = value.strip()
        if key in ("mailbox", "message"):
            step, index = _store_step(key, value, lines, index, lineno, name)
            (transcript.dialogue if transcript.dialogue else transcript.setup).append(step)
        elif transcript.dialogue:
            raise TranscriptSyntaxError(f"{name}:{lineno}: {key}: belongs in the preamble")
        else:
            _preamble(transcript, key, value, lineno)
    return transcript


def _dialogue_line(line: bytes, lineno: int, name: str) -> Step:
    kind, rest = line[:1].decode(), line[2:]
    if rest and not rest.startswith(b" "):
        raise TranscriptSyntaxError(f"{name}:{lineno}: {kind}: must be followed by a space")
    data = rest[1:]
    if kind == "S":
        for match in PLACEHOLDER.finditer(data):
            if match.group(1).decode() not in KINDS:
                raise TranscriptSyntaxError(f"{name}:{lineno}: unknown placeholder {match.group(0)!r}")
    if kind == "E" and data.decode() not in EVENTS:
        raise TranscriptSyntaxError(f"{name}:{lineno}: unknown event {data!r}")
    return Step(kind, lineno, data)


def _store_step(key, value, lines, index, lineno, name) -> tuple[Step, int]:
    """A ``mailbox:`` or ``message:`` step (and the ``| `` lines of a message)."""
    if key == "mailbox":
        mailbox, _, special = value.partition(" ")
        return Step("mailbox", lineno, mailbox=mailbox, special_use=special.strip() or None), index
    match = _MESSAGE.fullmatch(value)
    if match is None:
        raise TranscriptSyntaxError(f"{name}:{lineno}: message: BOX [(FLAGS)] [\"DATE\"]")
    body = []
    while index < len(lines) and lines[index].rstrip(b"\r")[:1] == b"|":
        body.append(lines[index].rstrip(b"\r")[2:])
        index += 1
    date = datetime.datetime.strptime(match.group(3) or DEFAULT_INTERNALDATE, "%d-%b-%Y %H:%M:%S %z")
    step = Step("message", lineno, b"\r\n".join(body) + b"\r\n", mailbox=match.group(1),
                flags=tuple((match.group(2) or "").split()), internaldate=int(date.timestamp()))
    return step, index


def _preamble(transcript: Transcript, key: str, value: str, lineno: int) -> None:
    where = f"{transcript.name}:{lineno}"
    if key == "state":
        state, _, mailbox = value.partition(" ")
        if state not in STATES or (state in ("selected", "examined")) != bool(mailbox):
            raise TranscriptSyntaxError(f"{where}: state: {' | '.join(STATES)} [BOX]")
        transcript.state, transcript.state_mailbox = state, mailbox or "INBOX"
    elif key == "enable":
        transcript.enable = tuple(value.split())
    elif key == "tls":
        transcript.tls = value != "off"
    elif key == "quota":
        transcript.quota = int(value)
    elif key == "xfail":
        transcript.xfail = value
    else:
        raise TranscriptSyntaxError(f"{where}: unknown directive {key!r}")


# ---------------------------------------------------------------- replay


class Replay:
    """One transcript's run: the client, the placeholder bindings, the events seen."""

    def __init__(self, transcript: Transcript, store, turns: int):
        self.transcript = transcript
        self.store = store
        self.turns = turns
        self.bound: dict[tuple[str, str], bytes] = {}
        self.events_seen = 0
        self.client: RealStoreClient | None = None

    async def run(self) -> None:
        """Set up, then walk the dialogue; pytest.fail at the first difference."""
        t = self.transcript
        if t.quota is not None:
            await self.store.set_quota(USER, t.quota)
        for step in t.setup:
            await self.store_step(step)
        await self.claim_recent()
        self.client = client = RealStoreClient(self.store, tls_active=t.tls)
        await self.reach_state()
        if t.state == "not-authenticated" and t.dialogue and t.dialogue[0].kind == "S":
            client.out.data[:0] = client.greeting
        steps = t.dialogue
        index = 0
        while index < len(steps):
            step = steps[index]
            if step.kind == "C":
                end = index
                while end < len(steps) and steps[end].kind == "C":
                    end += 1
                # Lines with no S: between them arrive together (pipelined).
                client.session.data_received(b"".join(self.substitute(s) + b"\r\n" for s in steps[index:end]))
                index = end
            elif step.kind == "S":
                end = index
                while end < len(steps) and steps[end].kind == "S":
                    end += 1
                await self.expect(steps[index:end])
                index = end
            elif step.kind == "E":
                await self.expect_event(step)
                index += 1
            else:
                await self.store_step(step)
                index += 1
        await self.expect([])

    async def store_step(self, step: Step) -> None:
        if step.kind == "mailbox":
            await self.store.create_mailbox(USER, step.mailbox, step.special_use)
        else:
            await self.store.append(USER, step.mailbox, step.data, step.flags, step.internaldate)

    async def claim_recent(self) -> None:
        """Make the preamble's messages old mail, claimed by an earlier session,
        so they are not \\Recent in this one (RFC 3501 §2.3.2)."""
        for box in dict.fromkeys(step.mailbox for step in self.transcript.setup if step.kind == "message"):
            await seen_before(self.store, box)

    async def reach_state(self) -> None:
        """LOGIN, ENABLE, SELECT/EXAMINE as the preamble says; their output is dropped."""
        t, client = self.transcript, self.client
        if t.state == "not-authenticated":
            return
        await client.login()
        if t.enable:
            reply = await client.cmd(b"E ENABLE " + " ".join(t.enable).encode())
            assert b"\r\nE OK" in reply, reply
        if t.state in ("selected", "examined"):
            verb = b"SELECT " if t.state == "selected" else b"EXAMINE "
            reply = await client.cmd(b"S " + verb + t.state_mailbox.encode())
            assert re.search(rb"(?m)^S OK", reply), reply

    def substitute(self, step: Step) -> bytes:
        """A C: line with its bound placeholders replaced by their values."""
        def value(match: re.Match) -> bytes:
            key = (match.group(1).decode(), (match.group(2) or b"").decode())
            if key[0] not in KINDS:
                return match.group(0)  # not a placeholder: client bytes like any others
            if key not in self.bound:
                self.fail(step, f"C: uses {match.group(0).decode()}, which no S: line has bound")
            return self.bound[key]
        return PLACEHOLDER.sub(value, step.data)

    async def expect(self, expected: list[Step]) -> None:
        """The output holds exactly ``expected`` lines (waiting for them to arrive)."""
        out = self.client.out
        await self.wait(lambda data: data.count(b"\r\n") >= len(expected))
        actual = out.take().split(b"\r\n")
        if actual[-1] == b"":
            actual.pop()
        else:
            actual[-1] += b"  <-- (no CRLF yet)"
        for number, step in enumerate(expected):
            if number >= len(actual):
                self.mismatch(step, expected, actual, number, "the server sent no such line")
            if not self.line_matches(step.data, actual[number]):
                self.mismatch(step, expected, actual, number, "this line differs")
        if len(actual) > len(expected):
            where = expected[-1] if expected else None
            self.mismatch(where, expected, actual, len(expected), "the server sent more lines than expected")

    async def wait(self, ready) -> None:
        """Wait (up to ``turns``) for ``ready(output)``. Each turn also runs the
        calls due now on the session's Clock: what the reactor would run at its
        next turn (IDLE's report of a change, say); no timer comes due."""
        clock = self.client.session.ctx.clock

        def due_then_ready(data: bytes) -> bool:
            clock.advance(0)
            return ready(bytes(self.client.out.data))
        await self.client.wait_for(due_then_ready, self.turns)

    def line_matches(self, pattern: bytes, line: bytes) -> bool:
        """Whether ``line`` is ``pattern`` with its placeholders filled; binds labels."""
        parts, keys, last = [], [], 0
        for match in PLACEHOLDER.finditer(pattern):
            parts.append(re.escape(pattern[last:match.start()]))
            kind, label = match.group(1).decode(), (match.group(2) or b"").decode()
            parts.append(rb"(" + KINDS[kind] + rb")")
            keys.append((kind, label))
            last = match.end()
        parts.append(re.escape(pattern[last:]))
        found = re.fullmatch(b"".join(parts), line)
        if found is None:
            return False
        bound = dict(self.bound)
        for key, value in zip(keys, found.groups()):
            if key[1] and bound.setdefault(key, value) != value:
                return False
        self.bound = bound
        return True

    async def expect_event(self, step: Step) -> None:
        events = self.client.out.events
        await self.wait(lambda _: len(events) > self.events_seen)
        if len(events) <= self.events_seen or events[self.events_seen] != step.data.decode():
            self.fail(step, f"expected the session to {step.data.decode()}; its actions: {events}")
        self.events_seen += 1

    def mismatch(self, step, expected, actual, number, why) -> None:
        lines = [f"{why} (reply line {number + 1}):"]
        for n in range(max(len(expected), len(actual))):
            mark = ">" if n == number else " "
            if n < len(expected):
                lines.append(f"{mark} expected S: {expected[n].data.decode('utf-8', 'replace')}")
            if n < len(actual):
                lines.append(f"{mark} actual   S: {actual[n].decode('utf-8', 'replace')}")
        self.fail(step, "\n".join(lines))

    def fail(self, step, message: str) -> None:
        lineno = step.lineno if step is not None else "end"
        pytest.fail(f"{self.transcript.name}:{lineno}: {message}", pytrace=False)

    def finish(self) -> None:
        """After the dialogue: every action of the session was expected."""
        events = self.client.out.events[self.events_seen:]
        if events:
            self.fail(None, f"the session also did {events} (add E: lines)")


async def replay(transcript: Transcript, store, turns: int = 5000) -> None:
    """Run ``transcript`` against a new session on ``store``; pytest.fail at the
    first difference, naming the file line and showing the reply around it.
    ``turns`` (~1 ms each) is how long to wait for a line that does not come."""
    run = Replay(transcript, store, turns)
    await run.run()
    run.finish()
