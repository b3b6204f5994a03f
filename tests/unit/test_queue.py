"""The outbound queue: its store on a real LMDB environment, the retry and
bounce rules, MX ordering, the DSN report, and the scheduler driven by a Clock.

The remote MTAs are the one thing faked here (the e2e tests use real ones):
the scheduler is given an attempt runner that answers from a script.
"""

from __future__ import annotations

import email
import email.policy
import queue
import random
import time

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from mailserverd.limits import Limits
from mailserverd.queue import dsn, policy
from mailserverd.queue.attempt import AttemptOutcome
from mailserverd.queue.routing import RouteError, order_exchanges
from mailserverd.queue.scheduler import QueueScheduler
from mailserverd.smtp.client import OutboundRecipient, local_reply
from mailserverd.store.queuestore import QueueStore
from mailserverd.store.types import QueuedMessage, QueueEntry

LIMITS = Limits(store_map_size=64 << 20)
CONTENT = b"From: alice@example.test\r\nSubject: hello\r\n\r\nbody\r\n"


class ReactorThread:
    """What ``reactor.callFromThread`` does for the daemon: the store's writer
    hands each result over, and the test runs it on its own thread, so the
    scheduler and the Clock are only ever touched by one thread."""

    def __init__(self):
        self._calls: queue.Queue = queue.Queue()

    def __call__(self, function, *args) -> None:
        self._calls.put((function, args))

    def run_until(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            assert remaining > 0, "condition not reached"
            try:
                function, args = self._calls.get(timeout=remaining)
            except queue.Empty:
                continue
            function(*args)


FIRE = ReactorThread()


def wait(deferred):
    """Run handed-over results until ``deferred`` has fired; return its result."""
    box = []
    deferred.addBoth(box.append)
    FIRE.run_until(lambda: box)
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def poll(predicate):
    FIRE.run_until(predicate)


def open_queue(path) -> QueueStore:
    queue_store = QueueStore.open(str(path), LIMITS, fire=FIRE)
    queue_store.start()
    return queue_store


@pytest.fixture
def store(tmp_path):
    queue_store = open_queue(tmp_path)
    yield queue_store
    wait(queue_store.stop())


def entries_for(queue_id, *recipients, when=100.0):
    return [QueueEntry(queue_id=queue_id, index=i, recipient=r, next_attempt=when)
            for i, r in enumerate(recipients)]


# --- the store


def test_enqueue_is_read_back_and_only_due_entries_come_out(store):
    message = QueuedMessage("AAAA00000001", "alice@example.test", arrival=100.0, size=len(CONTENT), recipients=2)
    wait(store.enqueue(message, entries_for("AAAA00000001", "b@x.test", "c@y.test"), CONTENT))
    later = QueuedMessage("AAAA00000002", "alice@example.test", arrival=100.0, size=1, recipients=1)
    wait(store.enqueue(later, entries_for("AAAA00000002", "d@z.test", when=500.0), b"x\r\n"))
    assert store.get_message("AAAA00000001") == message
    assert store.get_content("AAAA00000001") == CONTENT
    assert [e.recipient for e in store.due(100.0, 10)] == ["b@x.test", "c@y.test"]
    assert store.due(99.0, 10) == []
    assert len(store.due(100.0, 1)) == 1  # the active window bounds what is read
    assert [e.recipient for e in store.due(100.0, 10, skip={("AAAA00000001", 0)})] == ["c@y.test"]
    assert store.next_due(100.0) == 500.0


def test_update_moves_entries_in_the_schedule_and_deletes_finished_messages(store, tmp_path):
    message = QueuedMessage("BBBB00000001", "alice@example.test", 100.0, len(CONTENT), 2)
    first, second = entries_for("BBBB00000001", "b@x.test", "c@y.test")
    wait(store.enqueue(message, [first, second], CONTENT))
    from dataclasses import replace
    wait(store.update([replace(first, state="delivered"), replace(second, state="deferred", next_attempt=400.0)]))
    assert [e.state for e in store.entries("BBBB00000001")] == ["delivered", "deferred"]
    assert store.due(399.0, 10) == [] and store.next_due(100.0) == 400.0
    wait(store.update([replace(second, state="bounced")]))
    assert store.get_message("BBBB00000001") is None and store.entries("BBBB00000001") == []
    assert store.list_messages() == []


def test_the_queue_survives_reopening(tmp_path):
    queue = open_queue(tmp_path)
    message = QueuedMessage("CCCC00000001", "", 1.0, 3, 1)
    wait(queue.enqueue(message, entries_for("CCCC00000001", "a@b.test", when=1.0), b"x\r\n"))
    wait(queue.stop())
    again = QueueStore.open(str(tmp_path), LIMITS, fire=FIRE)
    try:
        [(found, entries)] = again.list_messages()
        assert found == message and entries[0].recipient == "a@b.test"
    finally:
        again.close()


# --- retry and bounce rules


def test_backoff_doubles_from_the_minimum_up_to_the_maximum():
    assert [policy.retry_delay(n, 300, 14400) for n in (1, 2, 3, 6, 7, 50)] == \
        [300, 600, 1200, 9600, 14400, 14400]


def test_judging_replies():
    message = QueuedMessage("D", "a@b.test", arrival=0.0, size=1, recipients=1)
    entry = QueueEntry("D", 0, "c@d.test")
    deferred = policy.judge(entry, message, local_reply(451, "4.4.1", "down"), "mx", 10.0, LIMITS)
    assert (deferred.state, deferred.attempts, deferred.next_attempt) == ("deferred", 1, 310.0)
    again = policy.judge(deferred, message, local_reply(451, "4.4.1", "down"), "mx", 400.0, LIMITS)
    assert again.next_attempt == 1000.0
    assert policy.judge(entry, message, local_reply(550, "5.1.1", "no"), "mx", 1.0, LIMITS).state == "bounced"
    assert policy.judge(entry, message, local_reply(250, "2.0.0", "ok"), "mx", 1.0, LIMITS).state == "delivered"
    expired = policy.judge(entry, message, local_reply(451, "4.4.1", "down"), "mx", 432000.0, LIMITS)
    assert expired.state == "bounced" and "delivery time expired" in expired.last_reply
    assert dsn.status_of(expired) == "4.4.7"


def test_no_report_for_a_null_sender_or_notify_never():
    entry = QueueEntry("E", 0, "c@d.test")
    assert not policy.wants_failure_report(QueuedMessage("E", "", 0.0, 1, 1), entry)
    sender = QueuedMessage("E", "a@b.test", 0.0, 1, 1)
    assert policy.wants_failure_report(sender, entry)
    assert not policy.wants_failure_report(sender, QueueEntry("E", 0, "c@d.test", notify=("NEVER",)))
    assert not policy.wants_failure_report(sender, QueueEntry("E", 0, "c@d.test", notify=("DELAY",)))


# --- MX order


def test_mx_hosts_by_preference_shuffled_among_equals():
    records = [(20, "c.test"), (10, "a.test"), (10, "b.test"), (30, "d.test")]
    orders = {tuple(order_exchanges("x.test", records, random.Random(seed))) for seed in range(20)}
    assert orders == {("a.test", "b.test", "c.test", "d.test"), ("b.test", "a.test", "c.test", "d.test")}


def test_null_mx_is_refused_with_556_5_1_10():
    with pytest.raises(RouteError) as caught:
        order_exchanges("x.test", [(0, "")], random.Random(1))
    assert (caught.value.reply.code, caught.value.reply.enhanced) == (556, "5.1.10")


# --- the report


def test_failure_report_is_a_multipart_report_python_parses():
    message = QueuedMessage("F", "alice@example.test", 0.0, len(CONTENT), 1, envid="env-1", ret="FULL")
    entry = QueueEntry("F", 0, "bob@remote.test", orcpt="rfc822;bob@remote.test", state="bounced",
                       last_reply="550 5.1.1 no such user", relay="mx.remote.test[127.0.0.1]:25",
                       last_attempt=5.0)
    raw = dsn.failure_report(message, CONTENT, [entry], "mx.example.test", 10.0)
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    [status] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    per_message, per_recipient = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "env-1"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.test[127.0.0.1]:25"
    [original] = [p for p in report.walk() if p.get_content_type() == "message/rfc822"]  # RET=FULL
    assert original.get_payload()[0]["Subject"] == "hello"


# --- the scheduler


class ScriptedAttempts:
    """Answers each attempt with the next reply of ``script`` (the last repeats)."""

    def __init__(self, *script):
        self.script = list(script)
        self.calls: list[tuple[str, str, list[str]]] = []

    def attempt(self, message, content, domain, entries):
        self.calls.append((message.queue_id, domain, [e.recipient for e in entries]))
        reply = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return succeed(AttemptOutcome({e.index: reply for e in entries}, relay=f"mx.{domain}"))


def scheduler_with(store, attempts, limits=LIMITS):
    clock = Clock()
    clock.advance(1000)
    scheduler = QueueScheduler(store, attempts, clock, limits, "mx.example.test")
    scheduler.start()
    return scheduler, clock


def submit(scheduler, queue_id, *rcpts, sender="alice@example.test"):
    return wait(scheduler.submit(queue_id, sender, [OutboundRecipient(r) for r in rcpts], CONTENT))


def settle(scheduler, clock):
    clock.advance(0)
    poll(lambda: scheduler.active == 0)


def test_first_attempt_at_once_then_backoff_then_delivered(store):
    attempts = ScriptedAttempts(local_reply(451, "4.4.1", "down"), local_reply(250, "2.0.0", "ok"))
    scheduler, clock = scheduler_with(store, attempts)
    submit(scheduler, "G00000000001", "b@x.test")
    settle(scheduler, clock)
    assert len(attempts.calls) == 1
    [entry] = store.entries("G00000000001")
    assert (entry.state, entry.next_attempt) == ("deferred", 1300.0)
    clock.advance(299)
    settle(scheduler, clock)
    assert len(attempts.calls) == 1  # not before its time
    clock.advance(1)
    settle(scheduler, clock)
    assert len(attempts.calls) == 2
    poll(lambda: store.get_message("G00000000001") is None)
    outcomes = {result: scheduler.metrics.registry.get_sample_value(
        "mailserverd_outbound_recipients_total", {"result": result})
        for result in ("deferred", "delivered", "bounced")}
    assert outcomes == {"deferred": 1, "delivered": 1, "bounced": None}


def test_recipients_are_grouped_by_domain_and_judged_each_on_its_own(store):
    attempts = ScriptedAttempts(local_reply(250, "2.0.0", "ok"))
    scheduler, clock = scheduler_with(store, attempts)
    submit(scheduler, "H00000000001", "a@x.test", "b@x.test", "c@y.test")
    settle(scheduler, clock)
    assert sorted((domain, tuple(rcpts)) for _, domain, rcpts in attempts.calls) == \
        [("x.test", ("a@x.test", "b@x.test")), ("y.test", ("c@y.test",))]


def test_a_bounce_is_queued_to_the_sender_in_the_same_write(store):
    attempts = ScriptedAttempts(local_reply(550, "5.1.1", "no such user"))
    scheduler, clock = scheduler_with(store, attempts)
    submit(scheduler, "I00000000001", "b@x.test")
    clock.advance(0)
    poll(lambda: store.get_message("I00000000001") is None)
    [(bounce, [entry])] = store.list_messages()
    assert bounce.sender == "" and entry.recipient == "alice@example.test"
    assert b"multipart/report" in store.get_content(bounce.queue_id)


def test_a_bounce_that_bounces_is_dropped(store):
    attempts = ScriptedAttempts(local_reply(550, "5.1.1", "no such user"))
    scheduler, clock = scheduler_with(store, attempts)
    submit(scheduler, "J00000000001", "b@x.test", sender="")
    settle(scheduler, clock)
    poll(lambda: store.list_messages() == [])


def test_per_destination_concurrency_and_the_active_window(store):
    pending = []

    class Held:
        def attempt(self, message, content, domain, entries):
            from twisted.internet.defer import Deferred
            d = Deferred()
            pending.append((d, entries))
            return d

    limits = Limits(store_map_size=64 << 20, queue_destination_concurrency=2, queue_active_max=3)
    scheduler, clock = scheduler_with(store, Held(), limits)
    for n in range(5):
        submit(scheduler, f"K0000000000{n}", f"u{n}@x.test")
    clock.advance(0)
    assert len(pending) == 2 and scheduler.active == 2  # two to x.test at once
    d, entries = pending.pop(0)
    d.callback(AttemptOutcome({entries[0].index: local_reply(250, "2.0.0", "ok")}))
    poll(lambda: scheduler.active == 1)
    clock.advance(0)
    assert len(pending) == 2


def test_restart_resumes_unfinished_recipients(tmp_path):
    queue = open_queue(tmp_path)
    first = QueueScheduler(queue, ScriptedAttempts(local_reply(451, "4.4.1", "down")), Clock(), LIMITS, "h")
    first._clock.advance(1000)
    first.start()
    submit(first, "L00000000001", "b@x.test")
    settle(first, first._clock)
    first.stop()
    wait(queue.stop())
    queue = open_queue(tmp_path)
    try:
        attempts = ScriptedAttempts(local_reply(250, "2.0.0", "ok"))
        second, clock = scheduler_with(queue, attempts)
        clock.advance(300)
        settle(second, clock)
        assert attempts.calls == [("L00000000001", "x.test", ["b@x.test"])]
        poll(lambda: queue.list_messages() == [])
    finally:
        wait(queue.stop())


# --- the operator's changes (the CLI's flush, retry, hold, release, remove)


def test_hold_release_reschedule_and_remove(store):
    from mailserverd.store.errors import NotFound

    message = QueuedMessage("M00000000001", "alice@example.test", 100.0, len(CONTENT), 2)
    wait(store.enqueue(message, entries_for("M00000000001", "b@x.test", "c@y.test", when=900.0), CONTENT))
    counted = store.control_count()
    assert wait(store.hold("M00000000001")) == 2
    assert [e.state for e in store.entries("M00000000001")] == ["held", "held"]
    assert store.due(10_000.0, 10) == [] and store.next_due(0.0) is None  # out of the schedule
    assert wait(store.reschedule(None, 50.0)) == 0  # a flush leaves held mail alone
    assert wait(store.release("M00000000001", 200.0)) == 2
    assert [(e.state, e.next_attempt) for e in store.due(200.0, 10)] == [("deferred", 200.0)] * 2
    assert wait(store.reschedule("M00000000001", 150.0)) == 2
    assert [e.next_attempt for e in store.due(150.0, 10)] == [150.0, 150.0]
    assert store.control_count() == counted + 4
    with pytest.raises(NotFound):
        wait(store.hold("M00000000404"))
    assert wait(store.remove("M00000000001")) == 2
    assert store.list_messages() == [] and store.due(10_000.0, 10) == []
    with pytest.raises(NotFound):
        wait(store.remove("M00000000001"))


def test_recipients_are_counted_by_state_for_the_metrics(store):
    assert store.count_by_state() == {}
    wait(store.enqueue(QueuedMessage("C00000000001", "alice@example.test", 100.0, len(CONTENT), 2),
                       entries_for("C00000000001", "b@x.test", "c@y.test"), CONTENT))
    wait(store.enqueue(QueuedMessage("C00000000002", "alice@example.test", 100.0, len(CONTENT), 1),
                       entries_for("C00000000002", "d@z.test"), CONTENT))
    assert store.count_by_state() == {"active": 3}
    wait(store.hold("C00000000002"))
    assert store.count_by_state() == {"active": 2, "held": 1}


def test_an_entry_held_during_its_attempt_stays_held_unless_the_attempt_finished_it(store):
    from dataclasses import replace

    message = QueuedMessage("N00000000001", "alice@example.test", 100.0, len(CONTENT), 2)
    first, second = entries_for("N00000000001", "b@x.test", "c@y.test")
    wait(store.enqueue(message, [first, second], CONTENT))
    wait(store.hold("N00000000001"))
    wait(store.update([replace(first, state="deferred", next_attempt=400.0, attempts=1),
                       replace(second, state="delivered", attempts=1)]))
    assert [(e.state, e.attempts) for e in store.entries("N00000000001")] == [("held", 1), ("delivered", 1)]


def test_the_scheduler_notices_the_operators_changes_at_once(store):
    attempts = ScriptedAttempts(local_reply(451, "4.4.1", "down"))
    limits = Limits(store_map_size=64 << 20, queue_scan_interval=3600, queue_retry_min=3000)
    scheduler, clock = scheduler_with(store, attempts, limits)
    submit(scheduler, "P00000000001", "b@x.test")
    settle(scheduler, clock)
    poll(lambda: store.entries("P00000000001")[0].state == "deferred")
    assert len(attempts.calls) == 1
    clock.advance(1)
    settle(scheduler, clock)
    assert len(attempts.calls) == 1  # due in 3000 s
    wait(store.reschedule(None, clock.seconds()))  # as `queue flush` does from its own process
    clock.advance(limits.queue_control_interval)
    settle(scheduler, clock)
    assert len(attempts.calls) == 2
    scheduler.stop()


# --- delay notices and success reports


def test_one_delay_notice_after_the_warning_time_unless_notify_says_otherwise():
    limits = Limits(store_map_size=64 << 20, queue_delay_warning=3600)
    message = QueuedMessage("Q", "alice@example.test", arrival=0.0, size=1, recipients=1)
    deferred = QueueEntry("Q", 0, "b@x.test", state="deferred")
    assert not policy.wants_delay_report(message, deferred, 3599.0, limits)
    assert policy.wants_delay_report(message, deferred, 3600.0, limits)
    from dataclasses import replace
    assert not policy.wants_delay_report(message, replace(deferred, delay_reported=True), 9999.0, limits)
    assert policy.wants_delay_report(message, replace(deferred, notify=("DELAY",)), 3600.0, limits)
    assert not policy.wants_delay_report(message, replace(deferred, notify=("FAILURE",)), 3600.0, limits)
    assert not policy.wants_delay_report(replace(message, sender=""), deferred, 3600.0, limits)
    never = Limits(store_map_size=64 << 20, queue_delay_warning=0)
    assert not policy.wants_delay_report(message, deferred, 1e9, never)


def test_success_reports_delivered_here_relayed_to_a_peer_without_dsn_none_with_it():
    message = QueuedMessage("S", "alice@example.test", arrival=0.0, size=1, recipients=1)
    asked = QueueEntry("S", 0, "b@x.test", notify=("SUCCESS",), state="delivered")
    assert policy.success_action(message, asked, "local", False) == "delivered"
    assert policy.success_action(message, asked, "mx.x.test[127.0.0.1]:25", False) == "relayed"
    assert policy.success_action(message, asked, "mx.x.test[127.0.0.1]:25", True) == ""
    assert policy.success_action(message, QueueEntry("S", 0, "b@x.test", state="delivered"), "local", False) == ""


@pytest.mark.parametrize("action, status, subject", [
    ("delayed", "4.4.1", "Delayed Mail (still being retried)"),
    ("relayed", "2.0.0", "Successful Mail Delivery Report"),
    ("delivered", "2.0.0", "Successful Mail Delivery Report"),
])
def test_delay_and_success_reports_parse_with_their_action(action, status, subject):
    message = QueuedMessage("R", "alice@example.test", 0.0, len(CONTENT), 1, ret="FULL")
    reply = "451 4.4.1 cannot connect" if action == "delayed" else "250 2.0.0 ok"
    entry = QueueEntry("R", 0, "bob@remote.test", last_reply=reply, relay="local", last_attempt=5.0)
    raw = dsn.report(action, message, CONTENT, [entry], "mx.example.test", 10.0, retry_until=86400.0)
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert report["Subject"] == subject
    [status_part] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    _, block = status_part.get_payload()
    assert (block["Action"], block["Status"]) == (action, status)
    assert block["Remote-MTA"] is None  # "local" is no MTA name
    assert (block["Will-Retry-Until"] is not None) == (action == "delayed")
    # RFC 3461 §4.3: RET=FULL returns the message with failures only
    assert [p.get_content_type() for p in report.walk()][-1] == "text/rfc822-headers"


def test_the_scheduler_sends_one_delay_notice_then_the_bounce(store):
    limits = Limits(store_map_size=64 << 20, queue_retry_min=10, queue_retry_max=10, queue_delay_warning=15,
                    queue_lifetime=35)
    attempts = ScriptedAttempts(local_reply(451, "4.4.1", "down"))
    scheduler, clock = scheduler_with(store, attempts, limits)
    submit(scheduler, "T00000000001", "b@x.test")
    for _ in range(5):
        settle(scheduler, clock)
        clock.advance(10)
    settle(scheduler, clock)
    poll(lambda: store.get_message("T00000000001") is None)
    reports = [store.get_content(m.queue_id) for m, _ in store.list_messages()]
    assert [b"Action: delayed" in raw for raw in reports].count(True) == 1
    assert [b"Action: failed" in raw for raw in reports].count(True) == 1
    scheduler.stop()


# --- fresh mail apart from retries; rate per destination


def test_tried_entries_wait_in_the_retry_lane(store):
    from dataclasses import replace

    message = QueuedMessage("U00000000001", "alice@example.test", 100.0, len(CONTENT), 1)
    [entry] = entries_for("U00000000001", "b@x.test")
    wait(store.enqueue(message, [entry], CONTENT))
    assert len(store.due(100.0, 10, lane="fresh")) == 1 and store.due(100.0, 10, lane="retry") == []
    wait(store.update([replace(entry, state="deferred", attempts=1, next_attempt=200.0)]))
    assert store.due(500.0, 10, lane="fresh") == [] and len(store.due(500.0, 10, lane="retry")) == 1
    assert store.next_due(100.0) == 200.0


def test_fresh_mail_does_not_wait_behind_a_deferred_backlog(store):
    pending = []

    class Held:
        def attempt(self, message, content, domain, entries):
            from twisted.internet.defer import Deferred
            d = Deferred()
            pending.append((d, message.queue_id, entries))
            return d

    for n in range(20):  # a backlog due long ago, each tried once before
        queue_id = f"V{n:011d}"
        entry = QueueEntry(queue_id, 0, f"u{n}@x.test", state="deferred", attempts=1, next_attempt=1.0)
        wait(store.enqueue(QueuedMessage(queue_id, "alice@example.test", 1.0, len(CONTENT), 1), [entry], CONTENT))
    limits = Limits(store_map_size=64 << 20, queue_active_max=4, queue_destination_concurrency=100)
    scheduler, clock = scheduler_with(store, Held(), limits)
    clock.advance(0)
    assert len(pending) == 4  # the window is full of retries
    submit(scheduler, "W00000000001", "fresh@y.test")
    d, _, entries = pending.pop(0)
    d.callback(AttemptOutcome({entries[0].index: local_reply(451, "4.4.1", "still down")}))
    poll(lambda: scheduler.active == 3)
    clock.advance(0)
    assert pending[-1][1] == "W00000000001"  # the freed place went to the fresh message
    scheduler.stop()


def test_attempts_per_destination_per_minute_are_limited(store):
    attempts = ScriptedAttempts(local_reply(250, "2.0.0", "ok"))
    limits = Limits(store_map_size=64 << 20, queue_destination_rate=2)
    scheduler, clock = scheduler_with(store, attempts, limits)
    for n in range(3):
        submit(scheduler, f"X0000000000{n}", f"u{n}@x.test")
    submit(scheduler, "X00000000009", "v@y.test")
    settle(scheduler, clock)
    assert sorted(domain for _, domain, _ in attempts.calls) == ["x.test", "x.test", "y.test"]
    clock.advance(59)
    settle(scheduler, clock)
    assert len(attempts.calls) == 3
    clock.advance(1)
    settle(scheduler, clock)
    assert len(attempts.calls) == 4
    scheduler.stop()
