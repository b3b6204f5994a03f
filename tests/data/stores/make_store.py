"""Write the small store that tests/unit/test_schema_upgrade.py opens and migrates.

Run it with the mailserverd release that writes the schema to keep, before the
schema changes (``PYTHONPATH=<that release's tree> python make_store.py OUT.tar.gz``):
each schema version's store is kept as ``schema-N.tar.gz`` beside this script.
It makes two shards, a domain, two users, mailboxes with children and a
special use, messages with flags and keywords, a copy, a move and an expunge,
and records what it made in ``expected.json`` inside the archive.
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task

from mailserverd.limits import MIB, Limits
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets

CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))


def message(number: int) -> bytes:
    return (b"From: a@example.test\r\nTo: alice@example.test\r\nSubject: message %d\r\n"
            b"Message-ID: <%d@example.test>\r\n\r\nbody %d\r\n" % (number, number, number))


@defer.inlineCallbacks
def fill(data: Path):
    store = LMDBStore.open(str(data), 2, Limits(store_map_size=8 * MIB), reactor=reactor)
    store.start()
    yield store.add_domain("example.test")
    for user in ("alice@example.test", "bob@example.test"):
        yield store.add_user(user, CREDS)
    yield store.create_mailbox("alice@example.test", "Work/Done")
    for number in range(1, 6):
        yield store.append("alice@example.test", "INBOX", message(number), flags=["\\Seen"] if number % 2 else ["$Label1"],
                           internaldate=1700000000 + number)
    yield store.deliver(["alice@example.test", "bob@example.test"], message(6), internaldate=1700000006)
    inbox = store.get_mailbox("alice@example.test", "INBOX")
    yield store.copy("alice@example.test", inbox.mailbox_id, [1], "Work/Done")
    yield store.move("alice@example.test", inbox.mailbox_id, [2], "Archive")
    yield store.store_flags("alice@example.test", inbox.mailbox_id, [3], "+", ["\\Deleted"])
    yield store.expunge("alice@example.test", inbox.mailbox_id)
    expected = {}
    for user in ("alice@example.test", "bob@example.test"):
        boxes = {}
        for info in store.list_mailboxes(user):
            boxes[info.name] = {
                "uidvalidity": info.uidvalidity, "uidnext": info.uidnext,
                "special_use": info.special_use,
                "messages": [[m.uid, sorted(m.flags), store.read_message(user, m.blob_id).decode()]
                             for m in store.list_messages(user, info.mailbox_id)],
            }
        expected[user] = boxes
    (data / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
    yield store.stop()


def main(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"

        def run(_reactor):
            return fill(data)

        try:
            task.react(run)
        except SystemExit as exit_:
            if exit_.code:
                raise
        with tarfile.open(out, "w:gz") as archive:
            archive.add(data, arcname="data")


if __name__ == "__main__":
    main(sys.argv[1])
