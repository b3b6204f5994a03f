"""IDLE is pushed by the store: a committed change reaches an idling session at the
next reactor turn, without waiting for the poll interval (the session's clock is a
Clock that these tests advance by 0 only)."""

from __future__ import annotations

import time

import pytest
from twisted.internet import reactor
from twisted.internet.task import deferLater

from imap_real_store import USER, RealStoreClient, open_store

MESSAGE = b"From: a@example.test\r\nSubject: push\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path):
    yield from open_store(tmp_path)


async def pushed(client: RealStoreClient, expected: bytes) -> None:
    """Run the session clock's due calls (advance 0: no poll can come due) until
    ``expected`` was written (deadline 30 s of real time for the store's commit)."""
    collected = b""
    deadline = time.monotonic() + 30
    while expected not in collected:
        assert time.monotonic() < deadline, collected
        client.session.ctx.clock.advance(0)
        await deferLater(reactor, 0.005, lambda: None)
        collected += client.out.take()


async def idling(store) -> RealStoreClient:
    client = RealStoreClient(store)
    await client.login()
    await client.cmd(b"s SELECT INBOX")
    client.session.data_received(b"i IDLE\r\n")
    assert client.out.take() == b"+ idling\r\n"
    return client


async def test_a_delivery_is_pushed_at_commit(store):
    client = await idling(store)
    await store.deliver([USER], MESSAGE)
    await pushed(client, b"* 1 EXISTS\r\n")


async def test_another_sessions_flag_change_is_pushed(store):
    client = await idling(store)
    await store.append(USER, "INBOX", MESSAGE)
    await pushed(client, b"* 1 EXISTS\r\n")
    other = RealStoreClient(store)
    await other.login()
    await other.cmd(b"s SELECT INBOX")
    assert b"t OK" in await other.cmd(b"t STORE 1 +FLAGS (\\Flagged)")
    await pushed(client, b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n")  # recent in the idler, told first


async def test_done_and_a_lost_connection_stop_the_push(store):
    client = await idling(store)
    watchers = store._watchers._by_user
    assert sum(len(callbacks) for callbacks in watchers.values()) == 1
    assert await client.cmd(b"DONE", tag=b"i") == b"i OK IDLE terminated\r\n"
    assert watchers == {}
    await store.deliver([USER], MESSAGE)
    client.session.ctx.clock.advance(0)
    assert client.out.take() == b""

    gone = await idling(store)
    gone.session.connection_lost()
    # The next timer tick of the dead IDLE lets go of the store's callback.
    gone.session.ctx.clock.advance(gone.session.limits.imap_idle_poll_interval)
    assert watchers == {}
