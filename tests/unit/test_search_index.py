"""The search index and query engine on a real store: answers equal the scan's.

A corpus of varied messages (encoded words, charsets, QP/base64, HTML,
attachments, a text too long for grams) is delivered, indexed by the real
indexer, then partly expunged and extended past the index (an unindexed
tail); random SEARCH programs must find exactly what the scan finds.
"""

from __future__ import annotations

import base64
import random

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor

from mailserverd.imap import search
from mailserverd.imap.parser import SequenceSet
from mailserverd.limits import KIB, MIB, Limits
from mailserverd.mail.facts import compute_facts
from mailserverd.search.index import CLASSES, CONTAINS, index_entry, needle_runs, pair_indexes, token_fits
from mailserverd.search.indexer import Indexer
from mailserverd.store import keys
from mailserverd.store.sealing import Keyring, MasterKey, new_master_key
from mailserverd.store.searchindex import FORMAT, SEARCH_FORMAT_KEY, SEGMENT_DOCS, bit_flags, bit_offsets
from mailserverd.imap.sortkeys import SORT_KEYS, SortableMessage
from mailserverd.search.query import search_indexed, sort_records
from mailserverd.search.text import MessageText, normalise

from imap_real_store import USER, open_store

WORDS = ["alpha", "Beta", "gamma", "Köln", "straße", "ＦＵＬＬ", "ﬁle", "日本語", "привет", "café",
         "report", "meeting", "the", "résumé", "ΣΊΣΥΦΟΣ", "x", "ab"]
