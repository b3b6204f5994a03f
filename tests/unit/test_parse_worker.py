"""The store's worker processes: facts of a message, and calls other packages make."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from mailserverd.mail.facts import compute_facts
from mailserverd.search.index import entry_from_wire, index_entry, pair_indexes
from mailserverd.store import records
from mailserverd.store.parseworker import ParseWorker, prepare_message

RAW = (b"From: A <a@example.org>\r\nSubject: =?utf-8?q?K=C3=B6ln?=\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\nStra\xc3\x9fe and caf\xc3\xa9\r\n")


@pytest.fixture
def worker():
    started = ParseWorker("test-worker", nice=5)
    yield started
    started.stop()


def test_facts_in_the_child_are_those_of_this_process(worker):
    assert worker.parse(RAW) == prepare_message(RAW)
    assert records.decode_facts(worker.parse(RAW)[1]) == compute_facts(RAW)


def _sorted(entry):
    """An index entry with its pairs in order (a set's order differs between processes)."""
    stored, terms, pairs, sortable = entry
    return (stored, terms, {name: sorted(zip(*[iter(pair_indexes(found))] * 2)) for name, found in pairs.items()},
            sortable)


def _nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])  # field 19, after comm


def test_a_call_runs_in_the_child_at_the_lower_priority(worker):
    facts = compute_facts(RAW)
    reply = worker.call("mailserverd.search.index:index_entry_wire", RAW, facts, 1 << 20)
    assert _sorted(entry_from_wire(reply)) == _sorted(index_entry(RAW, facts, 1 << 20))
    assert _nice_of(worker._process.pid) == _nice_of(os.getpid()) + 5


def test_only_this_package_is_called(worker):
    with pytest.raises(ValueError):
        worker.call("os:getpid")  # refused in the child, then in this process
    assert worker.parse(RAW) == prepare_message(RAW)  # the child still answers


def test_a_dead_child_costs_only_speed(worker):
    worker.parse(RAW)
    worker._process.kill()
    worker._process.wait()
    assert worker.parse(RAW) == prepare_message(RAW)  # this process, then a new child
    assert worker.parse(RAW) == prepare_message(RAW)


def test_a_child_whose_parent_is_gone_exits_quietly():
    child = subprocess.Popen([sys.executable, "-m", "mailserverd.store.parseworker"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone, as when the daemon was killed
    child.stdin.write(struct.pack(">I", len(RAW) + 1) + b"F" + RAW)
    child.stdin.close()
    assert child.wait(timeout=60) == 0
    assert child.stderr.read() == b""  # no traceback in the daemon's log
