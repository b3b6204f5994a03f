"""The directory in the meta environment: domains, users, aliases, shard load.

Reads take a read transaction; mutations are operations for the meta
:class:`~mailserverd.store.writer.EnvWriter` (functions of a ``WriteTxn``).
Keys are canonical addresses (:func:`mailserverd.mail.address.canonical`),
``@domain`` for a catch-all alias, and lower-case A-label domain names.
``members`` indexes (domain, address) -> ``u`` (user) or ``a`` (alias) so that
a domain's users and aliases are one range scan.
"""

from __future__ import annotations

import functools

import dataclasses

from mailserverd.mail.address import AddressError, canonical, canonical_domain
from mailserverd.store import keys, records
from mailserverd.store.errors import AlreadyExists, InvalidName, NotFound, NotPermitted
from mailserverd.store.types import Alias, Domain, User

#: How deep aliases may point at aliases before resolve() stops following.
ALIAS_DEPTH_MAX = 10
#: Longest directory key in UTF-8 octets (well under LMDB's 511-octet keys).
ADDRESS_KEY_MAX = 400

NEXT_USER_ID_KEY = b"next_user_id"
MEMBER_USER = b"u"
MEMBER_ALIAS = b"a"


# ---------------------------------------------------------------- key forms


def domain_key(name: str) -> str:
    """The stored form of a domain name. Raises InvalidName."""
    name = name.strip().rstrip(".")
    try:
        key = canonical_domain(name) if name else ""
    except AddressError as exc:
        raise InvalidName(f"invalid domain {name!r}: {exc.reason}") from None
    if not key or "@" in key or len(key.encode("utf-8")) > ADDRESS_KEY_MAX:
        raise InvalidName(f"invalid domain {name!r}")
    return key


@functools.lru_cache(maxsize=4096)
def address_key(address: str) -> str:
    """The stored form of an address, or of ``@domain`` (a catch-all). Raises InvalidName.

    A pure function of its argument, so its results are cached: every
    delivery and login looks an address up, and canonicalising is parsing.
    """
    address = address.strip()
    if address.startswith("@"):
        return "@" + domain_key(address[1:])
    try:
        key = canonical(address)
    except AddressError as exc:
        raise InvalidName(f"invalid address {address!r}: {exc.reason}") from None
    if not key or len(key.encode("utf-8")) > ADDRESS_KEY_MAX:
        raise InvalidName(f"invalid address {address!r}")
    return key


def _lookup_key(address: str) -> str | None:
    """:func:`address_key`, or None when the address cannot be stored at all."""
    try:
        return address_key(address)
    except InvalidName:
        return None


def domain_of(key: str) -> str:
    """The domain part of an address key (or of ``@domain``)."""
    return key.rpartition("@")[2]


def shard_users_key(shard: int) -> bytes:
    """``info`` key counting the users of a shard (for least-loaded placement)."""
    return b"users:%04d" % shard


# ---------------------------------------------------------------- reads


def get_domain(txn, dbs, name: str) -> Domain | None:
    try:
        key = domain_key(name)
    except InvalidName:
        return None
    data = txn.get(keys.text_key(key), db=dbs["domains"])
    return None if data is None else records.decode_domain(data)


def list_domains(txn, dbs) -> list[Domain]:
    cursor = txn.cursor(db=dbs["domains"])
    return [records.decode_domain(value) for _, value in cursor]


def get_user(txn, dbs, address: str) -> User | None:
    key = _lookup_key(address)
    if key is None or key.startswith("@"):
        return None
    data = txn.get(keys.text_key(key), db=dbs["users"])
    return None if data is None else records.decode_user(data)


def get_alias(txn, dbs, address: str) -> Alias | None:
    key = _lookup_key(address)
    if key is None:
        return None
    data = txn.get(keys.text_key(key), db=dbs["aliases"])
    return None if data is None else records.decode_alias(data)


def _members(txn, dbs, domain: str | None, kind: bytes) -> list[str]:
    """Addresses of ``kind`` in ``domain`` (all domains if None), in key order."""
    cursor = txn.cursor(db=dbs["members"])
    prefix = b"" if domain is None else keys.member_prefix(domain)
    found = []
    if not cursor.set_range(prefix):
        return found
    for key, value in cursor:
        if not key.startswith(prefix):
            break
        if value == kind:
            found.append(key.partition(b"\x00")[2].decode("utf-8"))
    return found


