"""The HTTP gateway's records in the meta environment: API tokens and sent messages.

Like :mod:`.meta`, reads are functions of a read transaction and writes are
operations for the meta writer (functions of a ``WriteTxn``); values are
encoded by :mod:`.records` (version byte + msgpack).

``webtokens``: key ``sha256(token)`` (32 octets) -> ``{id, user, name, created}``.
Only the hash is kept, so a copy of the store gives no usable token.

``webmessages`` holds three kinds of key, told apart by their first octet
(``user`` is the canonical address, ``\\0`` ends it: addresses hold no NUL):

- ``m user \\0 id`` -> ``{created, queue_id, recipients: [[address, where]]}``
  (``where`` is ``local`` or ``remote``), what the status endpoint reads;
- ``t user \\0 u64(created ms) id`` -> ``b""``, the user's messages oldest
  first, so that expired ones are found without a scan;
- ``k user \\0 idempotency key`` -> ``id``, so that a retried request is
  answered with the first one's message.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailserverd.store import keys, records
from mailserverd.store.errors import AlreadyExists, NotFound

#: Expired messages removed per new one (bounded work per write; the rest go next time).
PRUNE_STEP = 16


@dataclass(frozen=True)
class WebToken:
    """An API token as stored: ``token_id`` (short, shown by ``token list``),
    the ``user`` it acts for, its ``name`` and ``created`` (unix seconds)."""

    token_id: str
    user: str
    name: str
    created: int


@dataclass(frozen=True)
class WebMessage:
    """A message sent through the API: ``message_id`` (the queue id of its
    ``Received:``), ``created`` (unix ms), ``recipients`` as (address,
    ``"local"``/``"remote"``) pairs and ``idempotency_key`` (``""``: none)."""

    message_id: str
    created: int
    recipients: tuple[tuple[str, str], ...]
    idempotency_key: str = ""


def _user_prefix(kind: bytes, user: str) -> bytes:
    return kind + user.encode("utf-8") + b"\0"


# ---------------------------------------------------------------- tokens


def get_token(txn, dbs, token_hash: bytes) -> WebToken | None:
    data = txn.get(token_hash, db=dbs["webtokens"])
    if data is None:
        return None
    doc = records.unpack(bytes(data))
    return WebToken(doc["id"], doc["user"], doc["name"], doc["created"])


def list_tokens(txn, dbs, user: str) -> list[WebToken]:
    """The tokens of ``user``, oldest first (a scan: a server has few tokens)."""
    found = []
    for token_hash, _ in txn.cursor(db=dbs["webtokens"]):
        token = get_token(txn, dbs, bytes(token_hash))
        if token is not None and token.user == user:
            found.append(token)
    return sorted(found, key=lambda token: (token.created, token.token_id))


def add_token(w, token_hash: bytes, token: WebToken) -> WebToken:
    """Store ``token`` under ``token_hash``. Raises AlreadyExists (never for a random token)."""
    doc = {"id": token.token_id, "user": token.user, "name": token.name, "created": token.created}
    if not w.txn.put(token_hash, records.pack(doc), db=w.dbs["webtokens"], overwrite=False):
        raise AlreadyExists("token already exists")
    return token


def revoke_token(w, user: str, token_id: str) -> WebToken:
    """Delete ``user``'s token ``token_id``; raises NotFound. Requests with it fail from then on."""
    for token_hash, _ in w.txn.cursor(db=w.dbs["webtokens"]):
        token = get_token(w.txn, w.dbs, bytes(token_hash))
        if token is not None and token.user == user and token.token_id == token_id:
            w.txn.delete(bytes(token_hash), db=w.dbs["webtokens"])
            return token
    raise NotFound(f"no token {token_id} for {user}")


# ---------------------------------------------------------------- sent messages


def get_message(txn, dbs, user: str, message_id: str) -> WebMessage | None:
    data = txn.get(_user_prefix(b"m", user) + message_id.encode("ascii"), db=dbs["webmessages"])
    if data is None:
        return None
    doc = records.unpack(bytes(data))
    return WebMessage(message_id, doc["created"], tuple(tuple(pair) for pair in doc["recipients"]),
                      doc.get("key", ""))


def find_idempotent(txn, dbs, user: str, key: str) -> str | None:
    """The id of the message ``user`` sent with idempotency ``key``, or None."""
    data = txn.get(_user_prefix(b"k", user) + key.encode("utf-8"), db=dbs["webmessages"])
    return None if data is None else bytes(data).decode("ascii")


def add_message(w, user: str, message: WebMessage, expire_before: int) -> None:
    """Record ``message`` for ``user`` and forget up to :data:`PRUNE_STEP` of the
    user's messages created before ``expire_before`` (unix ms)."""
    db = w.dbs["webmessages"]
    doc = {"created": message.created, "recipients": [list(pair) for pair in message.recipients],
           "key": message.idempotency_key}
    ident = message.message_id.encode("ascii")
    w.txn.put(_user_prefix(b"m", user) + ident, records.pack(doc), db=db)
    w.txn.put(_user_prefix(b"t", user) + keys.u64(message.created) + ident, b"", db=db)
    if message.idempotency_key:
        w.txn.put(_user_prefix(b"k", user) + message.idempotency_key.encode("utf-8"), ident, db=db)
    _prune(w, user, expire_before)


def _prune(w, user: str, expire_before: int) -> None:
    db = w.dbs["webmessages"]
    prefix = _user_prefix(b"t", user)
    cursor = w.txn.cursor(db=db)
    expired = []
    if cursor.set_range(prefix):
        for key in cursor.iternext(values=False):
            key = bytes(key)
            if not key.startswith(prefix) or len(expired) >= PRUNE_STEP:
                break
            if keys.read_u64(key[len(prefix):len(prefix) + 8]) >= expire_before:
                break
            expired.append(key)
    for key in expired:
        message_id = key[len(prefix) + 8:].decode("ascii")
        old = get_message(w.txn, w.dbs, user, message_id)
        w.txn.delete(key, db=db)
        w.txn.delete(_user_prefix(b"m", user) + key[len(prefix) + 8:], db=db)
        if old is not None and old.idempotency_key:
            w.txn.delete(_user_prefix(b"k", user) + old.idempotency_key.encode("utf-8"), db=db)
