"""``mailserverd dkim generate DOMAIN | list``: the DKIM keys outgoing mail is signed with.

``generate`` makes a key for a local domain (RSA 2048 or Ed25519) in
``data_dir/dkim/`` (mode 0600) and prints the TXT record to publish; the
running daemon signs with it from the next message on. ``list`` shows every
key and its record name; ``--json`` gives the same facts, records included.
"""

from __future__ import annotations

import json


def _key_doc(key) -> dict:
    return {"domain": key.domain, "selector": key.selector, "algorithm": key.algorithm, "bits": key.bits,
            "record": key.record_name, "txt": key.txt_value()}


def cmd_dkim(args) -> int:
    from mailserverd.cli import CommandError, load, with_store
    from mailserverd.queue import dkimsign

    config = load(args)
    data_dir = str(config.server.data_dir)
    if args.action == "list":
        try:
            keys = dkimsign.list_keys(data_dir)
        except dkimsign.DKIMKeyError as error:
            raise CommandError(str(error)) from None
        if args.json:
            print(json.dumps([_key_doc(key) for key in keys], indent=2))
        elif not keys:
            print("no DKIM keys")
        for key in [] if args.json else keys:
            print(f"{key.domain}  {key.selector}  {key.algorithm}-sha256  {key.bits} bits  {key.record_name}")
        return 0
    domain = args.domain.lower().rstrip(".")

    def work(store):
        if store.get_domain(domain) is None:
            raise CommandError(f"{domain} is not a local domain (mailserverd domain add {domain})")
        try:
            key = dkimsign.generate_key(data_dir, domain, args.selector, args.algorithm)
        except dkimsign.DKIMKeyError as error:
            raise CommandError(str(error)) from None
        if args.json:
            print(json.dumps(_key_doc(key), indent=2))
        else:
            print(f"; publish this record in the DNS zone of {domain}:")
            print(key.zone_line())

    return with_store(config, work)


def add_parser(sub, common) -> None:
    """Register ``dkim generate`` and ``dkim list`` on the CLI's subparsers."""
    p = sub.add_parser("dkim", help="DKIM signing keys for outgoing mail")
    dsub = p.add_subparsers(dest="action", required=True)
    a = dsub.add_parser("generate", parents=[common], help="make a key; prints the DNS TXT record")
    a.add_argument("domain", metavar="DOMAIN")
    a.add_argument("--selector", default="mail", metavar="S", help="the s= selector (default: mail)")
    a.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                   help="rsa-sha256 with 2048 bits (default) or ed25519-sha256")
    a.add_argument("--json", action="store_true", help="print JSON")
    a = dsub.add_parser("list", parents=[common], help="every key and where its record goes")
    a.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_dkim)
