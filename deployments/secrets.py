"""Shared secrets for Braid's HTTP front doors (the bridge, the API): a Prefect Secret block, or env."""

from __future__ import annotations

import os
from typing import cast


def load_secret(block_name: str | None, env: str, what: str, flag: str) -> str:
    """The ``Secret`` block named ``block_name``, else the env var ``env``; refuses an empty one."""
    if block_name:
        from prefect.blocks.system import Secret

        try:
            value = cast(Secret, Secret.load(block_name)).get()  # sync in a sync context
        except Exception as exc:
            raise ValueError(f"could not load Secret block {block_name!r}: {exc}") from exc
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"Secret block {block_name!r} does not hold a non-empty string")
        return value
    value = os.environ.get(env, "")
    if not value.strip():
        raise ValueError(f"no {what}: pass {flag} NAME (a Prefect Secret block) or set {env}")
    return value
