"""Test doubles for the POP3 core's unit transcripts (the e2e tests use the real store).

``FakeMailStore`` keeps one INBOX per user in memory with the MailStore
methods POP3 calls; ``FakeAuthenticator`` knows passwords in a dict;
``RecordingSink`` is the session's connection; ``make_ctx`` builds a
ServerContext around them with a ``Clock``.
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred, fail, succeed

from mailserverd.context import ServerContext
from mailserverd.pop3.session import POP3Session
from mailserverd.store.errors import NotFound
from mailserverd.store.types import FlagsResult, MailboxInfo, MessageInfo

from session_fakes import HOSTNAME, FakeAuthenticator, make_context  # noqa: F401 (re-exported for the tests)



class FakeMailStore:
    """INBOXes in memory. ``hold_writes`` makes writes return unfired Deferreds (in ``held``);
    ``write_error`` makes them fail with that exception."""

    def __init__(self):
        self.messages: dict[str, list[MessageInfo]] = {}
        self.blobs: dict[bytes, bytes] = {}
        self.calls: list[tuple] = []
        self.hold_writes = False
        self.held: list[Deferred] = []
        self.write_error: Exception | None = None
        self.read_error: Exception | None = None

    def add_message(self, user: str, raw: bytes, flags=()) -> MessageInfo:
        inbox = self.messages.setdefault(user, [])
        blob_id = hashlib.sha256(raw).digest()
        self.blobs[blob_id] = raw
        uid = (inbox[-1].uid if inbox else 0) + 1
        info = MessageInfo(uid, frozenset(flags), 0, len(raw), uid, blob_id)
        inbox.append(info)
        return info

    def get_mailbox(self, user: str, name: str) -> MailboxInfo:
        if user not in self.messages or name.upper() != "INBOX":
            raise NotFound(name)
        inbox = self.messages[user]
        return MailboxInfo(7, "INBOX", 1700000000, len(inbox) + 1, 1, len(inbox), 0,
                           sum(m.size for m in inbox), True, None)

    def list_messages(self, user: str, mailbox_id: int) -> list[MessageInfo]:
        assert mailbox_id == 7
        return list(self.messages[user])

    def read_message(self, user: str, blob_id: bytes) -> bytes:
        if self.read_error is not None:
            raise self.read_error
        return self.blobs[blob_id]

    def _write(self, result, apply):
        if self.write_error is not None:
            return fail(self.write_error)
        if self.hold_writes:
            d = Deferred()
            d.addCallback(lambda _: (apply(), result())[1])
            self.held.append(d)
            return d
        apply()
        return succeed(result())

    def store_flags(self, user, mailbox_id, uids, mode, flags, unchanged_since=None):
        uids, flags = list(uids), frozenset(flags)
        self.calls.append(("store_flags", user, mailbox_id, tuple(uids), mode, tuple(sorted(flags))))

        def apply():
            inbox = self.messages[user]
            for index, message in enumerate(inbox):
                if message.uid in uids:
                    inbox[index] = MessageInfo(message.uid, message.flags | flags, 0,
                                               message.size, message.modseq + 1, message.blob_id)
        return self._write(lambda: FlagsResult(()), apply)

    def expunge(self, user, mailbox_id, uids=None):
        uids = list(uids)
        self.calls.append(("expunge", user, mailbox_id, tuple(uids)))
        gone = [m.uid for m in self.messages[user] if m.uid in uids and "\\Deleted" in m.flags]

        def apply():
            self.messages[user] = [m for m in self.messages[user] if m.uid not in gone]
        return self._write(lambda: gone, apply)


class RecordingSink:
    """The session's connection: records bytes and actions.

    ``hold_streams`` keeps bodies unsent until :meth:`finish_streams`.
    """

    def __init__(self):
        self.output = bytearray()
        self.events: list[str] = []
        self.hold_streams = False
        self.streams: list[tuple] = []

    def send(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.output += data

    def send_stream(self, chunks) -> Deferred:
        d = Deferred()
        if self.hold_streams:
            self.streams.append((chunks, d))
        else:
            for chunk in chunks:
                self.output += chunk
            d.callback(None)
        return d

    def finish_streams(self) -> None:
        streams, self.streams = self.streams, []
        for chunks, d in streams:
            for chunk in chunks:
                self.output += chunk
            d.callback(None)

    def start_tls(self) -> None:
        self.events.append("start_tls")

    def close(self) -> None:
        self.events.append("close")

    def pause_input(self) -> None:
        self.events.append("pause")

    def resume_input(self) -> None:
        self.events.append("resume")

    def take(self) -> bytes:
        data = bytes(self.output)
        self.output.clear()
        return data


def make_ctx(store=None, authenticator=None, allow_plaintext=False, **limits) -> ServerContext:
    return make_context(store if store is not None else FakeMailStore(),
                        authenticator if authenticator is not None else FakeAuthenticator({}),
                        allow_plaintext, **limits)


class Harness:
    """A started session with its sink, store, authenticator and clock."""

    def __init__(self, *, tls_active=True, allow_plaintext=False, passwords=None, ctx=None, **limits):
        """A new server (store, authenticator, context), or a second connection to ``ctx``'s."""
        if ctx is None:
            store = FakeMailStore()
            auth = FakeAuthenticator(passwords if passwords is not None else {"alice@example.test": "s3cret pw"})
            for address in auth.passwords:
                store.messages[address] = []  # every account has an INBOX
            ctx = make_ctx(store, auth, allow_plaintext, **limits)
        self.ctx = ctx
        self.store = ctx.store
        self.auth = ctx.authenticator
        self.clock = self.ctx.clock
        self.sink = RecordingSink()
        self.session = POP3Session(self.ctx, self.sink, client_ip="192.0.2.7", tls_active=tls_active)
        self.session.start()

    def send(self, data: bytes) -> bytes:
        """Feed ``data`` and return everything the server sent in response."""
        self.session.data_received(data)
        return self.sink.take()

    def converse(self, script: str) -> None:
        """Replay a C:/S: transcript; each group of S: lines must be exactly what the
        server sends after the C: line(s) before it. ``C:`` and ``S:`` alone are empty
        lines; ``S: +`` is an empty SASL challenge ("+ ")."""
        pending_client = b""
        expected: list[bytes] = []

        def flush():
            nonlocal pending_client, expected
            if pending_client or expected:
                got = self.send(pending_client)
                want = b"".join(line + b"\r\n" for line in expected)
                assert got == want, f"after {pending_client!r}:\n got {got!r}\nwant {want!r}"
            pending_client, expected = b"", []

        for raw in script.strip("\n").splitlines():
            line = raw.strip().encode()
            if not line:
                continue
            if line.startswith(b"C: ") or line == b"C:":
                if expected:
                    flush()
                pending_client += line[3:] + b"\r\n"
            elif line == b"S: +":
                expected.append(b"+ ")  # RFC 5034 §4: an empty challenge is "+" and a space
            elif line.startswith(b"S: "):
                expected.append(line[3:])
            elif line == b"S:":
                expected.append(b"")
            else:
                raise ValueError(f"bad transcript line {raw!r}")
        flush()

    def login(self, user="alice@example.test", password="s3cret pw") -> bytes:
        self.sink.take()
        return self.send(b"USER %s\r\nPASS %s\r\n" % (user.encode(), password.encode()))