def list_users(txn, dbs, domain: str | None) -> list[User]:
    if domain is not None:
        domain = _domain_or_none(domain)
        if domain is None:
            return []
    users = []
    for address in _members(txn, dbs, domain, MEMBER_USER):
        data = txn.get(keys.text_key(address), db=dbs["users"])
        if data is not None:
            users.append(records.decode_user(data))
    return users


def list_aliases(txn, dbs, domain: str | None) -> list[Alias]:
    if domain is not None:
        domain = _domain_or_none(domain)
        if domain is None:
            return []
    aliases = []
    for address in _members(txn, dbs, domain, MEMBER_ALIAS):
        data = txn.get(keys.text_key(address), db=dbs["aliases"])
        if data is not None:
            aliases.append(records.decode_alias(data))
    return aliases


def _domain_or_none(name: str) -> str | None:
    try:
        return domain_key(name)
    except InvalidName:
        return None


def shard_user_counts(txn, dbs, shards: int) -> list[int]:
    """Users placed on each shard."""
    counts = []
    for shard in range(shards):
        data = txn.get(shard_users_key(shard), db=dbs["info"])
        counts.append(0 if data is None else keys.read_u64(data))
    return counts


def resolve(txn, dbs, address: str, delimiter: str = "") -> list[str]:
    """Local users reached by ``address`` (see Directory.resolve), in order, deduplicated."""
    found: list[str] = []
    seen: set[str] = set()

    def walk(key: str, depth: int) -> None:
        if key in seen or depth > ALIAS_DEPTH_MAX:
            return  # a loop, or too deep: cut here
        seen.add(key)
        text = keys.text_key(key)
        if txn.get(text, db=dbs["users"]) is not None:
            found.append(key)
            return
        data = txn.get(text, db=dbs["aliases"])
        if data is None and depth == 0 and delimiter:
            base = _without_detail(key, delimiter)
            if base is not None and (txn.get(keys.text_key(base), db=dbs["users"]) is not None
                                     or txn.get(keys.text_key(base), db=dbs["aliases"]) is not None):
                walk(base, 0)  # user+detail before the catch-all, as Postfix does
                return
        if data is None and not key.startswith("@"):
            domain = domain_of(key)
            if txn.get(keys.text_key(domain), db=dbs["domains"]) is None:
                return  # not local: forwarding is the outbound queue's job
            catch_all = "@" + domain
            if catch_all in seen:
                return
            seen.add(catch_all)
            data = txn.get(keys.text_key(catch_all), db=dbs["aliases"])
        if data is None:
            return
        for target in records.decode_alias(data).targets:
            target_key = _lookup_key(target)
            if target_key is not None and not target_key.startswith("@"):
                walk(target_key, depth + 1)

    start = _lookup_key(address)
    if start is not None and not start.startswith("@"):
        walk(start, 0)
    return found


def _without_detail(key: str, delimiter: str) -> str | None:
    """``user@domain`` for ``user+detail@domain`` (sub-addressing, RFC 5233 §1), or None."""
    local, _, domain = key.rpartition("@")
    base, found, _ = local.partition(delimiter)
    return f"{base}@{domain}" if found and base else None


# ---------------------------------------------------------------- mutations
# Each takes the writer's WriteTxn ``w`` and runs on the meta writer thread.


def add_domain(w, name: str, now: int) -> Domain:
    key = domain_key(name)
    text = keys.text_key(key)
    if w.txn.get(text, db=w.dbs["domains"]) is not None:
        raise AlreadyExists(f"domain {key} already exists")
    domain = Domain(name=key)
    w.txn.put(text, records.encode_domain(domain, now), db=w.dbs["domains"])
    return domain


def remove_domain(w, name: str) -> None:
    key = domain_key(name)
    text = keys.text_key(key)
    if w.txn.get(text, db=w.dbs["domains"]) is None:
        raise NotFound(f"no domain {key}")
    cursor = w.txn.cursor(db=w.dbs["members"])
    prefix = keys.member_prefix(key)
    if cursor.set_range(prefix) and cursor.key().startswith(prefix):
        raise NotPermitted(f"domain {key} still has users or aliases")
    w.txn.delete(text, db=w.dbs["domains"])


