"""Test doubles for the IMAP core's unit transcripts (the e2e tests use the real store).

``FakeMailStore`` keeps mailboxes in memory with the MailStore methods the IMAP
core calls (facts come from the real :func:`mailserverd.mail.facts.compute_facts`);
``FakeAuthenticator`` knows passwords in a dict; ``RecordingOutput`` is the
session's connection; ``Harness`` starts a session on a ``Clock``.
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred, fail, succeed

from mailserverd.context import ServerContext
from mailserverd.imap.session import ImapSession
from mailserverd.mail.facts import compute_facts
from mailserverd.store.errors import Expunged, NotFound
from mailserverd.store.types import FlagsResult, MailboxInfo, MessageInfo

from session_fakes import HOSTNAME, FakeAuthenticator, make_context  # noqa: F401 (re-exported for the tests)

USER = "alice@example.test"
PASSWORD = "correct horse"
INTERNALDATE = 1704164645  # 2024-01-02 03:04:05 UTC


class FakeMailStore:
    """Mailboxes in memory: ``boxes[user][name] = {"id", "uidvalidity", "uidnext", "messages"}``.

    ``hold_writes`` makes writes return unfired Deferreds (kept in ``held``);
    ``write_error`` / ``read_error`` make writes / message reads fail.
    """

    def __init__(self):
        self.boxes: dict[str, dict[str, dict]] = {}
        self.blobs: dict[bytes, bytes] = {}
        self.calls: list[tuple] = []
        self.hold_writes = False
        self.held: list[Deferred] = []
        self.write_error: Exception | None = None
        self.read_error: Exception | None = None

    def add_mailbox(self, user: str, name: str) -> dict:
        boxes = self.boxes.setdefault(user, {})
        box = {"id": len(boxes) + 1, "name": name, "uidvalidity": 1700000000 + len(boxes),
               "uidnext": 1, "messages": []}
        boxes[name] = box
        return box

    def add_message(self, user: str, mailbox: str, raw: bytes, flags=(),
                    internaldate: int = INTERNALDATE) -> MessageInfo:
        box = self.boxes[user][mailbox]
        blob_id = hashlib.sha256(raw).digest()
        self.blobs[blob_id] = raw
        uid = box["uidnext"]
        box["uidnext"] += 1
        info = MessageInfo(uid, frozenset(flags), internaldate, len(raw), uid, blob_id)
        box["messages"].append(info)
        return info

    def remove_message(self, user: str, mailbox: str, uid: int) -> None:
        """What another session's EXPUNGE does."""
        box = self.boxes[user][mailbox]
        box["messages"] = [m for m in box["messages"] if m.uid != uid]

    def _box(self, user: str, name: str) -> dict:
        boxes = self.boxes.get(user, {})
        if name.upper() == "INBOX":
            name = "INBOX"
        if name not in boxes:
            raise NotFound(name)
        return boxes[name]

    def _box_by_id(self, user: str, mailbox_id: int) -> dict:
        for box in self.boxes.get(user, {}).values():
            if box["id"] == mailbox_id:
                return box
        raise NotFound(str(mailbox_id))

    def get_mailbox(self, user: str, name: str) -> MailboxInfo:
        self.calls.append(("get_mailbox", user, name))
        box = self._box(user, name)
        messages = box["messages"]
        keywords = sorted({flag for m in messages for flag in m.flags if not flag.startswith("\\")})
        return MailboxInfo(box["id"], box["name"], box["uidvalidity"], box["uidnext"], 1,
                           len(messages), sum("\\Seen" not in m.flags for m in messages),
                           sum(m.size for m in messages), True, None, tuple(keywords),
                           first_recent_uid=box["uidnext"])  # nothing recent: no claim to fake

    def list_messages(self, user: str, mailbox_id: int) -> list[MessageInfo]:
        return list(self._box_by_id(user, mailbox_id)["messages"])

    def list_uids(self, user: str, mailbox_id: int) -> list[int]:
        return [m.uid for m in self._box_by_id(user, mailbox_id)["messages"]]

    def first_unseen_uid(self, user: str, mailbox_id: int) -> int | None:
        return next((m.uid for m in self._box_by_id(user, mailbox_id)["messages"]
                     if "\\Seen" not in m.flags), None)

    def get_message(self, user: str, mailbox_id: int, uid: int) -> MessageInfo:
        for info in self._box_by_id(user, mailbox_id)["messages"]:
            if info.uid == uid:
                return info
        raise Expunged(str(uid))

    def read_message(self, user: str, blob_id: bytes) -> bytes:
        self.calls.append(("read_message", user))
        if self.read_error is not None:
            raise self.read_error
        return self.blobs[blob_id]

    def read_facts(self, user: str, blob_id: bytes) -> dict:
        self.calls.append(("read_facts", user))
        return compute_facts(self.blobs[blob_id])

    def store_flags(self, user, mailbox_id, uids, mode, flags, unchanged_since=None):
        uids, flags = list(uids), frozenset(flags)
        assert mode == "+"
        self.calls.append(("store_flags", user, mailbox_id, tuple(uids), mode, tuple(sorted(flags))))
        if self.write_error is not None:
            return fail(self.write_error)
        box = self._box_by_id(user, mailbox_id)

        def apply(_=None) -> FlagsResult:
            changed = []
            for index, message in enumerate(box["messages"]):
                if message.uid in uids and not flags <= message.flags:
                    new = MessageInfo(message.uid, message.flags | flags, message.internaldate,
                                      message.size, message.modseq + 1, message.blob_id)
                    box["messages"][index] = new
                    changed.append(new)
            return FlagsResult(tuple(changed))

        if self.hold_writes:
            held = Deferred()
            held.addCallback(apply)
            self.held.append(held)
            return held
        return succeed(apply())

    def release(self) -> None:
        held, self.held = self.held, []
        for d in held:
            d.callback(None)


