"""Opening one LMDB environment: directories, settings, sub-databases, schema.

Each environment (``meta/`` and each ``shards/NN/``) keeps in its ``info``
sub-database a ``schema`` version and identity entries (the shard count in
meta, the shard number in a shard) that are written when the environment is
created and checked at every later open, so that a store written by a newer
version, or a shard directory put in the wrong place, is refused with a clear
error instead of being misread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import lmdb

from mailserverd.store import keys
from mailserverd.store.errors import SchemaMismatch, StoreError

#: Version of the layout of meta and shard environments this code reads and writes.
SCHEMA_VERSION = 1

META_DBS = ("info", "domains", "users", "aliases", "members")
SHARD_DBS = (
    "info", "accounts", "mbnames", "mailboxes", "subscriptions", "messages",
    "modseqs", "vanished", "changes", "blobs", "blobrefs",
)

#: ``info`` keys.
SCHEMA_KEY = b"schema"
SHARDS_KEY = b"shards"  # meta: the shard count fixed at creation
SHARD_KEY = b"shard"  # shard: its own number


@dataclass
class StoreEnv:
    """An open LMDB environment and its named sub-databases."""

    path: str
    env: lmdb.Environment
    dbs: dict = field(default_factory=dict)

    def close(self) -> None:
        """Close the environment; any later use raises lmdb.Error."""
        self.env.close()


def make_dir(path: str) -> None:
    """Create ``path`` (and parents) with mode 0700 if missing.

    Raises StoreError naming the path if it cannot be created or written.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store directory {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"store directory {path} is not writable")


def open_env(path: str, map_size: int, db_names: tuple[str, ...],
             identity: dict[bytes, int], what: str) -> StoreEnv:
    """Open (creating if missing) the environment at ``path`` and check its schema.

    ``identity`` holds ``info`` entries written at creation and compared at each
    later open (e.g. ``{b"shards": 4}``); ``what`` names the environment in errors.
    Durability: sync and metasync on, so a commit returns only after fsync.
    Raises StoreError (unusable dir) or SchemaMismatch (newer schema, wrong identity).
    """
    make_dir(path)
    try:
        env = lmdb.open(
            path, map_size=map_size, subdir=True, max_dbs=len(db_names) + 2,
            sync=True, metasync=True, lock=True, writemap=False, mode=0o600,
        )
    except (lmdb.Error, OSError) as exc:
        raise StoreError(f"cannot open {what} store at {path}: {exc}") from None
    try:
        dbs = {name: env.open_db(name.encode("ascii"), create=True) for name in db_names}
        _check_schema(env, dbs["info"], path, identity, what)
    except BaseException:
        env.close()
        raise
    return StoreEnv(path=path, env=env, dbs=dbs)


def _check_schema(env, info_db, path: str, identity: dict[bytes, int], what: str) -> None:
    """Write schema + identity into a new environment; compare them in an old one."""
    with env.begin(write=True, db=info_db) as txn:
        stored = txn.get(SCHEMA_KEY)
        if stored is None:
            txn.put(SCHEMA_KEY, keys.u64(SCHEMA_VERSION))
            for key, value in identity.items():
                txn.put(key, keys.u64(value))
            return
        version = keys.read_u64(stored)
        if version != SCHEMA_VERSION:
            newer = "a newer" if version > SCHEMA_VERSION else "an older, unsupported"
            raise SchemaMismatch(
                f"{what} store at {path} has schema version {version}, written by "
                f"{newer} version of mailserverd; this version reads schema {SCHEMA_VERSION}"
            )
        for key, expected in identity.items():
            found = txn.get(key)
            found_value = None if found is None else keys.read_u64(found)
            if found_value != expected:
                raise SchemaMismatch(
                    f"{what} store at {path} was created with {key.decode()}={found_value}, "
                    f"but it is being opened with {key.decode()}={expected}"
                )
