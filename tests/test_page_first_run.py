"""A first start without the data (AppTest + real HTTP on 127.0.0.1): a clear error, and nothing left behind."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest

from latent.data import FILES
from tests.apptest_support import new_app


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def empty_data(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    monkeypatch.setenv("LATENT_DATA_DIR", str(folder))
    return folder


def test_no_network_names_the_folder_to_fill_by_hand(empty_data, monkeypatch):
    monkeypatch.setenv("LATENT_DATA_URL", f"http://127.0.0.1:{closed_port()}/")
    at = new_app().run()
    assert not at.exception
    (error,) = at.error
    assert "could not be loaded" in error.value and "by hand" in error.value and str(empty_data) in error.value
    assert not empty_data.exists() or not any(empty_data.iterdir())


def test_a_download_that_fails_its_md5_is_refused_and_not_saved(empty_data, monkeypatch, real_data_dir):
    """The local copy's files are valid IDX but not the official downloads, so their MD5s must not match."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (real_data_dir / self.path.rsplit("/", 1)[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("LATENT_DATA_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        at = new_app().run()
    finally:
        server.shutdown()
        server.server_close()
    assert not at.exception
    (error,) = at.error
    assert "MD5" in error.value and FILES["train-images"] in error.value
    assert not any(empty_data.iterdir())  # the first file failed: neither it nor a temporary file stays


def test_a_mirror_that_is_not_http_is_rejected(empty_data, monkeypatch):
    monkeypatch.setenv("LATENT_DATA_URL", "file:///etc/")
    at = new_app().run()
    assert not at.exception
    (error,) = at.error
    assert "not an http or https address" in error.value
