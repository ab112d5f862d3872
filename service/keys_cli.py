"""``skuforge keys create | list | revoke``: API keys, offline (straight on the database).

A revoked key is refused by every API process within ``SKUFORGE_API__KEY_CACHE_S`` (at most
1 s): the API re-checks a key against the database at least that often, so revoking here
needs no running API and no message to one.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from rich.console import Console
from rich.table import Table

from pipeline.settings import get_settings


def cmd_keys_create(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage import jobs
    from storage.database import make_engine, session_factory, transaction
    from storage.keys import create_key
    from storage.models import Tenant, utcnow

    expires_at = utcnow() + timedelta(seconds=args.expires_in) if args.expires_in else None
    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == args.tenant))
            if tenant is None:
                tenant = jobs.create_tenant(session, args.tenant)
            key, row = create_key(
                session, tenant, args.name, scopes=args.scope, expires_at=expires_at
            )
            key_id = row.id
    finally:
        engine.dispose()
    print(key)
    sys.stderr.write(
        f"API key {key_id} for tenant {args.tenant!r} (shown once; only its hash is stored)\n"
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage.database import make_engine, session_factory
    from storage.keys import granted_scopes, list_keys
    from storage.models import Tenant

    table = Table(title=f"API keys of {args.tenant}")
    for column in ("id", "prefix", "name", "scopes", "created", "expires", "revoked"):
        table.add_column(column)
    engine = make_engine(args.url or get_settings().database.url)
    try:
        with session_factory(engine)() as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == args.tenant))
            if tenant is None:
                sys.stderr.write(f"error: no tenant {args.tenant!r}\n")
                return 1
            for row in list_keys(session, tenant.id):
                table.add_row(
                    row.id,
                    row.prefix,
                    row.name,
                    ",".join(granted_scopes(session, row.id)),
                    f"{row.created_at:%Y-%m-%d %H:%M}",
                    f"{row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else "",
                    f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
                )
    finally:
        engine.dispose()
    Console(width=200).print(table)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from storage.database import make_engine, session_factory, transaction
    from storage.keys import find_key, revoke_key

    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            row = find_key(session, args.key)
            if row is None:
                sys.stderr.write(f"error: no API key with id or prefix {args.key!r}\n")
                return 1
            changed = revoke_key(session, row)
            key_id = row.id
    finally:
        engine.dispose()
    state = "revoked" if changed else "was already revoked"
    sys.stderr.write(f"API key {key_id} {state}; every API process refuses it within 1 s\n")
    return 0


def add_keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="create an API key for a tenant (made if new)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="", help="label for the key")
    create.add_argument(
        "--scope",
        action="append",
        choices=("read", "write", "review", "admin"),
        help="repeatable; default read and write. read: GET; write: submit, cancel, "
        "configure (implies read); review: decide and claim (implies read); admin: "
        "everything, including keys and reason codes",
    )
    create.add_argument(
        "--expires-in", type=int, metavar="SECONDS", help="the key stops working after this"
    )
    create.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    create.set_defaults(handler=cmd_keys_create)

    listing = keys.add_parser("list", help="a tenant's keys (never the keys themselves)")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    listing.set_defaults(handler=cmd_keys_list)

    revoke = keys.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="the key's id or prefix (from `keys list`)")
    revoke.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    revoke.set_defaults(handler=cmd_keys_revoke)
