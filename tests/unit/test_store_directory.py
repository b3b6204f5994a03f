"""Directory of the LMDB store: domains, users, aliases, resolve (real LMDB in tmp_path)."""

from __future__ import annotations

import pytest
import pytest_twisted

from mailserverd.limits import MIB, Limits
from mailserverd.store.errors import AlreadyExists, Expunged, InvalidName, NotFound, NotPermitted
from mailserverd.store.lmdbstore import LMDBStore
from mailserverd.store.types import DEFAULT_MAILBOXES, Credentials, ScramSecrets

LIMITS = Limits(store_map_size=32 * MIB)
CREDS = Credentials(bcrypt_hash=b"$2b$04$hash", scram_sha256=ScramSecrets(b"salt", 4096, b"K" * 32, b"S" * 32))


@pytest.fixture
def store(tmp_path):
    opened = LMDBStore.open(str(tmp_path / "data"), 2, LIMITS)
    opened.start()
    yield opened
    pytest_twisted.blockon(opened.stop())


async def expect(deferred, error_type):
    with pytest.raises(error_type):
        await deferred


@pytest_twisted.ensureDeferred
async def test_domains_are_added_listed_and_removed_case_insensitively(store):
    domain = await store.add_domain("Example.COM")
    assert domain.name == "example.com"
    assert store.get_domain("EXAMPLE.com").name == "example.com"
    await store.add_domain("other.org")
    assert [d.name for d in store.list_domains()] == ["example.com", "other.org"]
    await expect(store.add_domain("example.com"), AlreadyExists)
    await store.remove_domain("other.org")
    assert store.get_domain("other.org") is None
    await expect(store.remove_domain("other.org"), NotFound)
    await expect(store.add_domain("bad domain@x"), InvalidName)


@pytest_twisted.ensureDeferred
async def test_domain_in_use_cannot_be_removed(store):
    await store.add_domain("example.com")
    await store.add_alias("postmaster@example.com", ["root@elsewhere.net"])
    await expect(store.remove_domain("example.com"), NotPermitted)
    await store.remove_alias("postmaster@example.com")
    await store.add_user("a@example.com", CREDS)
    await expect(store.remove_domain("example.com"), NotPermitted)
    await store.remove_user("a@example.com")
    await store.remove_domain("example.com")
    assert store.list_domains() == []


@pytest_twisted.ensureDeferred
async def test_add_user_creates_account_with_default_mailboxes(store):
    await store.add_domain("example.com")
    user = await store.add_user("Alice@Example.com", CREDS, quota=5000)
    assert user.address == "alice@example.com"
    assert user.quota == 5000 and user.credentials == CREDS
    assert store.get_user("ALICE@example.COM") == user
    boxes = {m.name: m for m in store.list_mailboxes("alice@example.com")}
    assert {name: boxes[name].special_use for name, _ in DEFAULT_MAILBOXES} == dict(DEFAULT_MAILBOXES)
    uidvalidities = [m.uidvalidity for m in boxes.values()]
    assert len(set(uidvalidities)) == len(uidvalidities)
    assert all(m.uidnext == 1 and m.messages == 0 and m.highestmodseq > 0 for m in boxes.values())


@pytest_twisted.ensureDeferred
async def test_add_user_refuses_unknown_domain_and_existing_names(store):
    await expect(store.add_user("a@nowhere.example", CREDS), NotFound)
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    await expect(store.add_user("A@EXAMPLE.COM", CREDS), AlreadyExists)
    await store.add_alias("b@example.com", ["a@example.com"])
    await expect(store.add_user("b@example.com", CREDS), AlreadyExists)
    await expect(store.add_alias("a@example.com", ["x@example.com"]), AlreadyExists)
    await expect(store.add_user("not-an-address", CREDS), InvalidName)
    assert [u.address for u in store.list_users()] == ["a@example.com"]


@pytest_twisted.ensureDeferred
async def test_concurrent_add_of_one_address_makes_one_user_and_no_orphan(store):
    await store.add_domain("example.com")
    first = store.add_user("same@example.com", CREDS)
    second = store.add_user("same@example.com", CREDS)
    outcomes = []
    for deferred in (first, second):
        try:
            outcomes.append(await deferred)
        except AlreadyExists as exc:
            outcomes.append(exc)
    assert sum(isinstance(o, AlreadyExists) for o in outcomes) == 1
    winner = store.get_user("same@example.com")
    loser_ids = {o.user_id for o in outcomes if not isinstance(o, AlreadyExists)}
    assert loser_ids == {winner.user_id}
    # the losing attempt's shard account was removed again
    kinds = [(c.kind, c.user_id) for shard in range(store.shards) for c in store.read_changes(shard, 0)
             if c.kind.startswith("account")]
    created = {uid for kind, uid in kinds if kind == "account-create"}
    deleted = {uid for kind, uid in kinds if kind == "account-delete"}
    assert created - deleted == {winner.user_id}


