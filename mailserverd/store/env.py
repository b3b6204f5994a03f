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
import threading
from dataclasses import dataclass, field

import lmdb
from twisted.logger import Logger

from mailserverd.store import keys
from mailserverd.store.errors import SchemaMismatch, StoreError
from mailserverd.store.migrations import SCHEMA_VERSION, STEPS, upgrade

log = Logger(namespace="mailserverd.store")

META_DBS = ("info", "domains", "users", "aliases", "members",
            "webtokens", "webmessages")  # the HTTP gateway's: store/webapi.py
SHARD_DBS = (
    "info", "accounts", "mbnames", "mailboxes", "subscriptions", "messages",
    "modseqs", "vanished", "changes", "blobs", "blobrefs",
    "searchmap", "searchdocs", "searchterms", "searchgrams",  # the search index: store/searchindex.py
    "spamtokens", "spamtrained",  # the spam classifier: store/spamtokens.py
    "datakeys",  # encryption at rest: store/sealing.py
)

#: ``info`` keys.
SCHEMA_KEY = b"schema"
SHARDS_KEY = b"shards"  # meta: the shard count fixed at creation
SHARD_KEY = b"shard"  # shard: its own number


@dataclass(frozen=True)
class EnvUsage:
    """How full one environment is: ``used_bytes`` (pages up to the highest
    written), ``map_size`` (the most it may grow to), ``readers`` (reader
    slots taken in its lock table)."""

    used_bytes: int
    map_size: int
    readers: int


@dataclass
class StoreEnv:
    """An open LMDB environment and its named sub-databases."""

    path: str
    env: lmdb.Environment
    dbs: dict = field(default_factory=dict)
    #: The store's :class:`~mailserverd.store.sealing.Keyring` when it
    #: encrypts at rest, else None.
    keyring: object = None
    # close() and usage() may run on different threads (a metrics scrape).
    _close_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = False

    def close(self) -> None:
        """Close the environment; any later use raises lmdb.Error."""
        with self._close_lock:
            self._closed = True
            self.env.close()

    def usage(self) -> EnvUsage | None:
        """The environment's :class:`EnvUsage` (no transaction, no file I/O), or
        None once it is closed. Safe on any thread, also while another closes it."""
        with self._close_lock:
            if self._closed:
                return None
            try:
                info, stat = self.env.info(), self.env.stat()
            except lmdb.Error:
                return None
        return EnvUsage(used_bytes=(info["last_pgno"] + 1) * stat["psize"],
                        map_size=info["map_size"], readers=info["num_readers"])


def make_dir(path: str) -> None:
    """Create ``path`` and its missing parents, each with mode 0700.

    (``os.makedirs`` gives only the last one its mode: a new ``shards/`` would
    be 0755.) Raises StoreError naming the path if it cannot be created or written.
    """
    missing = []
    head = os.path.abspath(path)
    while not os.path.isdir(head) and head != os.path.dirname(head):
        missing.append(head)
        head = os.path.dirname(head)
    try:
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise
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
        _check_schema(env, dbs, path, identity, what)
    except BaseException:
        env.close()
        raise
    return StoreEnv(path=path, env=env, dbs=dbs)


