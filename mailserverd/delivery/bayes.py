"""The spam classifier that learns: tokens, Robinson–Fisher combining, per-user models.

A message becomes a set of tokens (:func:`message_tokens`): the words of
its decoded body text (the same extraction as search, mailserverd.search.text)
and of some header fields (prefixed by the field name), and the host names
of the links it holds. Each user has a model (store/spamtokens.py): how many
spam and ham messages held each token. The classifier:

- gives each token Robinson's probability with his "degree of belief"
  correction (Gary Robinson, "A Statistical Approach to the Spam Problem",
  Linux Journal 107, 2003): ``f = (s*x + n*p) / (s + n)`` where ``p`` is the
  token's spam ratio, ``n`` how often it was seen, ``x = 0.5`` the prior
  and ``s`` its strength;
- keeps the tokens furthest from 0.5 (at most :data:`MAX_DISCRIMINATORS`,
  none closer than :data:`MIN_STRENGTH`) and combines them with Fisher's
  chi-square method as SpamBayes does: ``S = 1 - C(-2 sum ln(1-f), 2n)``,
  ``H = 1 - C(-2 sum ln f, 2n)``, spam probability ``(1 + S - H) / 2``.

A user's own model is used once it holds ``spam_training_min`` messages of
each class; until then the site-wide model (every user's training summed),
under the same condition; with neither, there is no verdict (None).

Headers we add (Received, Authentication-Results, X-Spam-*) are never
tokens: what is trained from a stored message and what is classified at
delivery, before those fields exist, must be the same set.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Iterable

from mailserverd.mail.facts import compute_facts
from mailserverd.search.text import MessageText
from mailserverd.store.errors import NotFound

#: Robinson's ``s`` and ``x`` (SpamBayes' unknown_word_strength and unknown_word_prob).
STRENGTH = 0.45
PRIOR = 0.5
#: Tokens closer to 0.5 than this say nothing (SpamBayes' minimum_prob_strength).
MIN_STRENGTH = 0.1
#: The most extreme tokens combined per message (SpamBayes' max_discriminators).
MAX_DISCRIMINATORS = 150

#: Header fields whose words are tokens (as ``name:word``); the rest are
#: noise (dates, ids) or ours (trace and result fields).
HEADER_FIELDS = frozenset({
    "from", "reply-to", "sender", "to", "cc", "subject", "content-type",
    "x-mailer", "user-agent", "list-id", "list-unsubscribe", "precedence",
})
_WORD = re.compile(r"[^\s\"'()<>\[\]{},;:!?*|=`]+")
_URL_HOST = re.compile(r"(?:https?|ftp)://([^\s/\"'<>:?#]+)", re.I)
_TRIM = ".-_'"
_WORD_MIN, _WORD_MAX = 3, 24


def _words(text: str) -> Iterable[str]:
    """The words of ``text`` (already normalised); an address also gives its
    domain; a long word becomes a ``skip:`` token of its first letter and
    length band, as SpamBayes does."""
    for raw in _WORD.findall(text):
        word = raw.strip(_TRIM)
        if "@" in word:
            word, _, domain = word.rpartition("@")
            if domain:
                yield domain
        if len(word) < _WORD_MIN:
            continue
        if len(word) > _WORD_MAX:
            yield f"skip:{word[0]} {len(word) // 10 * 10}"
        else:
            yield word


def message_tokens(raw: bytes, facts: dict, tokens_max: int) -> list[str]:
    """The distinct tokens of a message (bytes and its facts), in the order
    first met, at most ``tokens_max``. Pure; never raises for broken MIME."""
    text = MessageText(lambda: raw, lambda: facts)
    tokens: dict[str, None] = {}
    for name, value in text.fields():
        name = name.lower()
        if name in HEADER_FIELDS:
            for word in _words(value):
                tokens[f"{name}:{word}"] = None
    body = text.body()
    for host in _URL_HOST.findall(body):
        tokens["url:" + host.lower().strip(".")] = None
    for word in _words(body):
        tokens[word] = None
        if len(tokens) >= tokens_max:
            break
    return list(tokens)[:tokens_max]


def token_hash(token: str) -> bytes:
    """The 8-byte key a token is counted under (BLAKE2b; the same in every process)."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def message_hashes(raw: bytes, facts: dict | None, tokens_max: int,
                   message_max: int) -> list[bytes] | None:
    """The token hashes of a message; its facts are computed when not given.
    None for a message over ``message_max`` bytes: it is neither classified
    nor trained on (SpamAssassin's spamc skips large mail alike; the cost
    of decoding grows with the size, the evidence does not)."""
    if len(raw) > message_max:
        return None
    if facts is None:
        facts = compute_facts(raw)
    return [token_hash(token) for token in message_tokens(raw, facts, tokens_max)]


