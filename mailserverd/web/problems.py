"""The HTTP gateway's error replies: RFC 9457 problem details, one catalogue.

Every refusal the API makes is a :class:`Problem` from this module (or one
made by :func:`problem` with a catalogue entry's type and its own detail),
raised where the rule is and rendered in one place (:func:`render`) as
``application/problem+json``: ``type`` (a stable URI naming the problem,
RFC 9457 §3.1.1), ``title`` (the same for every occurrence), ``status``,
``detail`` (this occurrence) and ``code`` (the short name after ``#``, an
extension member, §3.2, easy to switch on). Like the protocols' reply
catalogues, no problem says whether another user's account or message exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

#: Base of every problem type URI (a tag, not fetched: RFC 9457 §3.1.1 allows any URI).
TYPE_BASE = "https://mailserverd.invalid/problems#"
CONTENT_TYPE = b"application/problem+json"


@dataclass(frozen=True)
class Problem(Exception):
    """One refusal: ``status`` (HTTP), ``code`` (type name), ``title``, ``detail``;
    ``headers`` are added to the response (``Retry-After``, ``WWW-Authenticate``)."""

    status: int
    code: str
    title: str
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail or self.title}"

    def with_detail(self, detail: str) -> "Problem":
        """The same problem, about this occurrence."""
        return replace(self, detail=detail)

    def document(self) -> dict:
        """The problem details object (RFC 9457 §3)."""
        doc = {"type": TYPE_BASE + self.code, "title": self.title, "status": self.status,
               "code": self.code}
        if self.detail:
            doc["detail"] = self.detail
        return doc


def render(problem: Problem) -> bytes:
    """The JSON body of ``problem``."""
    return json.dumps(problem.document(), ensure_ascii=False).encode("utf-8")


# RFC 9110 §15.5.2: 401 carries WWW-Authenticate; Bearer per RFC 6750 §3, Basic per RFC 7617 §2.
_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="mailserverd"'),
              ("WWW-Authenticate", 'Basic realm="mailserverd", charset="UTF-8"'))

BAD_JSON = Problem(400, "malformed-json", "The request body is not a JSON object")
INVALID_MESSAGE = Problem(400, "invalid-message", "The message is not valid")
BAD_BASE64 = Problem(400, "bad-base64", "An attachment's content is not valid base64")
HEADER_INJECTION = Problem(400, "header-injection",
                           "A header field or address contains a line break or control character")
BAD_ADDRESS = Problem(400, "bad-address", "An address is not a valid mailbox")
BAD_REQUEST = Problem(400, "bad-request", "The request is not valid")
UNAUTHORIZED = Problem(401, "unauthorized", "Valid credentials are required", headers=_CHALLENGE)
TLS_REQUIRED = Problem(403, "tls-required", "Credentials are accepted over TLS only")
SENDER_NOT_OWNED = Problem(403, "sender-not-owned",
                           "The sender address does not belong to the authenticated user")
NOT_FOUND = Problem(404, "not-found", "No such resource")
UNKNOWN_DOMAIN = Problem(404, "unknown-domain", "This server does not serve that mail domain")
METHOD_NOT_ALLOWED = Problem(405, "method-not-allowed", "This method is not allowed here")
CONFLICT = Problem(409, "request-in-progress",
                   "A request with this idempotency key is still being processed")
TOO_LARGE = Problem(413, "too-large", "The request body is too large")
UNSUPPORTED_TYPE = Problem(415, "unsupported-media-type",
                           "Send application/json or message/rfc822")
RECIPIENT_REFUSED = Problem(422, "recipient-refused", "A recipient was refused")
TOO_MANY_RECIPIENTS = Problem(422, "too-many-recipients", "The message has too many recipients")
TOO_MANY_REQUESTS = Problem(429, "too-many-requests", "Too many requests; try again later")


def too_many_requests(retry_after: float) -> Problem:
    """429 with ``Retry-After`` seconds (RFC 6585 §4, RFC 9110 §10.2.3)."""
    return replace(TOO_MANY_REQUESTS, headers=(("Retry-After", str(int(retry_after))),))
INTERNAL = Problem(500, "internal-error", "The server failed; nothing was sent")
UNAVAILABLE = Problem(503, "temporarily-unavailable",
                      "The message cannot be accepted now; try again later")


def from_mail_error(error) -> Problem:
    """The problem for a :class:`~mailserverd.errors.MailError` of the submission
    path (a recipient check or the delivery): 4xx replies say "later" (503),
    5xx ones refuse the message (422); the SMTP reply is the detail."""
    text = f"{error.code} {error.enhanced} {error.text}".strip()
    if error.temporary:
        return UNAVAILABLE.with_detail(text)
    return RECIPIENT_REFUSED.with_detail(text)
