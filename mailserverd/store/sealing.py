"""Encryption at rest: the master key, each user's data key, sealed values.

Envelope encryption. Each user has a random 256-bit data key, kept in the
user's shard (sub-database ``datakeys``) wrapped by the master key with
AES-256-GCM (the user id as associated data, so a wrapped key cannot be moved
to another user). From a data key, HKDF-SHA256 (RFC 5869) derives two keys:
one seals values (AES-256-GCM, a random 96-bit nonce per value, the value's
identity as associated data, so a sealed value cannot be swapped for
another), the other names blobs (HMAC-SHA256 of the content's hash): one
user's copies of a message share a blob, and the names tell nothing about
the content to someone without the key.

The master key is read from a file that only its owner may read (mode 0400
or 0600), or from a systemd credential (``LoadCredential=``); either holds
32 random bytes, raw or base64 (``openssl rand -base64 32``). Each shard
keeps a check value of the master key it was sealed with, so a wrong key is
refused at start with a clear error rather than found out message by
message. Rotating the master key rewraps the data keys only (no message is
re-encrypted); destroying a user's data key makes what was sealed with it
unreadable (crypto-erase).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailserverd.store import keys
from mailserverd.store.errors import Damaged, MasterKeyError

KEY_BYTES = 32
NONCE_BYTES = 12
#: ``datakeys`` key of the master key's check value (user ids are 8-byte keys).
CHECK_KEY = b"master-check"
_CHECK_TEXT = b"mailserverd master key check v1"
_WRAP_CONTEXT = b"mailserverd data key v1:"
_DERIVE_INFO = b"mailserverd user keys v1"


def _decode_key_text(data: bytes, where: str) -> bytes:
    """32 raw bytes, or base64 text of them (surrounding whitespace ignored)."""
    if len(data) == KEY_BYTES:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{where}: a master key is {KEY_BYTES} random bytes, raw or base64 "
                             "(make one with: openssl rand -base64 32)")
    return key


def read_master_key_file(path: str) -> bytes:
    """The master key in ``path``. Raises MasterKeyError when the file is
    missing or unreadable, may be read or written by group or others (as
    ssh refuses a loose private key), or does not hold a key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise MasterKeyError(f"master key file {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise MasterKeyError(f"master key file {path}: not a regular file")
        if mode & 0o077:
            raise MasterKeyError(f"master key file {path}: mode {stat.S_IMODE(mode):04o} lets others "
                                 "read it; it must be readable by its owner only (chmod 0400)")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    return _decode_key_text(data, f"master key file {path}")


def read_master_key_credential(name: str, environ=os.environ) -> bytes:
    """The master key from systemd credential ``name`` (``LoadCredential=``,
    under ``$CREDENTIALS_DIRECTORY``, which systemd protects itself)."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise MasterKeyError(f"master key credential {name!r}: no $CREDENTIALS_DIRECTORY "
                             "(is LoadCredential= set in the unit?)")
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as credential:
            data = credential.read(4096)
    except OSError as exc:
        raise MasterKeyError(f"master key credential {name!r}: {exc.strerror}") from None
    return _decode_key_text(data, f"master key credential {name!r}")


def load_keyring(master_key_file: str = "", master_key_credential: str = "") -> "Keyring | None":
    """The keyring of the master key named by one of the two (``[encryption]``),
    or None when neither is set (no encryption at rest). Raises MasterKeyError."""
    if master_key_file:
        return Keyring(MasterKey(read_master_key_file(master_key_file)))
    if master_key_credential:
        return Keyring(MasterKey(read_master_key_credential(master_key_credential)))
    return None


def new_master_key() -> bytes:
    """A fresh random master key."""
    return os.urandom(KEY_BYTES)


class MasterKey:
    """Wraps and unwraps data keys; says whether a check value is its own."""

    def __init__(self, secret: bytes):
        if len(secret) != KEY_BYTES:
            raise MasterKeyError(f"a master key is {KEY_BYTES} bytes")
        self._aead = AESGCM(secret)
        self.check_value = hmac.new(secret, _CHECK_TEXT, hashlib.sha256).digest()[:16]

    def matches(self, check_value: bytes | None) -> bool:
        """Whether ``check_value`` (a shard's, or None) is this key's."""
        return check_value is not None and hmac.compare_digest(bytes(check_value), self.check_value)

    def wrap(self, data_key: bytes, user_id: int) -> bytes:
        """``data_key`` sealed for ``user_id``: nonce + ciphertext + tag."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, _WRAP_CONTEXT + keys.u64(user_id))

    def unwrap(self, wrapped: bytes, user_id: int) -> bytes:
        """The data key of ``user_id``. Raises MasterKeyError if this is not the
        key it was wrapped with (or the wrapped key is damaged)."""
        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                      _WRAP_CONTEXT + keys.u64(user_id))
        except InvalidTag:
            raise MasterKeyError(f"the data key of user {user_id} does not open with this master key "
                                 "(wrong master key, or the key record is damaged)") from None


@dataclass(frozen=True)
class UserKeys:
    """What one user's data key gives: sealing and naming."""

    seal_key: AESGCM
    name_key: bytes

    @classmethod
    def derive(cls, data_key: bytes) -> "UserKeys":
        derived = HKDF(hashes.SHA256(), 2 * KEY_BYTES, salt=None, info=_DERIVE_INFO).derive(data_key)
        return cls(AESGCM(derived[:KEY_BYTES]), derived[KEY_BYTES:])

    def name(self, content_id: bytes) -> bytes:
        """The keyed name of a content hash (32 bytes)."""
        return hmac.new(self.name_key, content_id, hashlib.sha256).digest()

    def term(self, data: bytes, size: int = 16) -> bytes:
        """The keyed name (``size`` bytes) of a search index term or gram: a key
        the index can look up that tells nothing of ``data`` without the key."""
        return hmac.new(self.name_key, b"term:" + data, hashlib.sha256).digest()[:size]

    def seal(self, plain: bytes, identity: bytes) -> bytes:
        """``plain`` encrypted and authenticated, bound to ``identity``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.seal_key.encrypt(nonce, plain, identity)

    def unseal(self, sealed: bytes, identity: bytes) -> bytes:
        """What :meth:`seal` was given. Raises Damaged when the value or its
        identity is not what was sealed."""
        try:  # (``sealed`` may be a memoryview: its parts are not copied)
            return self.seal_key.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], identity)
        except InvalidTag:
            raise Damaged("stored data is damaged: it fails its authentication") from None


class Keyring:
    """The master key and the data keys unwrapped so far (thread-safe: the
    cache is a dict filled with values that never change).

    Data keys live in each shard's ``datakeys`` sub-database, keyed by the
    user id; the shard's check value of the master key under
    :data:`CHECK_KEY`.
    """

    def __init__(self, master: MasterKey, rotating_to: MasterKey | None = None):
        self.master = master
        #: While rotating (``mailserverd keys rotate``), the new master key: a
        #: shard already rewrapped under it is accepted (a rotation cut short
        #: is run again) and left as it is.
        self._rotating_to = rotating_to
        self._unwrapped: dict[bytes, UserKeys] = {}  # wrapped value -> keys

    def check(self, txn, dbs, where: str) -> None:
        """Record this master key in a shard sealed for the first time; raise
        MasterKeyError if the shard was sealed under another."""
        found = txn.get(CHECK_KEY, db=dbs["datakeys"])
        if found is None:
            txn.put(CHECK_KEY, self.master.check_value, db=dbs["datakeys"])
        else:
            self.verify(bytes(found), where)

    def verify(self, found: bytes, where: str) -> None:
        """Raise MasterKeyError unless ``found``, the check value ``where`` keeps,
        is this master key's (or, rotating, the new one's)."""
        if not self._is_own(found) and not self._is_rotated(found):
            raise MasterKeyError(f"{where} was sealed with another master key: "
                                 "start with the key it was sealed with")

    def _is_own(self, check_value: bytes | None) -> bool:
        return self.master.matches(check_value)

    def _is_rotated(self, check_value: bytes) -> bool:
        return self._rotating_to is not None and self._rotating_to.matches(check_value)

    def user_keys(self, txn, dbs, user_id: int) -> UserKeys | None:
        """The keys of ``user_id``, or None if the user has none (nothing sealed)."""
        wrapped = txn.get(keys.u64(user_id), db=dbs["datakeys"])
        if wrapped is None:
            return None
        wrapped = bytes(wrapped)
        found = self._unwrapped.get(wrapped)
        if found is None:
            found = self._unwrapped[wrapped] = UserKeys.derive(self.master.unwrap(wrapped, user_id))
        return found

    def user_keys_for_writing(self, txn, dbs, user_id: int) -> UserKeys:
        """The keys of ``user_id``, made (and stored in ``txn``) if it has none.
        Read from ``txn`` each time, so a key made in a transaction that is
        rolled back is never used again."""
        found = self.user_keys(txn, dbs, user_id)
        if found is not None:
            return found
        if not self._is_own(txn.get(CHECK_KEY, db=dbs["datakeys"])):
            # The shard's keys were rewrapped under a new master key since this
            # process started: a key wrapped under the old one would be lost.
            raise MasterKeyError("the master key was rotated: restart with the new one")
        data_key = os.urandom(KEY_BYTES)
        wrapped = self.master.wrap(data_key, user_id)
        txn.put(keys.u64(user_id), wrapped, db=dbs["datakeys"])
        found = self._unwrapped[wrapped] = UserKeys.derive(data_key)
        return found

    def erase(self, txn, dbs, user_id: int) -> None:
        """Destroy the data key of ``user_id``: what it sealed is unreadable."""
        wrapped = txn.pop(keys.u64(user_id), db=dbs["datakeys"])
        if wrapped is not None:
            self._unwrapped.pop(bytes(wrapped), None)

    def rewrap(self, txn, dbs, new: MasterKey) -> int:
        """Rewrap every data key of a shard under ``new`` (its check value too);
        return how many (0 for a shard rewrapped already). Raises
        MasterKeyError if one does not open."""
        if new.matches(txn.get(CHECK_KEY, db=dbs["datakeys"])):
            return 0
        count = 0
        with txn.cursor(db=dbs["datakeys"]) as cursor:
            entries = [(bytes(key), bytes(value)) for key, value in cursor if key != CHECK_KEY]
        for key, wrapped in entries:
            user_id = keys.read_u64(key)
            txn.put(key, new.wrap(self.master.unwrap(wrapped, user_id), user_id), db=dbs["datakeys"])
            count += 1
        txn.put(CHECK_KEY, new.check_value, db=dbs["datakeys"])
        return count


def no_master_key(where: str) -> MasterKeyError:
    """The error for sealed data met without a master key."""
    return MasterKeyError(f"{where} is encrypted at rest: configure its master key "
                          "([encryption] master_key_file or master_key_credential)")


def check_sealing(store_env, keyring: Keyring | None, where: str) -> None:
    """Give the open shard ``store_env`` the ``keyring`` (None: no encryption)
    after checking it is the shard's own. Raises MasterKeyError for a shard
    sealed under another master key, or sealed and opened without one."""
    with store_env.env.begin() as txn:  # a write transaction only to record a first check value
        found = txn.get(CHECK_KEY, db=store_env.dbs["datakeys"])
    if keyring is None:
        if found is not None:
            raise no_master_key(where)
    elif found is None:
        with store_env.env.begin(write=True) as txn:
            keyring.check(txn, store_env.dbs, where)
    else:
        keyring.verify(bytes(found), where)
    store_env.keyring = keyring