@pytest_twisted.ensureDeferred
async def test_new_users_go_to_the_least_loaded_shard(store):
    await store.add_domain("example.com")
    shards = [(await store.add_user(f"u{n}@example.com", CREDS)).shard for n in range(4)]
    assert shards == [0, 1, 0, 1]
    assert store.shard_user_counts() == [2, 2]
    await store.remove_user("u0@example.com")
    await store.remove_user("u2@example.com")
    assert store.shard_user_counts() == [0, 2]
    assert (await store.add_user("u4@example.com", CREDS)).shard == 0
    await store.remove_user("u1@example.com")
    assert store.shard_user_counts() == [1, 1]


@pytest_twisted.ensureDeferred
async def test_credentials_and_quota_can_be_changed(store):
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    other = Credentials(b"$2b$04$other", ScramSecrets(b"s2", 5000, b"k" * 32, b"v" * 32))
    await store.set_credentials("A@example.com", other)
    await store.set_quota("a@example.com", 1234)
    user = store.get_user("a@example.com")
    assert user.credentials == other and user.quota == 1234
    await expect(store.set_quota("nobody@example.com", 1), NotFound)


@pytest_twisted.ensureDeferred
async def test_remove_user_deletes_the_account_and_its_mail(store):
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    appended = await store.append("a@example.com", "INBOX", b"Subject: x\r\n\r\nonly copy\r\n")
    message = store.get_message("a@example.com", appended.mailbox_id, appended.uid)
    await store.remove_user("a@example.com")
    assert store.get_user("a@example.com") is None
    with pytest.raises(NotFound):
        store.list_mailboxes("a@example.com")
    await store.add_user("a@example.com", CREDS)  # a new account: new id, no old mail
    assert all(m.messages == 0 for m in store.list_mailboxes("a@example.com"))
    with pytest.raises(Expunged):
        store.read_message("a@example.com", message.blob_id)
    await expect(store.remove_user("nobody@example.com"), NotFound)


@pytest_twisted.ensureDeferred
async def test_aliases_are_listed_per_domain_and_removed(store):
    await store.add_domain("example.com")
    await store.add_domain("example.org")
    alias = await store.add_alias("Sales@Example.com", ["A@example.com", "a@example.com", "x@far.net"])
    assert alias.address == "sales@example.com"
    assert alias.targets == ("a@example.com", "x@far.net")
    await store.add_alias("@example.org", ["sales@example.com"])
    assert [a.address for a in store.list_aliases("example.com")] == ["sales@example.com"]
    assert [a.address for a in store.list_aliases()] == ["sales@example.com", "@example.org"]
    assert store.get_alias("SALES@example.com") == alias
    await expect(store.add_alias("x@unknown.net", ["a@example.com"]), NotFound)
    await expect(store.add_alias("y@example.com", []), InvalidName)
    await store.remove_alias("sales@example.com")
    assert store.get_alias("sales@example.com") is None
    await expect(store.remove_alias("sales@example.com"), NotFound)


@pytest_twisted.ensureDeferred
async def test_resolve_follows_aliases_in_order_without_duplicates(store):
    await store.add_domain("example.com")
    for name in ("a", "b", "c"):
        await store.add_user(f"{name}@example.com", CREDS)
    await store.add_alias("team@example.com", ["b@example.com", "sub@example.com", "ext@far.net"])
    await store.add_alias("sub@example.com", ["a@example.com", "b@example.com", "c@example.com"])
    assert store.resolve("A@EXAMPLE.COM") == ["a@example.com"]
    assert store.resolve("team@example.com") == ["b@example.com", "a@example.com", "c@example.com"]
    assert store.resolve("ext@far.net") == []
    assert store.resolve("nobody@example.com") == []
    assert store.resolve("garbage") == []


@pytest_twisted.ensureDeferred
async def test_resolve_cuts_loops_and_deep_chains(store):
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    await store.add_alias("loop1@example.com", ["loop2@example.com", "a@example.com"])
    await store.add_alias("loop2@example.com", ["loop1@example.com"])
    assert store.resolve("loop1@example.com") == ["a@example.com"]
    assert store.resolve("loop2@example.com") == ["a@example.com"]
    for n in range(15):
        await store.add_alias(f"chain{n}@example.com", [f"chain{n + 1}@example.com"])
    await store.add_alias("chain15@example.com", ["a@example.com"])
    assert store.resolve("chain12@example.com") == ["a@example.com"]
    assert store.resolve("chain0@example.com") == []  # deeper than the limit


@pytest_twisted.ensureDeferred
async def test_resolve_uses_the_catch_all_only_for_unknown_local_addresses(store):
    await store.add_domain("example.com")
    await store.add_user("a@example.com", CREDS)
    await store.add_user("box@example.com", CREDS)
    await store.add_alias("@example.com", ["box@example.com", "unknown@example.com"])
    assert store.resolve("whatever@example.com") == ["box@example.com"]
    assert store.resolve("a@example.com") == ["a@example.com"]
    assert store.resolve("x@other.example") == []
