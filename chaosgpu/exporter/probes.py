"""Probes that scrape a Prometheus exporter the way Prometheus does and read a sample from it."""

import base64
import ssl
import urllib.error
import urllib.request

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosgpu.exporter.exposition import parse_exposition
from chaosgpu.secrets import get_secret

__all__ = ["exporter_sample_value"]


def _fetch(url: str, timeout: float, verify_tls: bool, secrets: Secrets | None) -> str:
    request = urllib.request.Request(url, headers={"Accept": "text/plain"})  # noqa: S310 - http(s) only, checked
    user = get_secret(secrets, "exporter_username", "CHAOSGPU_EXPORTER_USERNAME")
    if user:
        password = get_secret(secrets, "exporter_password", "CHAOSGPU_EXPORTER_PASSWORD")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context()
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise ActivityFailed(f"scraping {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ActivityFailed(f"scraping {url} failed: {reason}") from None


def exporter_sample_value(
    url: str,
    metric: str,
    labels: dict[str, str] | None = None,
    timeout: float = 5.0,
    verify_tls: bool = True,
    configuration: Configuration = None,  # noqa: ARG001 - Chaos Toolkit convention
    secrets: Secrets = None,
) -> float:
    """Scrape ``url`` and return the value of the first sample of ``metric`` whose labels include ``labels``.

    Basic-auth credentials come from the secrets ``exporter_username``/``exporter_password`` (or the
    environment variables CHAOSGPU_EXPORTER_USERNAME/PASSWORD). Raises ActivityFailed when the exporter does
    not answer or has no such sample.
    """
    if not url.startswith(("http://", "https://")):
        raise ActivityFailed(f"url must be http:// or https://, got {url!r}")
    wanted = labels or {}
    for name, sample_labels, value in parse_exposition(_fetch(url, timeout, verify_tls, secrets)):
        if name == metric and all(sample_labels.get(k) == v for k, v in wanted.items()):
            return value
    raise ActivityFailed(f"{url} exposes no sample {metric}{wanted or ''}")
