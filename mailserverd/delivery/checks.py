"""The inbound checks run between the end of DATA and the reply: the orchestrator.

:class:`InboundChecks` runs SPF (MAIL FROM and HELO), DKIM, the DMARC policy
lookup and the DNSBL lookups of one message as one job of a bounded thread
pool (they block on DNS and crypto, so never on the reactor thread; DNS
answers are cached for their TTL), then, back on the
reactor thread, combines them: the DMARC result, the spam score, the
Authentication-Results and X-Spam-* fields, and what to do with the message
(:class:`Verdict`). A check that breaks is logged and counted as
``temperror``; the whole never fails, so mail is never lost to a bug here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mailserverd.delivery import authresults
from mailserverd.delivery import dkim as dkim_check
from mailserverd.delivery import dmarc as dmarc_check
from mailserverd.delivery import spam
from mailserverd.delivery import spf as spf_check
from mailserverd.delivery.dns import BlockingResolver
from mailserverd.errors import MailError
from mailserverd.mail.facts import parse_address_list
from mailserverd.mail.mime import header_end, header_fields

log = Logger(namespace="mailserverd.delivery")

DMARC_REJECT_ACTIONS = ("reject", "quarantine")
_SEVERITY = {"deliver": 0, "junk": 1, "reject": 2}


@dataclass(frozen=True)
class InboundSettings:
    """What the checks need from the configuration (``[inbound]``, ``[dns]``).

    ``authserv_id`` is our name in Authentication-Results (the hostname);
    ``resolver`` the ``(ip, port)`` to ask, ``None`` for the system's;
    ``dns_timeout`` seconds per lookup. A spam score at or above
    ``junk_threshold`` sends the message to Junk, at or above
    ``reject_threshold`` refuses it. ``dmarc_reject_action`` is what a DMARC
    ``p=reject`` failure gets: ``"reject"`` (550 5.7.1) or ``"quarantine"``
    (Junk). ``pool_size`` bounds the threads running checks.
    """

    authserv_id: str
    resolver: tuple[str, int] | None
    dns_timeout: float
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    dmarc_reject_action: str = "reject"
    dnsbl_zones: tuple[str, ...] = ()
    junk_threshold: float = 5.0
    reject_threshold: float = 10.0
    pool_size: int = 4
    dkim_signatures_max: int = 8
    spf_time_limit: float = 20.0
    dns_cache_entries: int = 10000
    spf_cache_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.dmarc_reject_action not in DMARC_REJECT_ACTIONS:
            raise ValueError(f"dmarc_reject_action must be one of {DMARC_REJECT_ACTIONS}")
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")


@dataclass(frozen=True)
class Envelope:
    """The SMTP transaction around a message: client address, HELO name,
    MAIL FROM (``""`` for the null reverse-path), the recipients, and the
    local ``users`` they reach (each classified against its own spam model)."""

    client_ip: str
    helo: str
    mail_from: str
    recipients: tuple[str, ...]
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The outcome of the checks for one message.

    ``message``: what to store: our Authentication-Results, X-Spam-Score and
    X-Spam-Status fields on top, forged Authentication-Results claiming our
    authserv-id removed, otherwise byte-identical. ``action``: ``"deliver"``,
    ``"junk"`` or ``"reject"``; ``reply`` is the 550 5.7.1 to send for
    ``"reject"`` (else ``None``). ``results`` holds each check's result for
    logs and tests (``spf``, ``spf_helo``, ``dkim`` (a list), ``dmarc``,
    ``dmarc_disposition``, ``dnsbl`` (listed zones), ``tests``, ``from_domain``,
    ``bayes`` ({user: spam probability})).

    ``by_user`` holds the Verdict of each user the learning classifier had a
    model for (its X-Spam-* fields and action differ per user); the others
    get this one. ``"reject"`` here means every user's verdict rejects; one
    user's own "reject" among users who take the message means Junk.
    """

    message: bytes
    action: str
    score: float
    reply: MailError | None
    results: dict = field(default_factory=dict)
    by_user: dict = field(default_factory=dict)

    def for_user(self, user: str) -> "Verdict":
        """The verdict for ``user``: its own, or the message's."""
        return self.by_user.get(user, self)


