"""The one secrets helper: secrets, then environment, then default."""

from __future__ import annotations

from chaosgpu.secrets import get_secret


def test_top_level_secret_wins(monkeypatch):
    monkeypatch.setenv("X_ENV", "from-env")
    assert get_secret({"k": "from-secrets"}, "k", "X_ENV") == "from-secrets"


def test_scoped_secret_is_found():
    assert get_secret({"prometheus": {"k": "scoped"}}, "k") == "scoped"


def test_environment_then_default(monkeypatch):
    monkeypatch.delenv("X_ENV", raising=False)
    assert get_secret(None, "k", "X_ENV", default="d") == "d"
    monkeypatch.setenv("X_ENV", "from-env")
    assert get_secret({}, "k", "X_ENV") == "from-env"
