"""``skuforge tenants list | set``: the operator's view of tenants and their commercial flag.

A commercial tenant is never given a model whose licence forbids commercial use (the plan
builder refuses it, ``pipeline.generative.licences``); the flag is the operator's statement
about the tenant's business, so only the CLI sets it, never the tenant's own API keys."""

from __future__ import annotations

import argparse
import sys

from pipeline.settings import get_settings


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage.database import make_engine, session_factory, transaction
    from storage.models import Tenant

    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            tenants = session.scalars(select(Tenant).order_by(Tenant.name)).all()
            rows = [(t.name, t.id, "commercial" if t.commercial else "-") for t in tenants]
    finally:
        engine.dispose()
    for name, tenant_id, commercial in rows:
        print(f"{name}\t{tenant_id}\t{commercial}")
    return 0


def cmd_tenants_set(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from storage.database import make_engine, session_factory, transaction
    from storage.models import Tenant

    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == args.tenant))
            if tenant is None:
                sys.stderr.write(f"error: no tenant named {args.tenant!r}\n")
                return 1
            tenant.commercial = args.commercial
    finally:
        engine.dispose()
    state = "commercial" if args.commercial else "non-commercial"
    sys.stderr.write(f"tenant {args.tenant!r} is now {state}\n")
    return 0


def add_tenants_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = sub.add_parser("tenants", help="tenants and their commercial flag").add_subparsers(
        dest="tenants_command", required=True
    )
    listing = tenants.add_parser("list", help="name, id and commercial flag of every tenant")
    listing.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    listing.set_defaults(handler=cmd_tenants_list)
    change = tenants.add_parser(
        "set", help="mark a tenant commercial (refused non-commercial model licences) or not"
    )
    change.add_argument("tenant", help="tenant name")
    flag = change.add_mutually_exclusive_group(required=True)
    flag.add_argument("--commercial", dest="commercial", action="store_true")
    flag.add_argument("--non-commercial", dest="commercial", action="store_false")
    change.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    change.set_defaults(handler=cmd_tenants_set)
