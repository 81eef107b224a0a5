"""A real HTTP mirror of a tiny Fashion-MNIST set on 127.0.0.1, for the download and CLI tests."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from latent.data import FILES
from tests.conftest import write_dataset


class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[name]``; ``server.mode[name]`` may be 'truncate' (promise more bytes)."""

    def do_GET(self) -> None:  # the http.server API's name
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append(name)
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        mode = self.server.mode.get(name)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])  # then close: the client gets fewer bytes than promised
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def tiny_mirror(tmp_path: Path) -> Iterator[tuple[str, http.server.HTTPServer, dict[str, str]]]:
    """A real HTTP server on 127.0.0.1 serving a tiny, well-formed Fashion-MNIST set: (url, server, md5s).

    ``server.requests`` lists the file names asked for; ``server.files`` and ``server.mode`` may be changed.
    """
    source = tmp_path / "mirror"
    write_dataset(source, n_train=30, n_test=10)
    files = {name: (source / name).read_bytes() for name in FILES.values()}
    md5s = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    server.files, server.mode, server.requests = dict(files), {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data/", server, md5s
    finally:
        server.shutdown()
        server.server_close()