def _check_new_address(w, key: str) -> None:
    """NotFound if the domain is not local; AlreadyExists if a user or alias has the key."""
    domain = domain_of(key)
    if w.txn.get(keys.text_key(domain), db=w.dbs["domains"]) is None:
        raise NotFound(f"domain {domain} is not a local domain")
    text = keys.text_key(key)
    if w.txn.get(text, db=w.dbs["users"]) is not None:
        raise AlreadyExists(f"{key} is already a user")
    if w.txn.get(text, db=w.dbs["aliases"]) is not None:
        raise AlreadyExists(f"{key} is already an alias")


def reserve_user(w, address: str, shards: int) -> tuple[str, int, int]:
    """First step of add_user: check the address, allocate a user id, pick a shard.

    Returns ``(key, user_id, shard)``. Nothing becomes visible: the id counter
    only grows (an id left unused by a crash is harmless).
    """
    key = address_key(address)
    if key.startswith("@"):
        raise InvalidName("a user address needs a local part")
    _check_new_address(w, key)
    info = w.dbs["info"]
    data = w.txn.get(NEXT_USER_ID_KEY, db=info)
    user_id = 1 if data is None else keys.read_u64(data)
    w.txn.put(NEXT_USER_ID_KEY, keys.u64(user_id + 1), db=info)
    counts = shard_user_counts(w.txn, w.dbs, shards)
    shard = counts.index(min(counts))
    return key, user_id, shard


def finish_user(w, user: User) -> User:
    """Last step of add_user: make the user visible (after its shard side exists)."""
    _check_new_address(w, user.address)
    w.txn.put(keys.text_key(user.address), records.encode_user(user), db=w.dbs["users"])
    w.txn.put(keys.member_key(domain_of(user.address), user.address), MEMBER_USER,
              db=w.dbs["members"])
    _add_shard_users(w, user.shard, +1)
    return user


def _add_shard_users(w, shard: int, delta: int) -> None:
    counter = shard_users_key(shard)
    data = w.txn.get(counter, db=w.dbs["info"])
    count = 0 if data is None else keys.read_u64(data)
    w.txn.put(counter, keys.u64(max(0, count + delta)), db=w.dbs["info"])


def _existing_user(w, address: str) -> User:
    key = _lookup_key(address)
    data = None if key is None else w.txn.get(keys.text_key(key), db=w.dbs["users"])
    if data is None:
        raise NotFound("no such user")
    return records.decode_user(data)


def replace_user(w, address: str, **changes) -> User:
    """Rewrite a user's record with ``changes`` (credentials, quota). Raises NotFound."""
    user = dataclasses.replace(_existing_user(w, address), **changes)
    w.txn.put(keys.text_key(user.address), records.encode_user(user), db=w.dbs["users"])
    return user


def remove_user(w, address: str) -> User:
    """Remove the user's directory entry (first step of remove_user); returns it."""
    user = _existing_user(w, address)
    w.txn.delete(keys.text_key(user.address), db=w.dbs["users"])
    w.txn.delete(keys.member_key(domain_of(user.address), user.address), db=w.dbs["members"])
    _add_shard_users(w, user.shard, -1)
    return user


def add_alias(w, address: str, targets: tuple[str, ...]) -> Alias:
    key = address_key(address)
    _check_new_address(w, key)
    target_keys: list[str] = []
    for target in targets:
        target_key = address_key(target)
        if target_key.startswith("@"):
            raise InvalidName(f"alias target {target!r} is not an address")
        if target_key not in target_keys:
            target_keys.append(target_key)
    if not target_keys:
        raise InvalidName("an alias needs at least one target")
    alias = Alias(address=key, targets=tuple(target_keys))
    w.txn.put(keys.text_key(key), records.encode_alias(alias), db=w.dbs["aliases"])
    w.txn.put(keys.member_key(domain_of(key), key), MEMBER_ALIAS, db=w.dbs["members"])
    return alias


def remove_alias(w, address: str) -> None:
    key = _lookup_key(address)
    text = None if key is None else keys.text_key(key)
    if text is None or w.txn.get(text, db=w.dbs["aliases"]) is None:
        raise NotFound("no such alias")
    w.txn.delete(text, db=w.dbs["aliases"])
    w.txn.delete(keys.member_key(domain_of(key), key), db=w.dbs["members"])
