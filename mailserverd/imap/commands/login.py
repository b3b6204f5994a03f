"""LOGIN (RFC 3501 §6.2.3): user name and password, only over TLS by default."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from mailserverd.auth.accounts import AuthFailed, AuthThrottled, AuthUnavailable
from mailserverd.imap import responses
from mailserverd.imap.responses import Completion


def run(session, command) -> Deferred | Completion:
    """``LOGIN SP userid SP password`` (both astrings).

    Before TLS (and unless ``[auth] allow_plaintext``) answers
    ``NO [PRIVACYREQUIRED]`` (RFC 5530 §3) without looking at the password.
    Otherwise asks ``ctx.authenticator.authenticate`` (which logs the login
    and applies throttling and the failure delay) and fires with the tagged
    OK, which carries the new capabilities (RFC 9051 §6.2.3 advice). The
    password is never logged here.
    """
    args = command.args
    args.expect_sp()
    userid = args.astring()
    args.expect_sp()
    password = args.astring()
    args.expect_end()
    if not session.login_allowed():
        raise responses.mail_error("NO", responses.PRIVACYREQUIRED, "Log in over TLS (use STARTTLS)")
    # Non-UTF-8 bytes become U+FFFD: such a name or password never matches,
    # but the attempt still goes through throttling and the failure delay.
    checking = session.ctx.authenticator.authenticate(
        userid.decode("utf-8", "replace"), password.decode("utf-8", "replace"), session.client_ip,
        protocol="imap")

    def succeeded(user: str) -> Completion:
        session.logged_in(user)
        return Completion("Logged in", "CAPABILITY " + " ".join(session.capabilities()))

    def failed(failure):
        error = failure.trap(AuthFailed, AuthThrottled, AuthUnavailable)
        if error is AuthFailed:
            raise responses.mail_error("NO", responses.AUTHENTICATIONFAILED, "Authentication failed")
        raise responses.mail_error("NO", responses.UNAVAILABLE,
                                   "Authentication temporarily unavailable, try again later", True)

    return checking.addCallbacks(succeeded, failed)
