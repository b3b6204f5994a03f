"""What the index keeps of a message: its normalised text and its terms.

:func:`index_entry` turns a message (bytes and stored facts) into the
``(text, terms)`` pair that :func:`mailserverd.store.searchindex.apply_batch`
stores:

- ``text``: the texts of :meth:`MessageText.document`, read back by
  :func:`stored_text` to check candidates (msgpack, the body zlib-compressed
  apart so that keys other than BODY and TEXT never decompress it);
- ``terms``: for each *class* of text a key compares with (:data:`CLASSES`:
  each envelope field, the header, the body), the set of its *tokens*, the
  maximal runs of word characters (``\\w``) of its normalised text, in UTF-8;
- ``pairs``: for each class, the pairs of tokens that follow each other
  with exactly one space between them.

Why tokens give exact answers (RFC 9051 §6.4.4 asks for substring matches,
not word matches): a needle made only of word characters can occur in a
text only inside one token, so the texts holding it are exactly those with a
token that contains it, and the index answers from the vocabulary alone,
with no text read. A needle with other characters in it is split at them
into its *runs* (:func:`needle_runs`); each run is a token of the text, or
the start, the end or any part of one, depending on what surrounds it in
the needle, so the texts with such tokens for every run are the candidates,
and their stored text is checked. Except for the commonest phrase, two runs
with one space between them: the texts holding it are exactly those with a
pair whose first token ends with the first run and whose second starts with
the second, so the pairs answer it outright too.

A class whose text is longer than ``search_text_max`` in all, or that has a
token longer than :data:`TOKEN_MAX` bytes, also gets the empty token
:data:`UNTOKENISED`: its docs are candidates for every key of that class and
always checked, so that a 50 MB body costs no millions of terms and a long
token never a match.
"""

from __future__ import annotations

import re
import zlib
from array import array

import msgpack

from mailserverd.imap.sortkeys import sort_record
from mailserverd.mail import mime
from mailserverd.search.text import MessageText, StoredText

#: The class of each text a key compares with: an envelope field, the header, the body.
CLASSES = {"from": "f", "to": "t", "cc": "c", "bcc": "b", "subject": "s", "header": "h", "body": "B"}
#: The token of a class whose text was not split into tokens (see the module docstring).
UNTOKENISED = b""
#: Longest token kept in the vocabulary, in bytes.
TOKEN_MAX = 64
GRAM = 3
# A token: a maximal run of word characters (str.isalnum or "_") of normalised text.
_TOKEN = re.compile(r"\w+")
# What lies between tokens (captured: re.split keeps it).
_SEPARATORS = re.compile(r"(\W+)")
# The stored text: this byte, then msgpack [envelope and fields, zlib(body)].
_SPLIT_FORMAT = b"\x02"

#: How a needle's run must sit in a token (see :func:`needle_runs`).
CONTAINS, PREFIX, SUFFIX, EXACT = "contains", "prefix", "suffix", "exact"


def grams_of(data: bytes) -> set[bytes]:
    """Every ``GRAM``-byte substring of ``data`` (of tokens: the vocabulary's index)."""
    return {data[index:index + GRAM] for index in range(len(data) - GRAM + 1)}


def _terms(text: str) -> tuple[list[bytes], bytes]:
    """The distinct tokens of ``text`` (normalised), sorted, with UNTOKENISED if
    one is too long, and the distinct pairs of tokens with one space between
    them, as :func:`pair_indexes` reads them."""
    parts = _SEPARATORS.split(text)  # word, separator, word, ... (empty words at the ends)
    words, separators = parts[0::2], parts[1::2]
    encoded = {word: word.encode("utf-8", "surrogatepass") for word in set(words) if word}
    long = [word for word, token in encoded.items() if len(token) > TOKEN_MAX]
    for word in long:
        del encoded[word]
    tokens = sorted(set(encoded.values()) | ({UNTOKENISED} if long else set()))
    position = {token: index for index, token in enumerate(tokens)}
    indexes = array("I")
    for first, separator, second in set(zip(words, separators, words[1:])):
        if separator == " " and first in encoded and second in encoded:
            indexes.append(position[encoded[first]])
            indexes.append(position[encoded[second]])
    return tokens, indexes.tobytes()


