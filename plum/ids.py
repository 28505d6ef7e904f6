"""Identifiers: 32 lowercase hex characters, instance ids `<deploymentId>-<8 hex>`."""

import re
import secrets

_ID = re.compile(r"^[0-9a-f]{32}$")


def new_id() -> str:
    return secrets.token_hex(16)


def new_instance_id(deployment_id: str) -> str:
    return f"{deployment_id}-{secrets.token_hex(4)}"


def is_id(value: str) -> bool:
    return bool(_ID.match(value))
