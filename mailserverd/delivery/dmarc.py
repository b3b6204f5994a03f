"""DMARC (RFC 7489): policy discovery, identifier alignment and the result.

Two steps, so that the DNS part can run in the pool while SPF and DKIM run:

- :func:`discover_policy` (blocking DNS) finds the policy record for the
  RFC5322.From domain: ``_dmarc.<from-domain>``, else
  ``_dmarc.<organizational-domain>`` (RFC 7489 §6.6.3);
- :func:`evaluate` (pure) checks whether a passing SPF or DKIM identifier is
  aligned with the From domain (RFC 7489 §3.1) and picks the policy to apply.

The organizational domain comes from the public suffix list shipped with the
``publicsuffixlist`` package (RFC 7489 §3.2); nothing is downloaded.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailserverd.delivery.dns import BlockingResolver, DNSTempError

_psl: PublicSuffixList | None = None
_psl_lock = threading.Lock()
_POLICIES = ("none", "quarantine", "reject")


def _suffix_list() -> PublicSuffixList:
    """The parsed public suffix list, loaded once (its methods are thread-safe)."""
    global _psl
    with _psl_lock:
        if _psl is None:
            _psl = PublicSuffixList()
        return _psl


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (``a.b.example.co.uk`` ->
    ``example.co.uk``); a domain that is itself a public suffix is its own."""
    name = domain.rstrip(".").lower()
    return _suffix_list().privatesuffix(name) or name


@dataclass(frozen=True)
class DMARCPolicy:
    """A parsed DMARC record (RFC 7489 §6.3): ``p``, ``sp``, ``adkim``/``aspf``
    (``"r"`` relaxed or ``"s"`` strict), ``pct`` (0-100), and ``domain``, the
    name whose ``_dmarc`` record it is."""

    domain: str
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True)
class PolicyLookup:
    """What :func:`discover_policy` found: ``policy`` (or ``None``) and
    ``temperror`` (a lookup failed temporarily, so no result can be given)."""

    policy: DMARCPolicy | None
    temperror: bool = False


@dataclass(frozen=True)
class DMARCResult:
    """``result`` (pass, fail, none, temperror, permerror: RFC 8601 §2.7.3),
    ``from_domain`` (for ``header.from``), and ``disposition``: the policy to
    apply, ``"none"``, ``"quarantine"`` or ``"reject"``."""

    result: str
    from_domain: str
    disposition: str = "none"


def parse_record(text: bytes, domain: str) -> DMARCPolicy | None:
    """Parse one TXT record; ``None`` if it is not a usable DMARC record.

    RFC 7489 §6.3: ``v=DMARC1`` must come first. §6.6.3: a record whose ``p``
    is missing or invalid is discarded, unless it has a ``rua`` (then it acts
    as ``p=none``). Unknown tags are ignored; bad ``adkim``/``aspf``/``pct``
    fall back to their defaults.
    """
    tags: dict[str, str] = {}
    for number, part in enumerate(text.decode("utf-8", "replace").split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if number == 0 and (name != "v" or value != "DMARC1"):
            return None
        if sep and name and name not in tags:
            tags[name] = value
    p = tags.get("p", "").lower()
    if p not in _POLICIES:
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", "").lower()
    sp = sp if sp in _POLICIES else p
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    return DMARCPolicy(domain, p, sp, adkim if adkim in ("r", "s") else "r",
                       aspf if aspf in ("r", "s") else "r", pct)


def _record_at(resolver: BlockingResolver, domain: str) -> DMARCPolicy | None:
    """The one DMARC record at ``_dmarc.<domain>``; none if zero or several
    (RFC 7489 §6.6.3 step 5). Raises DNSTempError."""
    found = [policy for text in resolver.txt(f"_dmarc.{domain}")
             if (policy := parse_record(text, domain)) is not None]
    return found[0] if len(found) == 1 else None


def discover_policy(resolver: BlockingResolver, from_domain: str) -> PolicyLookup:
    """Find the DMARC policy for ``from_domain`` (RFC 7489 §6.6.3).

    Looks up ``_dmarc.<from_domain>``, then ``_dmarc.<organizational domain>``
    if that differs and nothing was found. Never raises; blocks on DNS (call
    it from a pool thread only).
    """
    domain = from_domain.rstrip(".").lower()
    try:
        policy = _record_at(resolver, domain)
        org = organizational_domain(domain)
        if policy is None and org != domain:
            policy = _record_at(resolver, org)
    except DNSTempError:
        return PolicyLookup(None, temperror=True)
    return PolicyLookup(policy)


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict means the same domain; relaxed, the same
    organizational domain."""
    a, b = identifier.rstrip(".").lower(), from_domain.rstrip(".").lower()
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def evaluate(from_domain: str, lookup: PolicyLookup, spf_result: str, spf_domain: str,
             dkim_passes: list[str], sample: float | None = None) -> DMARCResult:
    """The DMARC result for one message (RFC 7489 §6.6.2).

    Takes the From domain, the discovered policy, the SPF result and the
    domain SPF checked (MAIL FROM, or HELO for a null reverse-path), and the
    d= domains of the DKIM signatures that passed. DMARC passes when one of
    them passes *and* is aligned. On fail, the disposition is ``sp`` for a
    subdomain of the record's domain, else ``p``; §6.6.4: with ``pct`` < 100
    only that share of failing mail gets the policy, the rest the next milder
    one (``sample`` in [0, 1), random by default). Pure; never raises.
    """
    if lookup.temperror:
        return DMARCResult("temperror", from_domain)
    policy = lookup.policy
    if policy is None:
        return DMARCResult("none", from_domain)
    if spf_result == "pass" and aligned(spf_domain, from_domain, policy.aspf):
        return DMARCResult("pass", from_domain)
    if any(aligned(d, from_domain, policy.adkim) for d in dkim_passes):
        return DMARCResult("pass", from_domain)
    is_subdomain = from_domain.rstrip(".").lower() != policy.domain
    disposition = policy.sp if is_subdomain else policy.p
    draw = random.random() if sample is None else sample
    if disposition != "none" and draw * 100 >= policy.pct:
        disposition = _POLICIES[_POLICIES.index(disposition) - 1]
    return DMARCResult("fail", from_domain, disposition)
