"""A real LMDB store for IMAP command tests: one user, alice@example.test, in a temp dir.

The IMAP unit tests of commands that write (APPEND, STORE, COPY, CREATE...) run
ImapSession against this store rather than a fake, so that what they check is
what the store really committed.
"""

from __future__ import annotations

import re

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from imap_fakes import RecordingOutput
from mailserverd.imap.session import ImapSession
from mailserverd.limits import MIB, Limits
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets
from session_fakes import FakeAuthenticator, make_context

USER = "alice@example.test"
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))


def open_store(tmp_path, limits: Limits | None = None):
    """Yield a started store holding example.test and USER; stop it afterwards.
    For a fixture: ``yield from open_store(tmp_path)``."""
    opened = LMDBStore.open(str(tmp_path / "data"), 1, limits or Limits(store_map_size=32 * MIB))
    opened.start()
    pytest_twisted.blockon(opened.add_domain("example.test"))
    pytest_twisted.blockon(opened.add_user(USER, CREDS))
    yield opened
    pytest_twisted.blockon(opened.stop())


PASSWORD = "alice secret"


class RealStoreClient:
    """An ImapSession on the real store over a recording output, logged in with
    :meth:`login`; ``await client.cmd(b"a NOOP")`` returns the reply bytes once
    the tagged reply is there (a generous deadline, then AssertionError)."""

    def __init__(self, store, password: str = PASSWORD):
        self.store = store
        self.password = password
        self.out = RecordingOutput()
        ctx = make_context(store, FakeAuthenticator({USER: password}))
        self.session = ImapSession(ctx, self.out, client_ip="192.0.2.7", tls_active=True)
        self.session.start()
        self.out.take()

    async def cmd(self, line: bytes, tag: bytes | None = None) -> bytes:
        tag = re.escape(tag or line.split(b" ", 1)[0])
        done = re.compile(rb"(?:\A|\r\n)" + tag + rb" (?:OK|NO|BAD)[^\r\n]*\r\n\Z")
        self.session.data_received(line + b"\r\n")
        for _ in range(5000):  # ~5 s of reactor turns
            if done.search(bytes(self.out.data)):
                return self.out.take()
            await deferLater(reactor, 0.001, lambda: None)
        raise AssertionError(f"no tagged reply to {line!r}: {bytes(self.out.data)!r}")

    async def login(self, *extensions: str) -> None:
        """LOGIN; then mark ``extensions`` enabled as ENABLE would."""
        reply = await self.cmd(b'L LOGIN ' + USER.encode() + b' "' + self.password.encode() + b'"')
        assert b"L OK" in reply, reply
        self.session.enabled.update(extensions)

    async def c(self, line: bytes, tag: bytes | None = None) -> list[bytes]:
        """:meth:`cmd`, split into lines (without their CRLF)."""
        return (await self.cmd(line, tag)).split(b"\r\n")[:-1]


def created(reply: bytes) -> bytes:
    """A CREATE reply without its MAILBOXID code (RFC 8474 §4.1), checked for form."""
    return re.sub(rb"\[MAILBOXID \(F[0-9a-f]+-[0-9a-f]+\)\] ", b"", reply)