class RecordingOutput:
    """The session's connection: bytes written and actions taken, in order."""

    def __init__(self):
        self.data = bytearray()
        self.events: list[str] = []

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        assert "close" not in self.events, "write after close"
        self.data += data

    def start_tls(self) -> None:
        self.events.append("start_tls")

    def start_compression(self, pending: bytes) -> None:
        self.events.append("start_compression")

    def close(self) -> None:
        self.events.append("close")

    def wait_writable(self):
        return None  # a recording never fills up

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


def make_ctx(store=None, authenticator=None, allow_plaintext=False, **limits) -> ServerContext:
    return make_context(store if store is not None else FakeMailStore(),
                        authenticator if authenticator is not None else FakeAuthenticator({}),
                        allow_plaintext, **limits)


class Harness:
    """A started session with its output, store, authenticator and clock.

    ``c(data)`` sends client bytes and returns what the server wrote since.
    """

    def __init__(self, *, tls_active=True, allow_plaintext=False, **limits):
        self.store = FakeMailStore()
        self.store.add_mailbox(USER, "INBOX")
        self.auth = FakeAuthenticator({USER: PASSWORD})
        self.ctx = make_ctx(self.store, self.auth, allow_plaintext, **limits)
        self.clock = self.ctx.clock
        self.out = RecordingOutput()
        self.session = ImapSession(self.ctx, self.out, client_ip="192.0.2.7", tls_active=tls_active)
        self.session.start()
        self.greeting = self.out.take()

    def c(self, data: bytes) -> bytes:
        self.session.data_received(data)
        return self.out.take()

    def login(self) -> None:
        reply = self.c(b'L1 LOGIN alice@example.test "correct horse"\r\n')
        assert reply.startswith(b"L1 OK"), reply

    def select(self, name: bytes = b"INBOX") -> bytes:
        self.login()
        reply = self.c(b"S1 SELECT " + name + b"\r\n")
        assert b"S1 OK [READ-WRITE]" in reply, reply
        return reply

    @property
    def closed(self) -> bool:
        return "close" in self.out.events
