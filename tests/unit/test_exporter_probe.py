"""exporter_sample_value against a real HTTP server on 127.0.0.1 (with and without basic auth)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosgpu.exporter.probes import exporter_sample_value

BODY = b'# TYPE up gauge\nnode_textfile_scrape_error 0\ngpu_health{gpu="0"} 1\ngpu_health{gpu="1"} 0\n'
USER, PASSWORD = "prometheus", "probe-test-password"


class _Exporter(BaseHTTPRequestHandler):
    require_auth = False

    def do_GET(self) -> None:
        if self.require_auth:
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
        if self.path != "/metrics":
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def _serve(require_auth: bool) -> Iterator[str]:
    handler = type("Handler", (_Exporter,), {"require_auth": require_auth})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def exporter() -> Iterator[str]:
    yield from _serve(require_auth=False)


@pytest.fixture
def protected_exporter() -> Iterator[str]:
    yield from _serve(require_auth=True)


def test_reads_the_sample_matching_labels(exporter):
    assert exporter_sample_value(f"{exporter}/metrics", "gpu_health", labels={"gpu": "1"}) == 0.0
    assert exporter_sample_value(f"{exporter}/metrics", "gpu_health", labels={"gpu": "0"}) == 1.0


def test_missing_sample_fails_naming_it(exporter):
    with pytest.raises(ActivityFailed, match="no sample gpu_health"):
        exporter_sample_value(f"{exporter}/metrics", "gpu_health", labels={"gpu": "7"})


def test_http_error_fails_with_status(exporter):
    with pytest.raises(ActivityFailed, match="HTTP 404"):
        exporter_sample_value(f"{exporter}/nope", "gpu_health")


def test_credentials_from_secrets(protected_exporter):
    secrets = {"exporter": {"exporter_username": USER, "exporter_password": PASSWORD}}
    value = exporter_sample_value(f"{protected_exporter}/metrics", "node_textfile_scrape_error", secrets=secrets)
    assert value == 0.0


def test_credentials_from_environment(protected_exporter, monkeypatch):
    monkeypatch.setenv("CHAOSGPU_EXPORTER_USERNAME", USER)
    monkeypatch.setenv("CHAOSGPU_EXPORTER_PASSWORD", PASSWORD)
    assert exporter_sample_value(f"{protected_exporter}/metrics", "gpu_health") == 1.0


def test_wrong_password_is_refused_without_leaking_it(protected_exporter):
    secrets = {"exporter_username": USER, "exporter_password": "wrong-password-xyz"}
    with pytest.raises(ActivityFailed, match="HTTP 401") as failure:
        exporter_sample_value(f"{protected_exporter}/metrics", "gpu_health", secrets=secrets)
    assert "wrong-password-xyz" not in str(failure.value)


def test_unreachable_exporter_fails():
    with pytest.raises(ActivityFailed, match=r"scraping http://127\.0\.0\.1:9/metrics failed"):
        exporter_sample_value("http://127.0.0.1:9/metrics", "up", timeout=2)


def test_non_http_url_is_refused():
    with pytest.raises(ActivityFailed, match="http:// or https://"):
        exporter_sample_value("file:///etc/passwd", "up")
