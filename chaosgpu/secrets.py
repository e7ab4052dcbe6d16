"""The one place chaosgpu reads secrets: the experiment's secrets, then the environment, then a default.

Values read here are never logged or put into exception messages.
"""

from __future__ import annotations

import os

from chaoslib.types import Secrets

__all__ = ["get_secret"]


def get_secret(secrets: Secrets | None, key: str, env_var: str | None = None, default: str = "") -> str:
    """Return secret ``key``: from ``secrets`` (any scope), else environment variable ``env_var``, else ``default``."""
    if secrets:
        if key in secrets and isinstance(secrets[key], str):
            return str(secrets[key])
        for scope in secrets.values():
            if isinstance(scope, dict) and isinstance(scope.get(key), str):
                return str(scope[key])
    if env_var and env_var in os.environ:
        return os.environ[env_var]
    return default
