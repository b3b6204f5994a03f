"""Mailboxes of the LMDB store: create, delete, rename (children, INBOX), subscribe."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store.errors import AlreadyExists, InvalidName, LimitExceeded, NotFound, NotPermitted
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import Credentials, ScramSecrets

LIMITS = Limits(store_map_size=32 * MIB, mailbox_name_max=40, mailboxes_per_user_max=12)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))
USER = "user@example.com"


@pytest.fixture
def store(tmp_path):
    opened = LMDBStore.open(str(tmp_path / "data"), 1, LIMITS)
    opened.start()
    pytest_twisted.blockon(opened.add_domain("example.com"))
    pytest_twisted.blockon(opened.add_user(USER, CREDS))
    yield opened
    pytest_twisted.blockon(opened.stop())


async def expect(deferred, error_type):
    with pytest.raises(error_type):
        await deferred


def names(store):
    return [m.name for m in store.list_mailboxes(USER)]


@pytest_twisted.ensureDeferred
async def test_create_makes_missing_parents_and_drops_a_trailing_separator(store):
    created = await store.create_mailbox(USER, "Work/2024/Q1")
    assert created.name == "Work/2024/Q1" and created.uidnext == 1 and created.messages == 0
    assert {"Work", "Work/2024", "Work/2024/Q1"} <= set(names(store))
    folder = await store.create_mailbox(USER, "Lists/")
    assert folder.name == "Lists"
    assert store.get_mailbox(USER, "Lists").mailbox_id == folder.mailbox_id
    await expect(store.create_mailbox(USER, "Work"), AlreadyExists)


@pytest_twisted.ensureDeferred
async def test_create_refuses_bad_names(store):
    for bad in ("", "a//b", "/a", "x" * 41, "star*", "pct%", "ctl\x01"):
        await expect(store.create_mailbox(USER, bad), InvalidName)
    await store.create_mailbox(USER, "é" * 20)  # 40 octets: at the limit
    await expect(store.create_mailbox(USER, "é" * 20 + "x"), InvalidName)
    await expect(store.create_mailbox(USER, "Special", special_use="\\Bogus"), NotPermitted)
    flagged = await store.create_mailbox(USER, "Important", special_use="\\Flagged")
    assert flagged.special_use == "\\Flagged"


@pytest_twisted.ensureDeferred
async def test_inbox_is_case_insensitive(store):
    inbox = store.get_mailbox(USER, "InBoX")
    assert inbox.name == "INBOX"
    await expect(store.create_mailbox(USER, "inbox"), AlreadyExists)
    child = await store.create_mailbox(USER, "inbox/Sub")
    assert child.name == "INBOX/Sub"
    with pytest.raises(NotFound):
        store.get_mailbox(USER, "Nope")


@pytest_twisted.ensureDeferred
async def test_mailbox_count_is_limited(store):
    for n in range(6):  # 6 default mailboxes + 6 = the limit of 12
        await store.create_mailbox(USER, f"m{n}")
    await expect(store.create_mailbox(USER, "one-too-many"), LimitExceeded)
    await store.delete_mailbox(USER, "m0")
    await store.create_mailbox(USER, "fits-again")


@pytest_twisted.ensureDeferred
async def test_delete_removes_mail_but_keeps_children_and_subscription(store):
    await store.create_mailbox(USER, "Old/Child")
    await store.subscribe(USER, "Old", True)
    old = store.get_mailbox(USER, "Old")
    await store.append(USER, "Old", b"Subject: a\r\n\r\n12345\r\n")
    assert store.used_bytes(USER) == 21
    await store.delete_mailbox(USER, "Old")
    assert store.used_bytes(USER) == 0
    assert "Old" not in names(store) and "Old/Child" in names(store)
    assert "Old" in store.list_subscriptions(USER)  # RFC 9051 §6.3.9
    assert store.list_messages(USER, old.mailbox_id) == []
    with pytest.raises(NotFound):
        store.get_mailbox_by_id(USER, old.mailbox_id)
    await expect(store.delete_mailbox(USER, "Old"), NotFound)
    await expect(store.delete_mailbox(USER, "inbox"), NotPermitted)
    recreated = await store.create_mailbox(USER, "Old")
    assert recreated.uidvalidity != old.uidvalidity and recreated.mailbox_id != old.mailbox_id


@pytest_twisted.ensureDeferred
async def test_rename_moves_children_keeps_identity_and_subscriptions(store):
    await store.create_mailbox(USER, "A/B/C")
    await store.subscribe(USER, "A/B", True)
    before = {m.name: m for m in store.list_mailboxes(USER)}
    await store.append(USER, "A/B", b"Subject: kept\r\n\r\nx\r\n")
    await store.rename_mailbox(USER, "A", "Z/Y")
    after = {m.name: m for m in store.list_mailboxes(USER)}
    assert "A" not in after and "A/B" not in after and "A/B/C" not in after
    assert {"Z", "Z/Y", "Z/Y/B", "Z/Y/B/C"} <= set(after)
    for old, new in (("A", "Z/Y"), ("A/B", "Z/Y/B"), ("A/B/C", "Z/Y/B/C")):
        assert after[new].mailbox_id == before[old].mailbox_id
        assert after[new].uidvalidity == before[old].uidvalidity
    assert after["Z/Y/B"].messages == 1 and after["Z/Y/B"].subscribed
    assert "A/B" not in store.list_subscriptions(USER)
    rename_changes = [c.data for c in store.read_changes(0, 0) if c.kind == "mailbox-rename"]
    assert {"old": "A/B/C", "new": "Z/Y/B/C"} in rename_changes


@pytest_twisted.ensureDeferred
async def test_rename_refusals(store):
    await store.create_mailbox(USER, "A")
    await store.create_mailbox(USER, "B")
    await expect(store.rename_mailbox(USER, "A", "B"), AlreadyExists)
    await expect(store.rename_mailbox(USER, "A", "A"), NotPermitted)
    await expect(store.rename_mailbox(USER, "A", "A/inside"), NotPermitted)
    await expect(store.rename_mailbox(USER, "Missing", "C"), NotFound)
    await store.create_mailbox(USER, "Long/" + "x" * 30)
    await expect(store.rename_mailbox(USER, "Long", "Longer" * 2), InvalidName)  # child > 40 octets
    assert "Long/" + "x" * 30 in names(store)


@pytest_twisted.ensureDeferred
async def test_rename_inbox_moves_its_messages_and_leaves_it_empty(store):
    await store.create_mailbox(USER, "INBOX/Child")
    inbox = store.get_mailbox(USER, "INBOX")
    for n in range(3):
        await store.append(USER, "INBOX", f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), ["\\Seen"] if n else [])
    used = store.used_bytes(USER)
    await store.rename_mailbox(USER, "inbox", "Old Mail")
    assert store.used_bytes(USER) == used
    moved = store.get_mailbox(USER, "Old Mail")
    emptied = store.get_mailbox(USER, "INBOX")
    assert emptied.mailbox_id == inbox.mailbox_id and emptied.uidvalidity == inbox.uidvalidity
    assert (emptied.messages, emptied.unseen, emptied.size) == (0, 0, 0)
    assert emptied.uidnext == 4  # never reused
    assert (moved.messages, moved.unseen) == (3, 1)
    assert [m.uid for m in store.list_messages(USER, moved.mailbox_id)] == [1, 2, 3]
    assert store.changes_since(USER, inbox.mailbox_id, inbox.highestmodseq).vanished == (1, 2, 3)
    assert "INBOX/Child" in names(store)  # RFC 9051 §6.3.6: inferiors of INBOX unaffected


@pytest_twisted.ensureDeferred
async def test_subscribe_and_unsubscribe(store):
    await store.create_mailbox(USER, "Lists")
    assert not store.get_mailbox(USER, "Lists").subscribed
    await store.subscribe(USER, "Lists", True)
    assert store.get_mailbox(USER, "Lists").subscribed
    await store.subscribe(USER, "Lists", False)
    assert not store.get_mailbox(USER, "Lists").subscribed
    await expect(store.subscribe(USER, "Nope", True), NotFound)
    await store.subscribe(USER, "Nope", False)  # harmless
    kinds = [c.data for c in store.read_changes(0, 0) if c.kind == "subscribe"]
    assert kinds == [{"name": "Lists", "subscribed": True}, {"name": "Lists", "subscribed": False}]
