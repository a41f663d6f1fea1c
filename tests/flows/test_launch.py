"""`flows.launch`: the server and workers never start with an open API beyond this machine (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import launch

SECRET = "pmg-admin:correct horse battery staple"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No auth setting, API URL or opt-out; a cwd without `.env` or `prefect.toml` (Prefect reads those)."""
    for name in (
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_API_AUTH_STRING",
        "PREFECT_API_URL",
        launch.AUTH_ENV,
        launch.PROXY_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))  # no profile with settings of its own
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def _launch(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[list[str]], list[str]]:
    """Run `main` with a recorder in place of exec: (exit code, the commands it would exec, stderr lines)."""
    execs: list[list[str]] = []
    code = launch.main(argv, exec_=lambda _path, args: execs.append(args[1:]))
    return code, execs, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "[fe80::1]", "prefect.example.org"])
def test_a_network_bind_without_an_auth_string_is_refused_in_one_line(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    code, execs, err = _launch(["server", "--host", host, "--port", "4200"], capsys)
    assert (code, execs) == (2, [])  # Prefect is never started
    assert len(err) == 1 and err[0].startswith(f"pmg: error: refusing to serve the Prefect API on {host} ")
    assert launch.AUTH_ENV in err[0] and f"{launch.PROXY_ENV}=1" in err[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"])
def test_a_loopback_bind_needs_no_auth_string(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    code, execs, err = _launch(["server", "--host", host, "--port", "4300"], capsys)
    assert (code, err) == (0, [])
    assert execs == [["-m", "prefect", "server", "start", "--host", host, "--port", "4300"]]


def test_a_network_bind_with_an_auth_string_or_behind_a_proxy_starts(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ["server", "--host", "0.0.0.0", "--port", "4200"]
    started = [["-m", "prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]]
    clean_env.setenv("PREFECT_SERVER_API_AUTH_STRING", SECRET)
    code, execs, err = _launch(server, capsys)
    assert (code, execs) == (0, started)
    assert len(err) == 1 and err[0].startswith("pmg: warning: the API on 0.0.0.0 speaks plain HTTP")
    assert "horse" not in err[0]  # the secret is never printed

    clean_env.delenv("PREFECT_SERVER_API_AUTH_STRING")
    clean_env.setenv(launch.PROXY_ENV, "1")  # the operator says a proxy authenticates
    assert _launch(server, capsys) == (0, started, [])
    clean_env.setenv(launch.PROXY_ENV, "maybe")
    code, execs, err = _launch(server, capsys)
    assert (code, execs) == (2, []) and err == [f"pmg: error: {launch.PROXY_ENV}='maybe': expected 1 "
                                                "(an authenticating proxy is in front) or 0"]
    clean_env.setenv(launch.PROXY_ENV, "0")
    assert _launch(server, capsys)[0] == 2


def test_an_empty_auth_string_is_refused_since_it_would_lock_every_client_out(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("PREFECT_SERVER_API_AUTH_STRING", " ")
    code, execs, err = _launch(["server", "--host", "127.0.0.1"], capsys)
    assert (code, execs) == (2, [])
    assert err == [
        "pmg: error: PREFECT_SERVER_API_AUTH_STRING is set but empty: Prefect would refuse every client; "
        f"unset it or set {launch.AUTH_ENV}=user:password"
    ]


def test_a_worker_of_a_remote_server_needs_an_auth_string(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = ["worker", "--pool", "pmg", "--type", "process", "--work-queue", "gpu", "--limit", "1"]
    started = [["-m", "prefect", "worker", "start", *worker[1:]]]
    clean_env.setenv("PREFECT_API_URL", "http://10.0.0.5:4200/api")
    code, execs, err = _launch(worker, capsys)
    assert (code, execs) == (2, [])
    assert len(err) == 1 and err[0].startswith(
        "pmg: error: the Prefect API http://10.0.0.5:4200/api is on another machine and no auth string is set"
    )

    clean_env.setenv("PREFECT_API_AUTH_STRING", SECRET)
    code, execs, err = _launch(worker, capsys)
    assert (code, execs) == (0, started)  # the worker's own arguments are passed through
    assert len(err) == 1 and "unencrypted" in err[0] and "horse" not in err[0]

    clean_env.setenv("PREFECT_API_URL", "https://prefect.example.org/api")  # TLS in front: nothing to say
    assert _launch(worker, capsys) == (0, started, [])
    clean_env.delenv("PREFECT_API_AUTH_STRING")
    clean_env.setenv(launch.PROXY_ENV, "yes")
    assert _launch(worker, capsys) == (0, started, [])

    clean_env.delenv(launch.PROXY_ENV)
    clean_env.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")  # one machine: as before
    assert _launch(worker, capsys) == (0, started, [])
