"""A local stand-in for the Hugging Face hub: the two endpoints `pmg models fetch` uses.

huggingface_hub is pointed at it with its own endpoint setting (`endpoint=`,
`HF_ENDPOINT`), so the real client code runs: `GET /api/models/<repo>/revision/<commit>?blobs=true`
(the commit's files with sizes, LFS sha256 and git blob ids) and
`HEAD`/`GET /<repo>/resolve/<commit>/<file>` (the bytes, with the
`X-Repo-Commit`, `ETag` and `Content-Length` headers the client reads).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()  # noqa: S324


@dataclass
class FakeRepo:
    commit: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)  # files described as LFS objects (sha256)
    gated: bool = False
    served: dict[str, bytes] = field(default_factory=dict)  # bytes actually served, when they differ
    requests: list[str] = field(default_factory=list)


class FakeHub:
    """Serve repositories on 127.0.0.1; `url` is the endpoint. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                path = unquote(urlparse(self.path).path)
                info = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                match = info or resolve
                repo = hub.repos.get(match.group(1)) if match else None
                if repo is None:
                    return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                repo.requests.append(f"{self.command} {path}")
                if repo.gated and "authorization" not in {k.lower() for k in self.headers}:
                    return self._send(401, b'{"error": "gated"}', {"X-Error-Code": "GatedRepo"})
                if match.group(2) != repo.commit:
                    return self._send(404, b'{"error": "Revision not found"}', {"X-Error-Code": "RevisionNotFound"})
                if info:
                    siblings = []
                    for name, data in sorted(repo.files.items()):
                        entry = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
                        if name in repo.lfs:
                            entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                        siblings.append(entry)
                    body = json.dumps({"id": match.group(1), "sha": repo.commit, "siblings": siblings}).encode()
                    return self._send(200, body, {"Content-Type": "application/json"})
                name = match.group(3)
                if name not in repo.files:
                    return self._send(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"})
                data = repo.files[name]
                etag = hashlib.sha256(data).hexdigest() if name in repo.lfs else git_blob_id(data)
                body = repo.served.get(name, data)
                return self._send(200, body, {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"'})

            do_GET = _handle
            do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