def token_probability(spam: int, ham: int, nspam: int, nham: int) -> float:
    """Robinson's f(w) of a token seen in ``spam`` of ``nspam`` spam and ``ham``
    of ``nham`` ham messages (see the module docstring)."""
    spam_ratio = spam / nspam if nspam else 0.0
    ham_ratio = ham / nham if nham else 0.0
    if spam_ratio + ham_ratio == 0.0:
        return PRIOR
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam + ham
    return (STRENGTH * PRIOR + n * p) / (STRENGTH + n)


def chi2q(x2: float, degrees: int) -> float:
    """P(chi-square with ``degrees`` (even) degrees of freedom >= ``x2``)."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def combine(probabilities: Iterable[float]) -> float:
    """The spam probability of a message from its tokens' f(w) (Fisher–Robinson)."""
    strong = sorted((p for p in probabilities if abs(p - PRIOR) >= MIN_STRENGTH),
                    key=lambda p: -abs(p - PRIOR))[:MAX_DISCRIMINATORS]
    if not strong:
        return PRIOR
    ham_sum = -2.0 * sum(math.log(p) for p in strong)
    spam_sum = -2.0 * sum(math.log1p(-p) for p in strong)
    spamminess = 1.0 - chi2q(spam_sum, 2 * len(strong))
    hamminess = 1.0 - chi2q(ham_sum, 2 * len(strong))
    return (1.0 + spamminess - hamminess) / 2.0


def spam_probability(counts, hashes: Iterable[bytes]) -> float:
    """The spam probability of a message with token ``hashes`` under a model
    (:class:`mailserverd.store.spamtokens.ModelCounts`)."""
    nspam, nham = counts.nspam, counts.nham
    return combine(token_probability(*counts.tokens[token], nspam, nham)
                   for token in hashes if token in counts.tokens)


@dataclass(frozen=True)
class Classification:
    """A message's spam ``probability`` for one user, and the ``model`` that
    gave it: ``"user"`` (the user's own) or ``"site"``."""

    probability: float
    model: str


class SpamClassifier:
    """Classifies messages per recipient against the store's models.

    ``store`` gives ``spam_counts(user, hashes)`` and ``site_spam_counts(hashes)``
    (LMDBStore); ``limits`` the named limits ``spam_training_min`` (messages
    of each class a model needs before it is used), ``spam_tokens_max`` and
    ``spam_message_max``. Reads LMDB and parses the message: call it from a
    pool thread.
    """

    def __init__(self, store, limits):
        self.store = store
        self.training_min = limits.spam_training_min
        self.tokens_max = limits.spam_tokens_max
        self.message_max = limits.spam_message_max

    def _trained(self, counts) -> bool:
        return counts.nspam >= self.training_min and counts.nham >= self.training_min

    def classify(self, raw: bytes, users: Iterable[str]) -> dict[str, Classification | None]:
        """``{user: Classification or None}`` for ``raw`` (CRLF lines): each
        user's own model if trained enough, else the site's if that is, else None
        (also for every user when the message is over ``spam_message_max``)."""
        hashes = message_hashes(raw, None, self.tokens_max, self.message_max)
        if hashes is None:
            return dict.fromkeys(users)
        site = None
        verdicts: dict[str, Classification | None] = {}
        for user in users:
            try:
                counts = self.store.spam_counts(user, hashes)
            except NotFound:
                counts = None
            if counts is not None and self._trained(counts):
                verdicts[user] = Classification(spam_probability(counts, hashes), "user")
                continue
            if site is None:
                site = self.store.site_spam_counts(hashes)
            verdicts[user] = (Classification(spam_probability(site, hashes), "site")
                              if self._trained(site) else None)
        return verdicts
