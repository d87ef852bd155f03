"""A Hugging Face hub stand-in on 127.0.0.1: enough of the protocol for hf_hub_download / get_hf_file_metadata.

`HEAD /{repo}/resolve/{revision}/{path}` answers X-Repo-Commit, ETag and Content-Length; `GET` the same with an
optional `Range: bytes=N-` (206 Partial Content). `cut_after[path] = n` makes the next GET of that path send
the full Content-Length but only n bytes and then drop the connection, as a broken transfer does; paths in
`unavailable` answer GETs with 503 (the network went away); with `unavailable_after_cut` a cut path joins
them, so a test can end a run mid-file; with `down` every request is answered 503 (the hub is down).
Every request is logged as (method, path, Range header). A context manager: the server stops on exit.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")


class HubStandIn:
    def __init__(self, files: dict[tuple[str, str], bytes]):
        self.files = dict(files)
        self.cut_after: dict[str, int] = {}
        self.unavailable: set[str] = set()
        self.unavailable_after_cut = False
        self.down = False
        self.log: list[tuple[str, str, str | None]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _lookup(self):
                match = RESOLVE.match(self.path.split("?")[0])
                data = hub.files.get((match["repo"], match["path"])) if match else None
                hub.log.append((self.command, match["path"] if match else self.path, self.headers.get("Range")))
                if hub.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return match, None
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                return match, data

            def _headers(self, data: bytes, status=200, start=0):
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()

            def do_HEAD(self):
                match, data = self._lookup()
                if data is not None:
                    self._headers(data)

            def do_GET(self):
                match, data = self._lookup()
                if data is None:
                    return
                if match["path"] in hub.unavailable:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ranged = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                start = int(ranged[1]) if ranged else 0
                self._headers(data, 206 if ranged else 200, start)
                cut = hub.cut_after.pop(match["path"], None)
                if cut is not None:
                    if hub.unavailable_after_cut:
                        hub.unavailable.add(match["path"])
                    self.wfile.write(data[start:start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # the transfer breaks mid-file
                    return
                self.wfile.write(data[start:])

        return Handler
