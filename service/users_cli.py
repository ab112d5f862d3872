"""``skuforge users create``: a person who logs in to the review UI at ``/review``.

The password is generated, printed once and stored only as an argon2id hash; the person
logs in with it and can keep or change it (``skuforge users password``)."""

from __future__ import annotations

import argparse
import sys

from pipeline.settings import get_settings


def cmd_users_create(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from service.passwords import hash_password, one_time_password
    from storage import jobs
    from storage.database import make_engine, session_factory, transaction
    from storage.models import Tenant
    from storage.review import ReviewError, create_user

    password = one_time_password()
    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            tenant = session.scalar(select(Tenant).where(Tenant.name == args.tenant))
            if tenant is None:
                tenant = jobs.create_tenant(session, args.tenant)
            user = create_user(session, tenant, args.email, args.role, hash_password(password))
            user_id = user.id
    except ReviewError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        engine.dispose()
    print(password)
    sys.stderr.write(
        f"{args.role} {args.email} of tenant {args.tenant!r} (id {user_id}); the password "
        "above is shown once, only its hash is stored\n"
    )
    return 0


def cmd_users_password(args: argparse.Namespace) -> int:
    from service.passwords import hash_password, one_time_password
    from storage.database import make_engine, session_factory, transaction
    from storage.review import find_user

    password = one_time_password()
    engine = make_engine(args.url or get_settings().database.url)
    try:
        with transaction(session_factory(engine)) as session:
            user = find_user(session, args.email)
            if user is None:
                sys.stderr.write(f"error: no user {args.email}\n")
                return 1
            user.password_hash = hash_password(password)
    finally:
        engine.dispose()
    print(password)
    sys.stderr.write(f"new password for {args.email} (shown once)\n")
    return 0


def add_users_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="review UI users").add_subparsers(
        dest="users_command", required=True
    )
    create = users.add_parser("create", help="add a user; prints a one-time password")
    create.add_argument("--tenant", required=True, help="tenant name (made if new)")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=("admin", "reviewer", "viewer"))
    create.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    create.set_defaults(handler=cmd_users_create)
    password = users.add_parser("password", help="set a new generated password and print it")
    password.add_argument("--email", required=True)
    password.add_argument("--url", help="database URL (default: SKUFORGE_DATABASE__URL)")
    password.set_defaults(handler=cmd_users_password)
