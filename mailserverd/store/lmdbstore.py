"""The sharded LMDB store: Directory and MailStore (store/interface.py) on LMDB.

Layout: ``data_dir/meta/`` (directory) and ``data_dir/shards/NN/`` (mail),
one LMDB environment each, opened once per process. Reads are short read
transactions on the caller's thread. Writes go to the environment's single
writer thread (:mod:`.writer`, group commit with fsync); a message is hashed
and parsed first in a bounded pool (:mod:`.pipeline`), off the reactor and
writer threads, and writes to one shard keep their call order.

Threads and Deferreds: every Deferred the store returns fires on the thread
that ``fire`` delivers to. By default ``fire`` is ``reactor.callFromThread``
(the daemon, and the CLI under ``twisted.internet.task.react``): Deferreds
then fire on the reactor thread, which must be running for them to fire.
Scripts and tests without a reactor may pass ``fire=call_directly``; callbacks
then run on the writer or parse thread.

Lifecycle::

    store = LMDBStore.open(data_dir, shards, limits)   # sync; creates/checks
    store.start()                                       # writer + parse threads
    ...
    yield store.stop()        # drains queued writes, stops threads, closes envs
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.python.failure import Failure

from mailserverd.store import mailboxes, messages, meta, searchindex, shard, spamtokens, webapi
from mailserverd.store.blobs import read_blob, read_content, read_facts
from mailserverd.store.sealing import Keyring, check_sealing
from mailserverd.store.env import META_DBS, SHARD_DBS, SHARD_KEY, SHARDS_KEY, StoreEnv, make_dir, open_env
from mailserverd.store.errors import Expunged, NotFound, StoreError, StoreTemporaryError
from mailserverd.store.mailboxes import MailboxLimits
from mailserverd.store.pipeline import OrderedSubmitter, ParsePool
from mailserverd.store.shard import read_changes as _read_changes
from mailserverd.store.types import (
    Alias,
    ChangeRecord,
    Changes,
    Credentials,
    Domain,
    MailboxInfo,
    MessageInfo,
    User,
)
from mailserverd.store.watchers import ChangeWatchers
from mailserverd.store.writer import EnvWriter

SHARDS_MAX = 100  # two-digit shard directory names


def call_directly(function: Callable, *args) -> None:
    """A ``fire`` for use without a reactor: run the callback on the calling thread."""
    function(*args)


#: Seconds a delivery may route by a cached user record (see LMDBStore._route).
ROUTE_TTL = 1.0
ROUTES_MAX = 10000


class LMDBStore:
    """Directory and MailStore on sharded LMDB environments (see module docstring).

    Attributes for operators and tests: ``shards`` (count), ``meta_writer`` and
    ``shard_writers`` (:class:`~.writer.EnvWriter`, with ``commits``,
    ``ops_committed``, ``ops_failed`` and ``batch_max``).
    """

    def __init__(self, data_dir: str, meta_env: StoreEnv, shard_envs: list[StoreEnv], limits,
                 fire: Callable, batch_max: int | None):
        self.data_dir = data_dir
        self.limits = limits
        self.shards = len(shard_envs)
        self._fire = fire
        self._meta = meta_env
        self._shard_envs = shard_envs
        self._keyring = shard_envs[0].keyring if shard_envs else None
        batch = batch_max or limits.store_batch_max
        self.meta_writer = EnvWriter(meta_env, "meta", fire, limits.store_queue_max, batch)
        self.shard_writers = [
            EnvWriter(env, f"shard-{number:02d}", fire, limits.store_queue_max, batch)
            for number, env in enumerate(shard_envs)
        ]
        self._meta_submitter = OrderedSubmitter(self.meta_writer, fire)
        self._submitters = [OrderedSubmitter(writer, fire) for writer in self.shard_writers]
        self._parse_pool = ParsePool(limits.store_parse_workers, limits.store_queue_max)
        self._mailbox_limits = MailboxLimits(limits.mailbox_name_max, limits.mailboxes_per_user_max)
        self._running = False
        self._closed = False
        self._routes: dict[str, tuple[float, User]] = {}
        self._watchers = ChangeWatchers()

    # ---------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, data_dir: str, shards: int, limits, reactor=None, fire: Callable | None = None,
             batch_max: int | None = None, keyring: Keyring | None = None) -> "LMDBStore":
        """Open (creating if missing) the store in ``data_dir`` with ``shards`` shards,
        encrypting at rest with ``keyring`` if given.

        ``fire`` defaults to ``reactor.callFromThread`` (the global reactor if
        ``reactor`` is None); ``batch_max`` overrides ``limits.store_batch_max``
        (1 = one commit per write, for benchmarks).
        Raises StoreError (directory not usable, bad shard count) or
        SchemaMismatch (written by a newer version, or created with another
        shard count: the count is fixed when the store is created) or
        MasterKeyError (a shard sealed under another master key, or sealed
        and no ``keyring``).
        """
        if not 1 <= shards <= SHARDS_MAX:
            raise StoreError(f"shard count must be between 1 and {SHARDS_MAX}, got {shards}")
        if fire is None:
            if reactor is None:
                from twisted.internet import reactor
            fire = reactor.callFromThread
        make_dir(data_dir)
        opened: list[StoreEnv] = []
        try:
            meta_env = open_env(os.path.join(data_dir, "meta"), limits.store_map_size, META_DBS,
                                {SHARDS_KEY: shards}, "meta")
            opened.append(meta_env)
            for number in range(shards):
                path = os.path.join(data_dir, "shards", f"{number:02d}")
                opened.append(open_env(path, limits.store_map_size, SHARD_DBS,
                                       {SHARD_KEY: number}, f"shard {number:02d}"))
                check_sealing(opened[-1], keyring, f"shard {number:02d}")
        except BaseException:
            for env in opened:
                env.close()
            raise
        return cls(data_dir, opened[0], opened[1:], limits, fire, batch_max)

    def start(self) -> None:
        """Start the writer threads (one per environment) and the parse pool."""
        if self._running or self._closed:
            raise StoreError("store already started or stopped")
        self._running = True
        self._parse_pool.start()
        self.meta_writer.start()
        for writer in self.shard_writers:
            writer.start()

    def stop(self) -> Deferred:
        """Drain queued writes, commit them, stop the threads and close the environments.

        Writes called after stop() fail with StoreTemporaryError. The Deferred
        fires once everything queued before it has been committed and answered.
        """
        if self._closed:
            return succeed(None)
        self._running = False
        waiting = [submitter.idle() for submitter in [self._meta_submitter, *self._submitters]]
        done: Deferred = Deferred()

        def stop_threads(_):
            import threading

            writers = [self.meta_writer, *self.shard_writers]
            for writer in writers:
                writer.stop()

            def join_all():
                for writer in writers:
                    writer.join()
                self._parse_pool.stop()
                self._fire(self._close, done)

            threading.Thread(target=join_all, name="store-stop", daemon=True).start()

        DeferredList(waiting).addCallback(stop_threads)
        return done

    def _close(self, done: Deferred) -> None:
        self._closed = True
        for env in [self._meta, *self._shard_envs]:
            env.close()
        done.callback(None)

    def close(self) -> None:
        """Close the environments of a store that was never started (sync)."""
        if self._running:
            raise StoreError("stop() a started store instead")
        if not self._closed:
            self._closed = True
            for env in [self._meta, *self._shard_envs]:
                env.close()

    def _check_running(self) -> None:
        if not self._running:
            raise StoreTemporaryError("mail store is not running")

    # ---------------------------------------------------------------- helpers

    def _meta_read(self, function, *args):
        with self._meta.env.begin() as txn:
            return function(txn, self._meta.dbs, *args)

    def _meta_write(self, apply) -> Deferred:
        if not self._running:
            return fail(StoreTemporaryError("mail store is not running"))
        return self._meta_submitter.submit(apply)

    def _user(self, address: str) -> User:
        """The user's directory entry. Raises NotFound."""
        user = self._meta_read(meta.get_user, address)
        if user is None:
            raise NotFound("no such user")
        return user

    def _shard_read(self, address: str, function, *args):
        """Run ``function(txn, dbs, user_id, *args)`` in a read txn of the user's shard.

        The user is found through the short-lived route cache (see :meth:`_route`):
        a FETCH reads each message twice, and a meta read and decode per call
        was a third of its time. Writes still read the directory afresh.
        Raises NotFound for an unknown user.
        """
        user = self._route(address)
        if user is None:
            raise NotFound("no such user")
        env = self._shard_envs[user.shard]
        with env.env.begin() as txn:
            return function(txn, env.dbs, user.user_id, *args)

    def _shard_write(self, address: str, make_apply, notify: bool = True) -> Deferred:
        """Submit ``make_apply(user)`` (an operation) to the user's shard writer;
        with ``notify``, the user's change watchers are called once it is committed."""
        try:
            self._check_running()
            user = self._user(address)
            apply = make_apply(user)
        except StoreError as exc:
            return fail(exc)
        written = self._submitters[user.shard].submit(apply)
        return self._watchers.notify_after(written, user.user_id) if notify else written

    def watch_changes(self, address: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after each write of this store to ``address``'s
        mailboxes is committed; returns the function that stops it.

        Only this process's writes are seen (see :mod:`.watchers`). Raises
        NotFound for an unknown user.
        """
        user = self._route(address)
        if user is None:
            raise NotFound("no such user")
        return self._watchers.watch(user.user_id, callback)

    # ---------------------------------------------------------------- Directory: reads

    def get_domain(self, name: str) -> Domain | None:
        return self._meta_read(meta.get_domain, name)

    def list_domains(self) -> list[Domain]:
        return self._meta_read(meta.list_domains)

    def get_user(self, address: str) -> User | None:
        return self._meta_read(meta.get_user, address)

    def list_users(self, domain: str | None = None) -> list[User]:
        return self._meta_read(meta.list_users, domain)

    def get_alias(self, address: str) -> Alias | None:
        return self._meta_read(meta.get_alias, address)

    def list_aliases(self, domain: str | None = None) -> list[Alias]:
        return self._meta_read(meta.list_aliases, domain)

    def resolve(self, address: str, delimiter: str = "") -> list[str]:
        return self._meta_read(meta.resolve, address, delimiter)

    def shard_user_counts(self) -> list[int]:
        """Users placed on each shard (extra: for operators and tests)."""
        return self._meta_read(meta.shard_user_counts, self.shards)

    # ---------------------------------------------------------------- Directory: writes

    def add_domain(self, name: str) -> Deferred:
        now = int(time.time())
        return self._meta_write(lambda w: meta.add_domain(w, name, now))

    def remove_domain(self, name: str) -> Deferred:
        return self._meta_write(lambda w: meta.remove_domain(w, name))

    def add_user(self, address: str, credentials: Credentials, quota: int = 0) -> Deferred:
        """Create an account: reserve an id and shard in meta, create the shard side
        (account + DEFAULT_MAILBOXES), then make the user visible in meta. A crash
        between the steps leaves nothing visible (at worst an unused id and an
        unreachable account on a shard)."""
        created = int(time.time())
        reserved = self._meta_write(lambda w: meta.reserve_user(w, address, self.shards))

        def create_shard_side(reservation):
            key, user_id, shard_number = reservation
            user = User(address=key, user_id=user_id, shard=shard_number, credentials=credentials,
                        quota=quota, created=created)
            submitter = self._submitters[shard_number]
            made = submitter.submit(
                lambda w: mailboxes.create_account(w, user_id, key, self._mailbox_limits))
            made.addCallback(lambda _: self._meta_write(lambda w: meta.finish_user(w, user)))
            made.addErrback(self._undo_shard_side, submitter, user)
            return made

        return reserved.addCallback(create_shard_side)

    def _undo_shard_side(self, failure: Failure, submitter: OrderedSubmitter, user: User):
        """add_user failed after the shard side was (maybe) made: remove it, keep the error."""
        undo = submitter.submit(lambda w: mailboxes.remove_account(w, user.user_id, user.address))
        undo.addErrback(lambda _: None)  # best effort; the account is unreachable anyway
        undo.addCallback(lambda _: failure)
        return undo

    def set_credentials(self, address: str, credentials: Credentials) -> Deferred:
        done = self._meta_write(lambda w: meta.replace_user(w, address, credentials=credentials))
        return done.addCallback(lambda _: None)

    def set_quota(self, address: str, quota: int) -> Deferred:
        if quota < 0:
            return fail(ValueError("quota must be >= 0"))
        done = self._meta_write(lambda w: meta.replace_user(w, address, quota=quota))
        return done.addCallback(lambda _: None)

    def remove_user(self, address: str) -> Deferred:
        """Remove the user from meta (it is gone from then on), then its shard data."""
        removed = self._meta_write(lambda w: meta.remove_user(w, address))

        def remove_shard_side(user: User):
            # This process forgets the route now; another one's cache ages out in ROUTE_TTL.
            self._routes.pop(user.address, None)
            self._routes.pop(address, None)
            return self._submitters[user.shard].submit(
                lambda w: mailboxes.remove_account(w, user.user_id, user.address))

        return removed.addCallback(remove_shard_side)

    def add_alias(self, address: str, targets: Iterable[str]) -> Deferred:
        target_list = tuple(targets)
        return self._meta_write(lambda w: meta.add_alias(w, address, target_list))

    def remove_alias(self, address: str) -> Deferred:
        return self._meta_write(lambda w: meta.remove_alias(w, address))

    # ---------------------------------------------------------------- the HTTP gateway (store/webapi.py)

    def get_web_token(self, token_hash: bytes) -> webapi.WebToken | None:
        return self._meta_read(webapi.get_token, token_hash)

    def list_web_tokens(self, user: str) -> list[webapi.WebToken]:
        return self._meta_read(webapi.list_tokens, user)

    def add_web_token(self, token_hash: bytes, token: webapi.WebToken) -> Deferred:
        return self._meta_write(lambda w: webapi.add_token(w, token_hash, token))

    def revoke_web_token(self, user: str, token_id: str) -> Deferred:
        return self._meta_write(lambda w: webapi.revoke_token(w, user, token_id))

    def get_web_message(self, user: str, message_id: str) -> webapi.WebMessage | None:
        return self._meta_read(webapi.get_message, user, message_id)

    def find_web_idempotent(self, user: str, key: str) -> str | None:
        return self._meta_read(webapi.find_idempotent, user, key)

    def add_web_message(self, user: str, message: webapi.WebMessage, expire_before: int) -> Deferred:
        return self._meta_write(lambda w: webapi.add_message(w, user, message, expire_before))

    # ---------------------------------------------------------------- MailStore: reads

    def list_mailboxes(self, user: str) -> list[MailboxInfo]:
        return self._shard_read(user, shard.list_mailboxes)

    def list_subscriptions(self, user: str) -> list[str]:
        """Subscribed names, also of mailboxes that no longer exist (RFC 9051 §6.3.9). Extra."""
        return self._shard_read(user, shard.list_subscriptions)

    def used_bytes(self, user: str) -> int:
        """Bytes of mail the user holds, as counted against the quota (RFC 9208 STORAGE). Extra."""
        return self._shard_read(user, lambda txn, dbs, user_id:
                                shard.require_account(txn, dbs, user_id).used_bytes)

    def get_mailbox(self, user: str, name: str) -> MailboxInfo:
        def read(txn, dbs, user_id):
            mailbox_id, mailbox = shard.require_mailbox_named(
                txn, dbs, user_id, name, self.limits.mailbox_name_max)
            return shard.mailbox_info(txn, dbs, user_id, mailbox_id, mailbox)

        return self._shard_read(user, read)

    def get_mailbox_by_id(self, user: str, mailbox_id: int) -> MailboxInfo:
        def read(txn, dbs, user_id):
            mailbox = shard.require_mailbox(txn, dbs, user_id, mailbox_id)
            return shard.mailbox_info(txn, dbs, user_id, mailbox_id, mailbox)

        return self._shard_read(user, read)

    def list_messages(self, user: str, mailbox_id: int) -> list[MessageInfo]:
        return self._shard_read(user, shard.list_messages, mailbox_id)

    def list_uids(self, user: str, mailbox_id: int) -> list[int]:
        """The mailbox's UIDs in order, without reading the messages (for SELECT). Extra."""
        return self._shard_read(user, shard.list_uids, mailbox_id)

    def first_unseen_uid(self, user: str, mailbox_id: int) -> int | None:
        """The lowest UID without \\Seen, or None (SELECT's UNSEEN, RFC 3501 §6.3.1). Extra."""
        return self._shard_read(user, shard.first_unseen_uid, mailbox_id)

    def count_messages_from(self, user: str, mailbox_id: int, first_uid: int) -> int:
        """How many messages have a UID >= ``first_uid`` (a key scan from there). Extra."""
        return self._shard_read(user, shard.count_uids_from, mailbox_id, first_uid)

    def get_message(self, user: str, mailbox_id: int, uid: int) -> MessageInfo:
        return self._shard_read(user, shard.get_message, mailbox_id, uid)

    def rewrap_data_keys(self, new_master) -> Deferred:
        """Rewrap every shard's data keys under ``new_master`` (a
        :class:`~mailserverd.store.sealing.MasterKey`), one shard a write;
        fires with how many were rewrapped. Extra: for ``mailserverd keys rotate``."""
        if self._keyring is None:
            return fail(StoreError("this store is not encrypted at rest: there are no keys to rotate"))
        counts: list[int] = []
        done = succeed(None)
        for submitter in self._submitters:  # in turn: a failure leaves the later shards as they were
            done.addCallback(lambda _, s=submitter: s.submit(
                lambda w: self._keyring.rewrap(w.txn, w.dbs, new_master)))
            done.addCallback(counts.append)
        return done.addCallback(lambda _: sum(counts))

    def read_message(self, user: str, blob_id: bytes) -> bytes:
        """The stored bytes. Raises NotFound (user), Expunged (no such blob on the user's shard)."""
        raw = self._shard_read(user, lambda txn, dbs, _: read_blob(txn, dbs, blob_id, self._keyring))
        if raw is None:
            raise Expunged("message content is gone")
        return raw

    def read_facts(self, user: str, blob_id: bytes) -> dict:
        facts = self._shard_read(user, lambda txn, dbs, _: read_facts(txn, dbs, blob_id, self._keyring))
        if facts is None:
            raise Expunged("message content is gone")
        return facts

    def changes_since(self, user: str, mailbox_id: int, modseq: int) -> Changes:
        return self._shard_read(user, shard.changes_since, mailbox_id, modseq)

    def read_changes(self, shard: int, after_seq: int, limit: int = 1000) -> list[ChangeRecord]:
        """Up to ``limit`` change records of shard ``shard`` with seq > ``after_seq``, in order."""
        env = self._shard_envs[shard]
        with env.env.begin() as txn:
            return _read_changes(txn, env.dbs, after_seq, limit)

    def last_seq(self, shard_number: int) -> int:
        """The shard's latest change-log sequence number (extra: for followers of the log)."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return shard.last_seq(txn, env.dbs)

    # ---------------------------------------------------------------- the search index (extra)
    # Kept for mailserverd.search: the records are store/searchindex.py's.

    def search_seq(self, shard_number: int) -> int:
        """The change-log position shard ``shard_number``'s search index reflects."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return searchindex.search_seq(txn, env.dbs)

    def search_layout(self) -> int:
        """The layout this store's index records must have (searchindex.format_for)."""
        return searchindex.format_for(self._keyring is not None)

    def search_format(self, shard_number: int) -> int:
        """The layout of shard ``shard_number``'s index records (:meth:`search_layout` when current)."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return searchindex.search_format(txn, env.dbs)

    def reset_search_index(self, shard_number: int) -> Deferred:
        """Empty shard ``shard_number``'s index in the current layout (searchindex.reset)."""
        if not self._running:
            return fail(StoreTemporaryError("mail store is not running"))
        return self._submitters[shard_number].submit(searchindex.reset)

    def read_content(self, shard_number: int, blob_id: bytes) -> tuple[bytes, dict] | None:
        """``(message bytes, facts)`` of a blob of a shard, or None if it is gone."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return read_content(txn, env.dbs, blob_id, self._keyring)

    def read_search_index(self, user: str, function: Callable):
        """``function(SearchIndexReader)`` over ``user``'s index in one read
        transaction (on the calling thread). Raises NotFound for an unknown user."""
        return self._shard_read(user, lambda txn, dbs, user_id: function(
            searchindex.SearchIndexReader(txn, dbs, user_id, self._keyring)))

    def write_search_batch(self, shard_number: int, upto_seq: int, docs: list, removals: list) -> Deferred:
        """Commit one indexing batch on the shard's writer (see searchindex.apply_batch);
        the Deferred fires with the number of docs written, once durable."""
        if not self._running:
            return fail(StoreTemporaryError("mail store is not running"))
        return self._submitters[shard_number].submit(
            lambda w: searchindex.apply_batch(w, upto_seq, docs, removals))

    def search_index_bytes(self, shard_number: int) -> int:
        """Bytes of the pages shard ``shard_number``'s index takes (searchindex.stored_bytes)."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return searchindex.stored_bytes(txn, env.dbs)

    def replace_search_docs(self, user: str, mailbox_id: int, before_docno: int, docs: list) -> Deferred:
        """Commit new docs for some of a mailbox's indexed messages (one rebuild
        chunk: searchindex.replace_docs); fires with how many were replaced.
        Fails with NotFound for an unknown user."""
        return self._shard_write(user, lambda u: lambda w: searchindex.replace_docs(
            w, u.user_id, mailbox_id, before_docno, docs), notify=False)

    def compact_search_postings(self, user: str, classes: list[str], before_docno: int, start: bytes,
                                keys_max: int) -> Deferred:
        """Clear stale docnos from up to ``keys_max`` of the user's postings of
        text ``classes`` (searchindex.compact_postings); fires with ``(next
        start or None, offsets cleared)``. Fails with NotFound for an unknown user."""
        return self._shard_write(user, lambda u: lambda w: searchindex.compact_postings(
            w, u.user_id, classes, before_docno, start, keys_max), notify=False)

    # ---------------------------------------------------------------- the spam classifier (extra)
    # Kept for mailserverd.delivery.bayes: the records are store/spamtokens.py's.

    def spam_seq(self, shard_number: int) -> int:
        """The change-log position shard ``shard_number``'s spam trainer has followed."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            return spamtokens.spam_seq(txn, env.dbs)

    def spam_counts(self, user: str, hashes) -> spamtokens.ModelCounts:
        """``user``'s own spam model for the token ``hashes``. Raises NotFound."""
        return self._shard_read(user, lambda txn, dbs, user_id: spamtokens.read_counts(
            txn, dbs, user_id, hashes, self._keyring))

    def spam_token_count(self, user: str) -> int:
        """Distinct tokens in ``user``'s spam model (a scan: for stats). Raises NotFound."""
        return self._shard_read(user, spamtokens.token_count)

    def site_spam_counts(self, hashes) -> spamtokens.ModelCounts:
        """The site-wide spam model (every shard's) for the token ``hashes``."""
        total = spamtokens.ModelCounts()
        for env in self._shard_envs:
            with env.env.begin() as txn:
                total.add(spamtokens.read_counts(txn, env.dbs, spamtokens.SITE_USER_ID, hashes, self._keyring))
        return total

    def find_mailbox(self, shard_number: int, user_id: int, mailbox_id: int) -> MailboxInfo | None:
        """A mailbox by the ids a change record names, or None if it is gone."""
        env = self._shard_envs[shard_number]
        with env.env.begin() as txn:
            record = shard.get_mailbox(txn, env.dbs, user_id, mailbox_id)
            return None if record is None else record.info(mailbox_id, False)

    def write_spam_training(self, shard_number: int, examples: list, upto_seq: int | None = None,
                            removed_users: list = ()) -> Deferred:
        """Commit training on the shard's writer (see spamtokens.apply_training);
        fires with the number of examples that changed a model, once durable."""
        if not self._running:
            return fail(StoreTemporaryError("mail store is not running"))
        return self._submitters[shard_number].submit(
            lambda w: spamtokens.apply_training(w, examples, upto_seq, removed_users))

    def train_spam(self, user: str, examples: list) -> Deferred:
        """Train ``user``'s model (and the site's) on ``[(blob id, SPAM or HAM,
        token hashes)]`` (the CLI's bulk training). Fails with NotFound."""
        try:
            account = self._user(user)
        except StoreError as exc:
            return fail(exc)
        return self.write_spam_training(account.shard, [
            (account.user_id, blob_id, label, hashes) for blob_id, label, hashes in examples])

    # ---------------------------------------------------------------- MailStore: mailbox writes

    def create_mailbox(self, user: str, name: str, special_use: str | None = None) -> Deferred:
        return self._shard_write(user, lambda u: lambda w: mailboxes.create_mailbox(
            w, u.user_id, name, special_use, self._mailbox_limits))

    def delete_mailbox(self, user: str, name: str) -> Deferred:
        return self._shard_write(user, lambda u: lambda w: mailboxes.delete_mailbox(
            w, u.user_id, name, self._mailbox_limits))

    def rename_mailbox(self, user: str, old: str, new: str) -> Deferred:
        return self._shard_write(user, lambda u: lambda w: mailboxes.rename_mailbox(
            w, u.user_id, old, new, self._mailbox_limits))

    def subscribe(self, user: str, name: str, subscribed: bool) -> Deferred:
        return self._shard_write(user, lambda u: lambda w: mailboxes.subscribe(
            w, u.user_id, name, subscribed, self._mailbox_limits))

    # ---------------------------------------------------------------- MailStore: message writes

    def append(self, user: str, mailbox: str, raw: bytes, flags: Iterable[str] = (),
               internaldate: int | None = None) -> Deferred:
        try:
            self._check_running()
            account = self._user(user)
            flag_set = shard.normalize_flags(flags)
            slot = self._submitters[account.shard].reserve()
        except StoreError as exc:
            return fail(exc)
        raw = bytes(raw)
        date = int(time.time()) if internaldate is None else int(internaldate)
        name_max = self.limits.mailbox_name_max
        submitter = self._submitters[account.shard]

        def parsed(prepared):  # in a parse thread
            blob_id, facts = prepared
            submitter.fill(slot, shard.uses_record_cache(lambda w: messages.append(
                w, account.user_id, mailbox, name_max, blob_id, raw, facts, flag_set, date,
                account.quota)))

        try:
            self._parse_pool.prepare(raw, parsed, lambda f: submitter.cancel(slot, f))
        except StoreTemporaryError as exc:
            submitter.cancel(slot, exc)
        return self._watchers.notify_after(slot.deferred, account.user_id)

    def _route(self, address: str) -> User | None:
        """The user record a delivery to ``address`` goes by, read at most ROUTE_TTL ago.

        Deliveries look their recipients up again and again (a meta read
        costs GIL switches on a busy server); a change made by the CLI reaches
        deliveries within ROUTE_TTL. Passwords are never taken from here.
        """
        now = time.monotonic()
        cached = self._routes.get(address)
        if cached is not None and now - cached[0] < ROUTE_TTL:
            return cached[1]
        if len(self._routes) >= ROUTES_MAX:
            self._routes.clear()
        user = self._meta_read(meta.get_user, address)
        if user is not None:  # a user created a moment ago must not wait for a stale miss
            self._routes[address] = (now, user)
        return user

    def deliver(self, users: Iterable[str], raw: bytes, internaldate: int | None = None,
                mailbox: str = "INBOX") -> Deferred:
        """See MailStore.deliver. The result is keyed by the addresses as given
        (a user named twice gets one copy, under the first spelling)."""
        results: dict = {}
        by_shard: dict[int, list[tuple[str, int, int]]] = {}
        given_name: dict[str, str] = {}
        running = self._running
        for address in users:
            user = self._route(address)
            if user is None:
                results[address] = NotFound("no such user")
            elif user.address not in given_name:
                given_name[user.address] = address
                by_shard.setdefault(user.shard, []).append((user.address, user.user_id, user.quota))
        slots = {}
        for number, recipients in by_shard.items():
            try:
                if not running:
                    raise StoreTemporaryError("mail store is not running")
                slots[number] = self._submitters[number].reserve()
            except StoreTemporaryError as exc:
                for address, _, _ in recipients:
                    results[given_name[address]] = exc
        if not slots:
            return succeed(results)
        raw = bytes(raw)
        date = int(time.time()) if internaldate is None else int(internaldate)
        name_max = self.limits.mailbox_name_max

        def parsed(prepared):  # in a parse thread
            blob_id, facts = prepared
            for number, slot in slots.items():
                recipients = by_shard[number]
                self._submitters[number].fill(slot, shard.uses_record_cache(
                    lambda w, r=recipients: messages.deliver(w, r, name_max, blob_id, raw, facts, date, mailbox)))

        def not_parsed(failure):
            for number, slot in slots.items():
                if not slot.done:
                    self._submitters[number].cancel(slot, failure)

        try:
            self._parse_pool.prepare(raw, parsed, not_parsed)
        except StoreTemporaryError as exc:
            not_parsed(exc)

        def collect(outcomes):
            for (ok, value), number in zip(outcomes, slots):
                for address, user_id, _ in by_shard[number]:
                    if ok:
                        results[given_name[address]] = value[address]
                        if not isinstance(value[address], Exception):
                            self._watchers.notify(user_id)
                    else:
                        results[given_name[address]] = value.value
            return results

        if len(slots) == 1:  # the common case: no DeferredList needed
            [(number, slot)] = slots.items()
            return slot.deferred.addCallbacks(
                lambda value: collect([(True, value)]), lambda failure: collect([(False, failure)]))
        shard_numbers = list(slots)
        deferreds = [slots[number].deferred for number in shard_numbers]
        return DeferredList(deferreds, consumeErrors=True).addCallback(collect)

    def copy(self, user: str, src_mailbox_id: int, uids: Iterable[int], dest: str) -> Deferred:
        uid_list = list(uids)
        return self._shard_write(user, lambda u: lambda w: messages.copy(
            w, u.user_id, src_mailbox_id, uid_list, dest, self.limits.mailbox_name_max, u.quota,
            move=False))

    def move(self, user: str, src_mailbox_id: int, uids: Iterable[int], dest: str) -> Deferred:
        uid_list = list(uids)
        return self._shard_write(user, lambda u: lambda w: messages.copy(
            w, u.user_id, src_mailbox_id, uid_list, dest, self.limits.mailbox_name_max, u.quota,
            move=True))

    def store_flags(self, user: str, mailbox_id: int, uids: Iterable[int], mode: str,
                    flags: Iterable[str], unchanged_since: int | None = None) -> Deferred:
        uid_list = list(uids)
        try:
            flag_set = shard.normalize_flags(flags)
        except StoreError as exc:
            return fail(exc)
        return self._shard_write(user, lambda u: lambda w: messages.store_flags(
            w, u.user_id, mailbox_id, uid_list, mode, flag_set, unchanged_since))

    def claim_recent(self, user: str, mailbox_id: int) -> Deferred:
        # Not a change other sessions are told of: see messages.claim_recent.
        return self._shard_write(user, lambda u: lambda w: messages.claim_recent(
            w, u.user_id, mailbox_id), notify=False)

    def expunge(self, user: str, mailbox_id: int, uids: Iterable[int] | None = None) -> Deferred:
        uid_list = None if uids is None else list(uids)
        return self._shard_write(user, lambda u: lambda w: messages.expunge(
            w, u.user_id, mailbox_id, uid_list))