TEXT_MAX = 64 * KIB


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _encoded(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def make_message(rng: random.Random, number: int) -> bytes:
    """One message of a random shape (plain, QP latin-1, multipart with HTML and an attachment)."""
    subject = _words(rng, 3)
    head = (f"From: {_encoded(_words(rng, 2))} <u{number % 5}@example.test>\r\n"
            f"To: {_words(rng, 1).replace(' ', '')} <rcpt{number % 3}@example.test>\r\n"
            f"Cc: c{number % 4}@example.test\r\nSubject: {_encoded(subject) if number % 2 else subject}\r\n"
            f"X-Tag: {_words(rng, 2)}\r\nMessage-ID: <m{number}@example.test>\r\n")
    shape = number % 4
    if shape == 0:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + _words(rng, 40) + "\r\n").encode()
    if shape == 1:
        body = _words(rng, 30).replace("日本語", "").replace("привет", "").replace("ΣΊΣΥΦΟΣ", "")
        body = body.replace("ＦＵＬＬ", "FULL").replace("ﬁle", "file")
        import quopri
        qp = quopri.encodestring(body.encode("latin-1")).replace(b"\n", b"\r\n")
        return (head + "Content-Type: text/plain; charset=iso-8859-1\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + qp + b"\r\n"
    if shape == 2:
        html = base64.encodebytes(f"<html><p>{_words(rng, 20)}</p><b>{_words(rng, 3)}</b></html>".encode())
        return (head + "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=B\r\n\r\n"
                "--B\r\nContent-Type: text/plain\r\n\r\n" + _words(rng, 10) + "\r\n"
                "--B\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                ).encode() + html + (
                "--B\r\nContent-Type: application/pdf; name=report.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                + base64.encodebytes(b"meeting alpha binary").decode() + "--B--\r\n").encode()
    # a body longer than TEXT_MAX: indexed without grams
    return (head + "\r\n" + (_words(rng, 8) + "\r\n") * 3000).encode()


@pytest.fixture(scope="module", params=["plain", "sealed"])
def corpus(request, tmp_path_factory):
    """A store with 60 delivered, 40 indexed (a few expunged after), 20 past the
    index; once as it is, once encrypted at rest (a sealed index: keyed terms
    and grams, sealed texts)."""
    limits = Limits(store_map_size=256 * MIB, search_text_max=TEXT_MAX, search_index_batch=7)
    keyring = Keyring(MasterKey(new_master_key())) if request.param == "sealed" else None
    opened = open_store(tmp_path_factory.mktemp("index"), limits, keyring)
    store = next(opened)
    rng = random.Random(7)
    for number in range(40):
        pytest_twisted.blockon(store.append(USER, "INBOX", make_message(rng, number),
                                            ["\\Seen"] if number % 3 else []))
    pytest_twisted.blockon(store.append(USER, "Sent", make_message(rng, 99)))  # another mailbox's doc
    indexer = Indexer(store, limits, reactor)
    pytest_twisted.blockon(indexer.catch_up())
    box = store.get_mailbox(USER, "INBOX")
    pytest_twisted.blockon(store.store_flags(USER, box.mailbox_id, [3, 8, 21], "+", ["\\Deleted"]))
    pytest_twisted.blockon(store.expunge(USER, box.mailbox_id))
    for number in range(40, 52):
        pytest_twisted.blockon(store.append(USER, "INBOX", make_message(rng, number)))
    pytest_twisted.blockon(indexer.catch_up())  # indexes the expunge and these
    indexer.stop()
    for number in range(52, 60):
        pytest_twisted.blockon(store.append(USER, "INBOX", make_message(rng, number)))
    box = store.get_mailbox(USER, "INBOX")
    infos = store.list_messages(USER, box.mailbox_id)
    texts = [MessageText(lambda i=info: store.read_message(USER, i.blob_id),
                         lambda i=info: store.read_facts(USER, i.blob_id)) for info in infos]
    yield store, box.mailbox_id, infos, [(t.header() + "\n" + t.body())[:1500] for t in texts[:30]]
    try:
        next(opened)
    except StopIteration:
        pass


def _answers(store, mailbox_id, infos, key):
    uids = [info.uid for info in infos]
    scope = search.SearchScope(store, USER, count=len(uids), max_uid=uids[-1])
    scanned = search.search_messages(key, list(enumerate(infos, 1)), scope)
    indexed = search_indexed(key, mailbox_id, uids, scope, direct_max=5)
    return [(seq, info.uid) for seq, info in scanned], [(seq, info.uid) for seq, info in indexed]


def test_a_sealed_store_holds_no_word_of_its_messages_in_its_files(corpus):
    store = corpus[0]
    if store.search_layout() == FORMAT:
        pytest.skip("a store that does not encrypt at rest")
    on_disk = b"".join(open(f"{env.path}/data.mdb", "rb").read() for env in store._shard_envs)
    for word in ("meeting", "gamma", "report", "Köln", "straße", "café", "m17@example"):
        assert word.encode() not in on_disk and word.lower().encode() not in on_disk, word


def test_index_is_behind_by_the_tail_and_knows_it(corpus):
    store, mailbox_id, infos, _ = corpus
    assert store.search_seq(0) < store.last_seq(0)
    indexed_uid = store.read_search_index(USER, lambda reader: reader.indexed_uid(mailbox_id))
    assert indexed_uid == 52  # the first 40 and the 12 after them, not the last 8
    key = search.BodyText(normalise("alpha"))
    scanned, indexed = _answers(store, mailbox_id, infos, key)
    assert indexed == scanned and any(uid > indexed_uid for _, uid in indexed)


@pytest.mark.parametrize("needle", ["köln", "STRASSE", "full", "file", "日本", "при", "", "e", "report.pdf",
                                    "<p>", "meeting alpha", "résumé", "σίσυφοσ"])
def test_text_keys_agree(corpus, needle):
    store, mailbox_id, infos, _ = corpus
    needle = normalise(needle)
    for key in (search.BodyText(needle), search.AnyText(needle), search.EnvelopeText("from", needle),
                search.EnvelopeText("subject", needle), search.HeaderText(b"x-tag", needle)):
        scanned, indexed = _answers(store, mailbox_id, infos, key)
        assert indexed == scanned, key


def _needles(texts):
    substrings = st.builds(lambda text, start, length: text[start % max(len(text), 1):][:length],
                           st.sampled_from(texts), st.integers(0, 5000), st.integers(0, 12))
    return (substrings | st.sampled_from(WORDS) | st.text(max_size=3)).map(normalise)


def programs(texts):
    needle = _needles(texts)
    leaves = st.one_of(
        st.builds(search.EnvelopeText, st.sampled_from(["from", "to", "cc", "bcc", "subject"]), needle),
        st.builds(search.BodyText, needle),
        st.builds(search.AnyText, needle),
        st.builds(search.HeaderText, st.sampled_from([b"x-tag", b"subject", b"message-id", b"none"]), needle),
        st.builds(search.Flag, st.sampled_from(["\\Seen", "\\Deleted"])),
        st.builds(search.SizeKey, st.sampled_from(["larger", "smaller"]), st.integers(0, 60000)),
        st.builds(lambda low, high: search.UidSet(SequenceSet(((low, high),))), st.integers(1, 60), st.integers(1, 60)),
        st.just(search.All()),
    )
    return st.recursive(leaves, lambda inner: st.one_of(
        st.builds(search.Not, inner),
        st.builds(search.Or, inner, inner),
        st.builds(lambda keys: search.And(tuple(keys)), st.lists(inner, min_size=1, max_size=4)),
    ), max_leaves=8)


def test_random_programs_agree(corpus):
    store, mailbox_id, infos, texts = corpus

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(programs(texts))
    def check(key):
        scanned, indexed = _answers(store, mailbox_id, infos, key)
        assert indexed == scanned

    check()


@given(st.text(alphabet="ab \u00e9_-.\n", max_size=40), st.text(alphabet="ab \u00e9_-.", min_size=1, max_size=6))
@settings(max_examples=3000)
def test_tokens_hold_every_match_and_answer_single_runs_exactly(text, needle):
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode()
    facts = compute_facts(raw)
    _, terms, pairs, _ = index_entry(raw, facts, MIB)
    text, needle = MessageText(lambda: raw, lambda: facts).body(), normalise(needle)
    tokens, indexes = terms[CLASSES["body"]], pair_indexes(pairs[CLASSES["body"]])
    pairs = [(tokens[indexes[n]], tokens[indexes[n + 1]]) for n in range(0, len(indexes), 2)]
    runs = needle_runs(needle)
    if needle in text:
        assert all(any(token_fits(token, run, mode) for token in tokens) for run, mode in runs)
    if len(runs) == 1 and runs[0][1] == CONTAINS:
        assert (needle in text) == any(token_fits(token, *runs[0]) for token in tokens)
    if len(runs) == 2 and runs[0][0] + b" " + runs[1][0] == needle.encode():
        assert (needle in text) == any(token_fits(first, *runs[0]) and token_fits(second, *runs[1])
                                       for first, second in pairs)


@pytest.fixture
def small_store(tmp_path):
    yield from open_store(tmp_path, Limits(store_map_size=64 * MIB))


@pytest_twisted.ensureDeferred
async def test_an_index_of_another_layout_is_never_read_and_is_rebuilt(small_store):
    store, limits = small_store, Limits(store_map_size=64 * MIB)
    rng = random.Random(3)
    for number in range(12):
        await store.append(USER, "INBOX", make_message(rng, number))
    indexer = Indexer(store, limits, reactor)
    await indexer.catch_up()
    box = store.get_mailbox(USER, "INBOX")
    infos = store.list_messages(USER, box.mailbox_id)
    key = search.BodyText(normalise("alpha"))

    def indexed_uid():
        return store.read_search_index(USER, lambda reader: reader.indexed_uid(box.mailbox_id))

    assert indexed_uid() == infos[-1].uid
    await store._submitters[0].submit(lambda w: w.txn.put(SEARCH_FORMAT_KEY, keys.u64(1), db=w.dbs["info"]))
    assert indexed_uid() == 0  # an older layout: nothing in it is read, searches scan
    scanned, indexed = _answers(store, box.mailbox_id, infos, key)
    assert indexed == scanned and scanned
    await indexer.catch_up()
    assert store.search_format(0) == FORMAT and indexed_uid() == infos[-1].uid
    assert _answers(store, box.mailbox_id, infos, key) == (scanned, scanned)
    await indexer.stop()


def test_sort_records_of_the_index_are_what_the_facts_give(corpus):
    store, mailbox_id, infos, _ = corpus
    kept = sort_records(store, USER, mailbox_id, [info.uid for info in infos])
    indexed = store.read_search_index(USER, lambda reader: reader.indexed_uid(mailbox_id))
    assert set(kept) == {info.uid for info in infos if info.uid <= indexed}  # the tail has none yet
    for number, info in enumerate(infos, 1):
        if info.uid not in kept:
            continue
        from_index = SortableMessage(number, info.uid, info, store, USER, kept[info.uid])
        from_facts = SortableMessage(number, info.uid, info, store, USER)
        for name in SORT_KEYS:
            assert from_index.sort_value(name) == from_facts.sort_value(name), name
        assert (from_index.references(), from_index.message_id, from_index.is_reply) == \
            (from_facts.references(), from_facts.message_id, from_facts.is_reply)


@given(st.sets(st.integers(0, SEGMENT_DOCS - 1)))
def test_bit_flags_select_exactly_the_set_offsets(offsets):
    bits = sum(1 << offset for offset in offsets)
    flags = bit_flags(bits)
    assert len(flags) == SEGMENT_DOCS and set(flags) <= {0, 1}
    assert [offset for offset in range(SEGMENT_DOCS) if flags[offset]] == sorted(offsets) == bit_offsets(bits)