def _check_schema(env, dbs: dict, path: str, identity: dict[bytes, int], what: str) -> None:
    """Write schema + identity into a new environment; compare them in an old
    one, upgrading an older schema in the same transaction (migrations.py)."""
    info_db = dbs["info"]
    with env.begin(write=True, db=info_db) as txn:
        stored = txn.get(SCHEMA_KEY)
        if stored is None:
            txn.put(SCHEMA_KEY, keys.u64(SCHEMA_VERSION))
            for key, value in identity.items():
                txn.put(key, keys.u64(value))
            return
        version = keys.read_u64(stored)
        if version != SCHEMA_VERSION and (version > SCHEMA_VERSION or version not in STEPS):
            newer = "a newer" if version > SCHEMA_VERSION else "an older, unsupported"
            raise SchemaMismatch(
                f"{what} store at {path} has schema version {version}, written by "
                f"{newer} version of mailserverd; this version reads schema {SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            upgrade(txn, dbs, version, what)
            txn.put(SCHEMA_KEY, keys.u64(SCHEMA_VERSION))
            log.info("store-upgraded store={what} path={path} schema_from={old} schema_to={new}",
                     what=what, path=path, old=version, new=SCHEMA_VERSION)
        for key, expected in identity.items():
            found = txn.get(key)
            found_value = None if found is None else keys.read_u64(found)
            if found_value != expected:
                raise SchemaMismatch(
                    f"{what} store at {path} was created with {key.decode()}={found_value}, "
                    f"but it is being opened with {key.decode()}={expected}"
                )


def open_env_readonly(path: str, db_names: tuple[str, ...], what: str) -> StoreEnv:
    """Open an existing environment read-only (backup, fsck), beside a running daemon.

    Only the sub-databases of ``db_names`` that exist are in ``dbs``. The
    schema version is checked (SchemaMismatch for another one); nothing is
    written. Raises StoreError if ``path`` holds no environment.
    """
    if not os.path.isfile(os.path.join(path, "data.mdb")):
        raise StoreError(f"no {what} store at {path}")
    try:
        env = lmdb.open(path, readonly=True, subdir=True, max_dbs=len(db_names) + 2, lock=True)
    except (lmdb.Error, OSError) as exc:
        raise StoreError(f"cannot open {what} store at {path}: {exc}") from None
    try:
        dbs = {}
        for name in db_names:  # without a txn: a handle opened in a read txn dies with it
            try:
                dbs[name] = env.open_db(name.encode("ascii"), create=False)
            except lmdb.NotFoundError:
                continue
        with env.begin() as txn:
            stored = txn.get(SCHEMA_KEY, db=dbs["info"]) if "info" in dbs else None
        version = None if stored is None else keys.read_u64(stored)
        if version != SCHEMA_VERSION:
            hint = ("; it is upgraded the first time the server or an admin command opens it"
                    if version is not None and version < SCHEMA_VERSION else "")
            raise SchemaMismatch(f"{what} store at {path} has schema version {version}; "
                                 f"this version reads schema {SCHEMA_VERSION}{hint}")
    except BaseException:
        env.close()
        raise
    return StoreEnv(path=path, env=env, dbs=dbs)


def layout(shards: int, queue: bool) -> list[tuple[str, str]]:
    """``(name, directory relative to the data dir)`` of every environment of a store."""
    envs = [("meta", "meta")] + [(f"shard-{n:02d}", os.path.join("shards", f"{n:02d}")) for n in range(shards)]
    if queue:
        envs.append(("queue", "queue"))
    return envs


def open_all_readonly(data_dir: str) -> list[tuple[str, str, object]]:
    """Open every environment of ``data_dir`` read-only: ``[(name, rel_dir, StoreEnv)]``,
    meta first, then the shards (their count read from meta), then the queue if
    it exists (only its ``info`` in ``dbs``: its records are the queue's own).
    Raises StoreError or SchemaMismatch; closes what it opened then."""
    opened = [("meta", "meta", open_env_readonly(os.path.join(data_dir, "meta"), META_DBS, "meta"))]
    try:
        with opened[0][2].env.begin() as txn:
            count = txn.get(SHARDS_KEY, db=opened[0][2].dbs["info"])
        shards = 0 if count is None else keys.read_u64(count)
        has_queue = os.path.isfile(os.path.join(data_dir, "queue", "data.mdb"))
        for name, rel in layout(shards, has_queue)[1:]:
            names = ("info",) if name == "queue" else SHARD_DBS
            opened.append((name, rel, open_env_readonly(os.path.join(data_dir, rel), names, name)))
    except BaseException:
        for _, _, env in opened:
            env.close()
        raise
    return opened
