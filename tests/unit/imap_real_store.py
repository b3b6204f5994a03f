"""A real LMDB store for IMAP command tests: one user, alice@example.test, in a temp dir.

The IMAP unit tests of commands that write (APPEND, STORE, COPY, CREATE...) run
ImapSession against this store rather than a fake, so that what they check is
what the store really committed.
"""

from __future__ import annotations

import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets

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