def pair_indexes(pairs: bytes) -> array:
    """A class's pairs as stored in an entry: the flat positions ``first, second,
    first, second...`` of their tokens in the class's sorted token list."""
    return array("I", pairs)


def index_entry(raw: bytes, facts: dict, text_max: int) -> tuple:
    """``(stored text, terms, pairs, sortable)`` of one message (see the module
    docstring): ``terms`` maps each class of :data:`CLASSES` to its tokens
    (sorted), ``pairs`` to its pairs of tokens (:func:`pair_indexes`);
    ``sortable`` is what SORT and THREAD compare (imap.sortkeys.sort_record),
    None for a message without an envelope. Never raises for broken MIME (the
    text extraction does not)."""
    sortable = _sortable(raw, facts)
    text = MessageText(lambda: raw, lambda: facts)
    doc = text.document()
    body = doc.pop("body")
    stored = _SPLIT_FORMAT + msgpack.packb(
        [doc, zlib.compress(body.encode("utf-8", "surrogatepass"), 1)], use_bin_type=True)
    texts = {CLASSES[field]: text.envelope(field) for field in ("from", "to", "cc", "bcc", "subject")}
    texts[CLASSES["header"]] = text.header()
    texts[CLASSES["body"]] = body
    if sum(len(part) for part in texts.values()) > text_max:
        return stored, {name: [UNTOKENISED] for name in texts}, {}, sortable
    terms, pairs = {}, {}
    for name, part in texts.items():
        terms[name], pairs[name] = _terms(part)
    return stored, terms, pairs, sortable


def _sortable(raw: bytes, facts: dict) -> list | None:
    if "envelope" not in facts:
        return None
    fields = mime.header_fields(raw, 0, facts["header_end"], frozenset({b"references"}))
    return sort_record(facts["envelope"], fields[0][1] if fields else None)


def index_entry_wire(raw: bytes, facts: dict, text_max: int) -> list:
    """:func:`index_entry` as a worker process sends it back: few objects to
    decode (each class's tokens joined by NUL, which no token holds)."""
    stored, terms, pairs, sortable = index_entry(raw, facts, text_max)
    return [stored, {name: b"\x00".join(tokens) for name, tokens in terms.items() if tokens}, pairs, sortable]


def entry_from_wire(reply: list) -> tuple:
    """The ``(stored text, terms, pairs, sortable)`` of an :func:`index_entry_wire` reply."""
    stored, joined, pairs, sortable = reply
    return bytes(stored), {name: joined[name].split(b"\x00") if name in joined else []
                           for name in CLASSES.values()}, pairs, sortable


def stored_text(stored: bytes) -> StoredText:
    """The :class:`StoredText` of what :func:`index_entry` stored; the body is
    decompressed only if a key reads it."""
    doc, body = msgpack.unpackb(memoryview(stored)[1:], raw=False)
    return StoredText(doc, lambda: zlib.decompress(body).decode("utf-8", "surrogatepass"))


def needle_runs(needle: str) -> list[tuple[bytes, str]]:
    """The runs of word characters of a normalised needle, each with how it sits in
    a token of any text holding the needle: EXACT between two other characters,
    PREFIX after one (the token starts there), SUFFIX before one, CONTAINS alone
    (the needle is that run). Empty when the needle has no word character."""
    runs = []
    for match in _TOKEN.finditer(needle):
        after_other, before_other = match.start() > 0, match.end() < len(needle)
        mode = (EXACT if before_other else PREFIX) if after_other else (SUFFIX if before_other else CONTAINS)
        runs.append((match.group().encode("utf-8", "surrogatepass"), mode))
    return runs


def token_fits(token: bytes, run: bytes, mode: str) -> bool:
    """Whether ``token`` can hold ``run`` where :func:`needle_runs` says it sits."""
    if mode == EXACT:
        return token == run
    if mode == PREFIX:
        return token.startswith(run)
    if mode == SUFFIX:
        return token.endswith(run)
    return run in token
