"""``mailserverd token create USER [--name N] | list USER | revoke USER ID``: API tokens.

``create`` prints the new token once (only its SHA-256 is stored, so it
cannot be shown again) and then its id; ``list`` shows each token's id,
name and creation time, never the token; ``revoke`` deletes one, and the
running daemon refuses it from the next request on (each request reads
the store).
"""

from __future__ import annotations

import time


def cmd_token(args) -> int:
    from mailserverd.cli import CommandError, load, with_store
    from mailserverd.mail.address import AddressError, canonical, parse_address
    from mailserverd.store.webapi import WebToken
    from mailserverd.web.tokens import new_token, token_hash

    config = load(args)
    try:
        user = canonical(parse_address(args.user))
    except AddressError as error:
        raise CommandError(f"{args.user}: {error}") from None

    def work(store):
        if store.get_user(user) is None:
            raise CommandError(f"no such user {user}")
        if args.action == "create":
            token, token_id = new_token()
            made = WebToken(token_id, user, args.name, int(time.time()))
            return store.add_web_token(token_hash(token), made).addCallback(
                lambda _: print(f"{token}\nid {token_id} for {user}; the token is shown only now"))
        if args.action == "revoke":
            return store.revoke_web_token(user, args.token_id).addCallback(
                lambda _: print(f"revoked {args.token_id}"))
        for token in store.list_web_tokens(user):
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(token.created))
            print(f"{token.token_id}\t{token.name or '-'}\t{when} UTC")
        return None

    return with_store(config, work)


def add_parser(sub, common) -> None:
    """Register ``token create``, ``token list`` and ``token revoke`` on the CLI's subparsers."""
    p = sub.add_parser("token", help="API tokens for the HTTP send API")
    tsub = p.add_subparsers(dest="action", required=True)
    a = tsub.add_parser("create", parents=[common], help="make a token; printed once")
    a.add_argument("user", metavar="USER")
    a.add_argument("--name", default="", metavar="N", help="what the token is for")
    a = tsub.add_parser("list", parents=[common], help="the user's tokens (ids, never the tokens)")
    a.add_argument("user", metavar="USER")
    a = tsub.add_parser("revoke", parents=[common], help="delete a token by its id")
    a.add_argument("user", metavar="USER")
    a.add_argument("token_id", metavar="ID")
    p.set_defaults(func=cmd_token)