def from_domain_of(message: bytes) -> tuple[str, bool]:
    """The RFC5322.From domain and whether it is usable for DMARC.

    Returns ``(domain, True)`` for one From field whose addresses share one
    domain; ``("", True)`` without a From address; ``("", False)`` for several
    From fields or domains (RFC 7489 §6.6.1: no single author domain).
    """
    end, _body = header_end(message, 0)
    fields = header_fields(message, 0, end, frozenset({b"from"}))
    if len(fields) > 1:
        return "", False
    if not fields:
        return "", True
    hosts = {bytes(entry[3]).decode("utf-8", "replace").rstrip(".").lower()
             for entry in parse_address_list(fields[0][1]) or [] if entry[3]}
    if len(hosts) > 1:
        return "", False
    return (hosts.pop() if hosts else ""), True


def _run_jobs(jobs: list[tuple]) -> tuple[dict, list]:
    """Run the checks of one message one after the other, in a pool thread.

    One pool job per message, not one per check: with answers cached, a
    check takes well under a millisecond, and each thread hop costs the
    reactor more than that. Returns ``(outcomes by name, [(name, Failure)])``;
    a check that raises gets its fallback outcome.
    """
    outcomes: dict = {}
    failures: list = []
    for name, fallback, function, args in jobs:
        try:
            outcomes[name] = function(*args)
        except Exception:
            outcomes[name] = fallback
            failures.append((name, Failure()))
    return outcomes, failures


