"""The OpenAI-compatible endpoint client against a scripted local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import llm as llm_module
from pmg.models.llm import EndpointLLM, load_llm

KEY = "profiles.full.llm"


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request by the next entry of `script` (the last one repeats)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.script: list[str] = ["ok"]
        self.requests: list[dict] = []
        self.headers_seen: list[dict] = []
        self.lock = threading.Lock()

    def next_action(self) -> str:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            self.server.headers_seen.append(dict(self.headers))
        action = self.server.next_action()
        if self.path != "/v1/chat/completions":
            self._send(404, '{"error": "no such route"}')
        elif action == "500":
            self._send(500, '{"error": "overloaded"}')
        elif action == "400":
            self._send(400, '{"error": "unknown model"}')
        elif action == "garbage":
            self._send(200, "<html>surprise</html>")
        elif action == "wrong-shape":
            self._send(200, '{"result": "no choices here"}')
        elif action == "sleep":
            time.sleep(1.0)
            self._send(200, "{}")
        else:
            content = "answer to: " + body["messages"][0]["content"]
            self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _client(srv: ScriptedServer, **kwargs) -> EndpointLLM:
    options = {"key": KEY, "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01}
    options.update(kwargs)
    return EndpointLLM(srv.url, "tiny-model", **options)


def test_answers_come_back_in_prompt_order(server: ScriptedServer) -> None:
    prompts = [f"prompt {i}" for i in range(6)]
    answers = _client(server, concurrency=3).generate(prompts, max_new_tokens=7)
    assert answers == [f"answer to: prompt {i}" for i in range(6)]
    sent = min(server.requests, key=lambda r: r["messages"][0]["content"])
    assert sent["model"] == "tiny-model"
    assert sent["max_tokens"] == 7 and sent["temperature"] == 0.0
    assert sent["messages"] == [{"role": "user", "content": "prompt 0"}]


def test_server_errors_are_retried_then_succeed(server: ScriptedServer) -> None:
    server.script = ["500", "500", "ok"]
    client = _client(server)
    assert client.generate(["x"], max_new_tokens=3) == ["answer to: x"]
    assert client.attempts == 3


def test_persistent_server_errors_fail_after_bounded_retries(server: ScriptedServer) -> None:
    server.script = ["500"]
    client = _client(server, max_retries=2)
    with pytest.raises(ModelError) as err:
        client.generate(["x"], max_new_tokens=3)
    assert client.attempts == 3
    message = str(err.value)
    assert f"{KEY}.url" in message and f"{server.url}/v1/chat/completions" in message
    assert "failed 3 attempt(s)" in message and "HTTP 500" in message


def test_backoff_doubles_between_attempts(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(llm_module.time, "sleep", waits.append)
    server.script = ["500"]
    with pytest.raises(ModelError):
        _client(server, max_retries=3, backoff_s=0.5).generate(["x"], max_new_tokens=3)
    assert waits == [0.5, 1.0, 2.0]


def test_timeouts_are_retried_and_reported(server: ScriptedServer) -> None:
    server.script = ["sleep"]
    client = _client(server, timeout_s=0.2, max_retries=1)
    with pytest.raises(ModelError, match=r"failed 2 attempt\(s\); last: timed out after 0\.2 s"):
        client.generate(["x"], max_new_tokens=3)
    assert client.attempts == 2


def test_client_errors_are_not_retried(server: ScriptedServer) -> None:
    server.script = ["400"]
    client = _client(server)
    with pytest.raises(ModelError, match=r"refused the request: HTTP 400: .*unknown model"):
        client.generate(["x"], max_new_tokens=3)
    assert client.attempts == 1


@pytest.mark.parametrize("action", ["garbage", "wrong-shape"])
def test_garbage_answers_are_named(server: ScriptedServer, action: str) -> None:
    server.script = [action]
    client = _client(server)
    with pytest.raises(
        ModelError, match=rf"{KEY}\.url: endpoint .* answered something that is not a chat completion"
    ):
        client.generate(["x"], max_new_tokens=3)
    assert client.attempts == 1


def test_connection_refused_is_retried_and_named() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = EndpointLLM(f"http://127.0.0.1:{port}", "m", key=KEY, max_retries=1, backoff_s=0.01)
    with pytest.raises(
        ModelError,
        match=rf"{KEY}\.url: endpoint http://127\.0\.0\.1:{port}/v1/chat/completions .*connection failed",
    ):
        client.generate(["x"], max_new_tokens=3)
    assert client.attempts == 2


def test_load_llm_builds_the_client_from_the_spec(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PMG_TEST_LLM_KEY", "sekret")
    spec = ModelSpec(
        kind="openai",
        url=server.url + "/v1",
        name="tiny-model",
        timeout_s=3,
        max_retries=1,
        api_key_env="PMG_TEST_LLM_KEY",
        context_length=4096,
    )
    client = load_llm(spec, key=KEY, seed=5)
    assert isinstance(client, EndpointLLM)
    assert client.context_length == 4096 and client.max_retries == 1 and client.timeout_s == 3
    assert client.generate(["hello"], max_new_tokens=2) == ["answer to: hello"]
    assert server.headers_seen[0]["Authorization"] == "Bearer sekret"
    assert server.requests[0]["seed"] == 5


def test_load_llm_names_missing_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.url: required for kind 'openai'"):
        load_llm(ModelSpec(kind="openai", name="m"), key=KEY)
    with pytest.raises(ModelError, match=rf"{KEY}\.name: required for kind 'openai'"):
        load_llm(ModelSpec(kind="openai", url="http://127.0.0.1:1"), key=KEY)
    monkeypatch.delenv("PMG_NO_SUCH_KEY", raising=False)
    with pytest.raises(
        ModelError, match=rf"{KEY}\.api_key_env: environment variable 'PMG_NO_SUCH_KEY' is not set"
    ):
        load_llm(ModelSpec(kind="openai", url="http://x", name="m", api_key_env="PMG_NO_SUCH_KEY"), key=KEY)
