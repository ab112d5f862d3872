"""Claim a Redis database on the loopback server that no other test session or benchmark
on this machine is using: two runs sharing one database take each other's Celery messages.
The claim is a key in database 0 that expires, so a killed run frees it eventually."""

from __future__ import annotations

import os
import random

import redis

FIRST, LAST = 2, 15  # 0 holds the claims, 1 is the default result backend


def claim_database(client: redis.Redis, ttl_s: int = 7200) -> int:
    candidates = list(range(FIRST, LAST + 1))
    random.shuffle(candidates)
    for db in candidates:
        if client.set(f"skuforge-tests:db{db}", os.getpid(), nx=True, ex=ttl_s):
            return db
    raise RuntimeError(f"every Redis database {FIRST}-{LAST} is claimed by another run")


def release_database(client: redis.Redis, db: int) -> None:
    client.delete(f"skuforge-tests:db{db}")
