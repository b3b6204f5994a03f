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


def open_store(tmp_path, limits: Limits | None = None, keyring=None):
    """Yield a started store holding example.test and USER (encrypted at rest
    with ``keyring`` if given); stop it afterwards. For a fixture:
    ``yield from open_store(tmp_path)``."""
    opened = LMDBStore.open(str(tmp_path / "data"), 1, limits or Limits(store_map_size=32 * MIB),
                            keyring=keyring)
    opened.start()
    pytest_twisted.blockon(opened.add_domain("example.test"))
    pytest_twisted.blockon(opened.add_user(USER, CREDS))
    yield opened
    pytest_twisted.blockon(opened.stop())


PASSWORD = "alice secret"


class RealStoreClient:
    """An ImapSession on the real store over a recording output, logged in with
    :meth:`login`; ``await client.cmd(b"a NOOP")`` returns the reply bytes once
    the tagged reply is there (a generous deadline, then AssertionError).
    ``limits`` are the session's named limits that differ from the defaults;
    ``tls_active=False`` is a cleartext connection (port 143 before STARTTLS)."""

    def __init__(self, store, password: str = PASSWORD, tls_active: bool = True, **limits):
        self.store = store
        self.password = password
        self.out = RecordingOutput()
        ctx = make_context(store, FakeAuthenticator({USER: password}), **limits)
        self.session = ImapSession(ctx, self.out, client_ip="192.0.2.7", tls_active=tls_active)
        self.session.start()
        self.greeting = self.out.take()

    async def cmd(self, line: bytes, tag: bytes | None = None) -> bytes:
        tag = re.escape(tag or line.split(b" ", 1)[0])
        done = re.compile(rb"(?:\A|\r\n)" + tag + rb" (?:OK|NO|BAD)[^\r\n]*\r\n\Z")
        self.session.data_received(line + b"\r\n")
        if await self.wait_for(lambda data: done.search(data) is not None):
            return self.out.take()
        raise AssertionError(f"no tagged reply to {line!r}: {bytes(self.out.data)!r}")

    async def wait_for(self, ready, turns: int = 5000) -> bool:
        """Turn the reactor until ``ready(output so far)`` is true (True), or
        ``turns`` turns of ~1 ms passed (False); the output is left in place."""
        for _ in range(turns):
            if ready(bytes(self.out.data)):
                return True
            await deferLater(reactor, 0.001, lambda: None)
        return ready(bytes(self.out.data))

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


async def seen_before(store, name: str = "INBOX") -> None:
    """Claim the mailbox's messages as an earlier session's SELECT did, so that
    they are not \\Recent in the session under test (RFC 3501 §2.3.2; the
    tests of \\Recent itself are in test_imap_recent.py)."""
    await store.claim_recent(USER, store.get_mailbox(USER, name).mailbox_id)