class InboundChecks:
    """Runs the inbound checks for each received message (see the module docstring).

    Takes the :class:`InboundSettings`, the reactor (the global one by
    default) and the learning ``classifier`` (a
    :class:`mailserverd.delivery.bayes.SpamClassifier`, or None for none),
    run in the same pool job as the other checks. Call :meth:`start` before
    the first :meth:`check` (it is safe from ``reactor.callWhenRunning``) and
    :meth:`stop` at shutdown.
    """

    def __init__(self, settings: InboundSettings, reactor: Any = None, classifier: Any = None):
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        self.settings = settings
        self.classifier = classifier
        self._reactor = reactor
        self._resolver = BlockingResolver(settings.resolver, settings.dns_timeout,
                                          settings.dns_cache_entries)
        self._spf = spf_check.SPFCache(settings.dns_cache_entries if settings.spf_cache_seconds else 0,
                                       settings.spf_cache_seconds)
        self._pool = ThreadPool(minthreads=0, maxthreads=settings.pool_size, name="inbound-checks")

    def start(self) -> None:
        """Start the thread pool (at most ``pool_size`` threads)."""
        self._pool.start()

    def stop(self) -> None:
        """Stop the thread pool, waiting for running checks to finish."""
        self._pool.stop()

    def check(self, message: bytes, envelope: Envelope) -> Deferred:
        """Check one message; the Deferred fires with a :class:`Verdict`, never fails.

        ``message`` is the raw message (CRLF line ends, dot-unstuffed, without
        our Received field). A DNS problem becomes ``temperror`` for that
        check; an unexpected exception is logged and the message delivered.
        """
        try:
            from_domain, from_ok = from_domain_of(message)
            jobs = self._jobs(message, envelope, from_domain)
        except Exception:
            log.failure("inbound-error client={ip}", ip=envelope.client_ip)
            return succeed(self._fallback(message))
        ran = deferToThreadPool(self._reactor, self._pool, _run_jobs, jobs)
        ran.addCallback(self._log_job_errors)
        ran.addCallback(self._combine, message, envelope, from_domain, from_ok)
        ran.addErrback(self._failed, message, envelope)
        return ran

    # --- the blocking part, in the pool

    def _jobs(self, message: bytes, envelope: Envelope, from_domain: str) -> list[tuple]:
        """Every enabled check as ``(name, fallback, function, args)``: named
        ``spf_mailfrom``, ``spf_helo``, ``dkim``, ``dmarc``, ``dnsbl:<zone>``;
        ``fallback`` is the outcome used if the function raises."""
        settings, resolver = self.settings, self._resolver
        jobs: list[tuple] = []
        if settings.spf:
            for identity in ("mailfrom", "helo") if envelope.mail_from else ("helo",):
                fallback = spf_check.SPFResult("temperror", identity, "", "internal error")
                jobs.append(("spf_" + identity, fallback, self._spf.check, (
                    resolver, envelope.client_ip, identity, envelope.mail_from, envelope.helo,
                    settings.spf_time_limit)))
        if settings.dkim:
            jobs.append(("dkim", [], dkim_check.verify_signatures,
                         (message, resolver, settings.dkim_signatures_max)))
        if settings.dmarc and from_domain:
            jobs.append(("dmarc", dmarc_check.PolicyLookup(None, temperror=True),
                         dmarc_check.discover_policy, (resolver, from_domain)))
        for zone in settings.dnsbl_zones:
            jobs.append(("dnsbl:" + zone, None, spam.dnsbl_listed, (resolver, envelope.client_ip, zone)))
        if self.classifier is not None and envelope.users:
            jobs.append(("bayes", {}, self.classifier.classify, (message, envelope.users)))
        return jobs

    def _log_job_errors(self, ran: tuple[dict, list]) -> dict:
        """Log the checks that raised (on the reactor thread); return the outcomes."""
        outcomes, failures = ran
        for name, failure in failures:
            log.failure("inbound-check-error check={check}", failure, check=name)
        return outcomes

    # --- combining, on the reactor thread (pure)

    def _combine(self, outcomes: dict, message: bytes, envelope: Envelope,
                 from_domain: str, from_ok: bool) -> Verdict:
        """Turn the checks' outcomes into the :class:`Verdict` (pure, reactor thread)."""
        settings = self.settings
        methods: list[authresults.MethodResult] = []
        results: dict = {"from_domain": from_domain}
        tests: list[str] = []
        helo = outcomes.get("spf_helo")
        mailfrom = outcomes.get("spf_mailfrom", helo)  # RFC 7208 §2.4: null path -> HELO
        if helo is not None:
            results["spf"], results["spf_helo"] = mailfrom.result, helo.result
            if envelope.mail_from:
                methods.append(authresults.MethodResult(
                    "spf", mailfrom.result, (("smtp.mailfrom", envelope.mail_from),)))
            methods.append(authresults.MethodResult("spf", helo.result, (("smtp.helo", envelope.helo),)))
            tests += {"fail": ["SPF_FAIL"], "softfail": ["SPF_SOFTFAIL"],
                      "permerror": ["SPF_PERMERROR"]}.get(mailfrom.result, [])
            if helo.result == "fail" and envelope.mail_from:
                tests.append("SPF_HELO_FAIL")
        if settings.dkim:
            signatures = outcomes.get("dkim", [])
            results["dkim"] = [sig.result for sig in signatures] or ["none"]
            methods += _dkim_methods(signatures)
            if signatures and all(sig.result in ("fail", "permerror") for sig in signatures):
                tests.append("DKIM_INVALID")
        dmarc = self._dmarc(outcomes, envelope, from_domain, from_ok, mailfrom)
        if dmarc is not None:
            results["dmarc"], results["dmarc_disposition"] = dmarc.result, dmarc.disposition
            props = (("header.from", dmarc.from_domain),) if dmarc.from_domain else ()
            methods.append(authresults.MethodResult("dmarc", dmarc.result, props))
            if dmarc.result == "fail":
                tests.append("DMARC_FAIL")
        listed = [zone for zone in settings.dnsbl_zones if outcomes.get("dnsbl:" + zone)]
        results["dnsbl"] = listed
        tests += ["DNSBL_LISTED:" + zone for zone in listed]
        tests += spam.header_findings(message)
        results["tests"] = tests
        cleaned = authresults.remove_claiming(message, settings.authserv_id)
        auth_field = authresults.format_field(settings.authserv_id, methods)
        verdict = self._scored(cleaned, auth_field, tests, dmarc, results)
        classified = {user: found for user, found in outcomes.get("bayes", {}).items() if found is not None}
        # No log line here: the caller's one delivery line carries these results.
        if not classified:
            return verdict
        return self._per_user(verdict, classified, cleaned, auth_field, tests, dmarc, envelope.users)

    def _scored(self, cleaned: bytes, auth_field: bytes, tests: list[str],
                dmarc: dmarc_check.DMARCResult | None, results: dict,
                bayes: float | None = None) -> Verdict:
        """The verdict for the rules ``tests`` fired: score, action, and the
        message with our Authentication-Results and X-Spam-* fields on top."""
        score = spam.total_score(tests)
        action, reply = self._decide(score, dmarc)
        fields = [auth_field] + spam.status_fields(score, tests, self.settings.junk_threshold, bayes)
        return Verdict(authresults.prepend_fields(cleaned, fields), action, score, reply, results)

    def _per_user(self, verdict: Verdict, classified: dict, cleaned: bytes, auth_field: bytes,
                  tests: list[str], dmarc: dmarc_check.DMARCResult | None,
                  users: tuple[str, ...]) -> Verdict:
        """Add each classified user's own verdict (the rules plus BAYES_*) to ``verdict``.

        SMTP has one reply for the whole message (RFC 5321 §4.2.5): it is
        refused only when every user's verdict refuses it; otherwise a user
        whose verdict refuses gets it in Junk.
        """
        by_user = {}
        for user, found in classified.items():
            own = tests + spam.bayes_tests(found.probability)
            by_user[user] = self._scored(cleaned, auth_field, own, dmarc, {
                "tests": own, "bayes": round(found.probability, 3), "model": found.model},
                found.probability)
        verdict.results["bayes"] = {user: by_user[user].results["bayes"] for user in by_user}
        everyone = [by_user.get(user, verdict) for user in users]
        if all(each.action == "reject" for each in everyone):
            return replace(verdict, action="reject", reply=everyone[0].reply, by_user=by_user)
        return replace(_taken(verdict), by_user={user: _taken(each) for user, each in by_user.items()})

    def _dmarc(self, outcomes: dict, envelope: Envelope, from_domain: str, from_ok: bool,
               mailfrom: spf_check.SPFResult | None) -> dmarc_check.DMARCResult | None:
        """The DMARC result, or ``None`` when DMARC is switched off."""
        if not self.settings.dmarc:
            return None
        if not from_ok:
            return dmarc_check.DMARCResult("permerror", "")
        if not from_domain:
            return dmarc_check.DMARCResult("none", "")
        spf_result = mailfrom.result if mailfrom is not None else "none"
        spf_domain = mailfrom.domain if mailfrom is not None else ""
        dkim_passes = [sig.domain for sig in outcomes.get("dkim", []) if sig.result == "pass"]
        lookup = outcomes.get("dmarc", dmarc_check.PolicyLookup(None))
        return dmarc_check.evaluate(from_domain, lookup, spf_result, spf_domain, dkim_passes)

    def _decide(self, score: float, dmarc: dmarc_check.DMARCResult | None) -> tuple[str, MailError | None]:
        """The action (the most severe of DMARC's and the score's) and its reply."""
        dmarc_action = "deliver"
        if dmarc is not None and dmarc.disposition == "reject":
            dmarc_action = "reject" if self.settings.dmarc_reject_action == "reject" else "junk"
        elif dmarc is not None and dmarc.disposition == "quarantine":
            dmarc_action = "junk"
        spam_action = ("reject" if score >= self.settings.reject_threshold
                       else "junk" if score >= self.settings.junk_threshold else "deliver")
        if dmarc_action == "reject":
            # RFC 7489 §7.3 suggests 5.7.1 for a DMARC policy rejection.
            text = f"Message rejected by the DMARC policy of {dmarc.from_domain}"
            return "reject", MailError("550", "5.7.1", text)
        if spam_action == "reject":
            return "reject", MailError("550", "5.7.1", "Message rejected as spam")
        return max(dmarc_action, spam_action, key=_SEVERITY.__getitem__), None

    def _fallback(self, message: bytes) -> Verdict:
        """Deliver as received (minus forged results) when the checks broke."""
        try:
            message = authresults.remove_claiming(message, self.settings.authserv_id)
        except Exception:
            log.failure("inbound-error step=remove-forged")
        return Verdict(message, "deliver", 0.0, None, {"error": True})

    def _failed(self, failure: Failure, message: bytes, envelope: Envelope) -> Verdict:
        log.failure("inbound-error client={ip}", failure, ip=envelope.client_ip)
        return self._fallback(message)


def _taken(verdict: Verdict) -> Verdict:
    """``verdict`` for a message that is accepted: a rejection becomes Junk."""
    return replace(verdict, action="junk", reply=None) if verdict.action == "reject" else verdict


def _dkim_methods(signatures: list[dkim_check.DKIMResult]) -> list[authresults.MethodResult]:
    """One ``dkim=`` entry per signature (RFC 8601 §2.7.1), or ``dkim=none``."""
    if not signatures:
        return [authresults.MethodResult("dkim", "none")]
    methods = []
    for sig in signatures:
        props = tuple((name, value) for name, value in (
            ("header.d", sig.domain), ("header.s", sig.selector), ("header.b", sig.b_prefix))
            if value)
        methods.append(authresults.MethodResult("dkim", sig.result, props))
    return methods
