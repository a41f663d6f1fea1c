"""Against a real `prefect server start`: the scheduler fires, a worker runs it; automations notify.

Unlike the other flow tests (the in-process test harness), these start the
server as `make prefect-server` does, with its services (scheduler,
triggers, actions), plus a process worker as `make worker` does. Every
process is started in its own process group and stopped by that id; each
wait has a deadline, so a broken scheduler fails the test instead of hanging
it. The scheduler's loops are shortened (seconds, not the minute default).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows import deploy

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params.yaml"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a server/worker process: state in `home`, no analytics, fast loops."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            **extra,
        }
    )
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True` and everything it started, by its group id."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for(what: str, check: Callable[[], Any], timeout: float, logs: list[Path], step: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(step)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@contextmanager
def _serve(home: Path, port: int, command: list[str], env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Run a server `command` in its own process group until GET /api/health answers; stop it by its group."""
    url = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:  # open even with an auth string: Prefect leaves GET /health to probes
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait_for("the Prefect server to answer", healthy, 150, [log])
        yield {"url": url, "home": home, "log": log}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`prefect server start` on 127.0.0.1 (services on, short scheduler loops); stopped by process group."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = _env(
        home,
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS="2",
    )
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _serve(home, port, command, env) as server:
        yield server


@contextmanager
def _api(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@contextmanager
def _worker(server: dict[str, Any], name: str) -> Iterator[Path]:
    """`prefect worker start --pool pmg --type process` (as `make worker`), polling every second."""
    log = server["home"] / f"{name}.log"
    env = _env(
        server["home"] / name,
        PREFECT_API_URL=server["url"],
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", deploy.POOL, "--type", "process",
             "--work-queue", "default", "--limit", "1", "--name", name],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=server["home"],
            start_new_session=True,
        )
    try:
        yield log
    finally:
        _stop(proc)


@pytest.mark.timeout(300)
def test_the_server_schedules_a_run_and_a_worker_completes_it(
    prefect_server: dict[str, Any], packaged_data_assets: Path, tmp_path: Path
) -> None:
    """The project's pool and deploy code, an interval schedule, a real worker: a run happens on its own."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, LogFilter, LogFilterFlowRunId

    # The deployment's source: the project's flows and package, run with its working
    # directory here (the pipeline writes metrics/ relative to it, not into the checkout).
    source = tmp_path / "source"
    source.mkdir()
    (source / "flows").symlink_to(ROOT / "flows", target_is_directory=True)
    out = tmp_path / "out"
    spec = {
        "entrypoint": "flows/pipeline.py:pipeline_flow",
        "name": "every-20s",
        "queue": "default",
        "parameters": {
            "params_path": str(PARAMS),
            "stages": ["prepare"],
            "scenarios": ["emoji"],
            "overrides": {
                "assets.folder": str(packaged_data_assets),
                "prepare.out": str(out / "prepared"),
                "prepare.image_size": 32,
                "prepare.emoji.n_users": 10,
                # Ten users: shares that leave every split at least one (as tests/flows/conftest.py).
                "prepare.user_split.validation": 0.2,
                "prepare.user_split.test": 0.3,
                "prepare.user_split.min_users": 1,
            },
        },
        "description": "the pipeline's prepare stage, every 20 s (scheduler test)",
    }
    with _api(prefect_server["url"]):
        deploy.setup(gpu_slots=1)
        name = deploy.apply(spec, str(source), [deploy.retrain_schedule(interval=20)])
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            only_this = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

            def scheduled() -> list[Any]:
                return client.read_flow_runs(deployment_filter=only_this)

            # The server's scheduler, not this test, creates the runs (tag `auto-scheduled`).
            created = _wait_for("the scheduler to create a run", scheduled, 60, [prefect_server["log"]])
            assert all(run.auto_scheduled and "auto-scheduled" in run.tags for run in created)
            assert "Can't evaluate bulk DML" not in prefect_server["log"].read_text(errors="replace")

            with _worker(prefect_server, "worker-default") as worker_log:

                def completed() -> list[Any]:
                    return [r for r in scheduled() if r.state is not None and r.state.is_completed()]

                done = _wait_for(
                    "a worker to complete a scheduled run", completed, 180, [worker_log, prefect_server["log"]]
                )
                run = done[0]
                assert run.auto_scheduled and run.deployment_id == deployment.id

                def finished_lines() -> list[str]:
                    # The run's state reaches the API before its last log lines do (they ship in
                    # batches), so the final line is waited for, with the worker still up.
                    only_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
                    lines = [f"{log.timestamp:%H:%M:%S} {log.message}" for log in client.read_logs(only_run, limit=200)]
                    text = worker_log.read_text(errors="replace").splitlines()
                    both = [line for line in text if run.name in line] + lines
                    return both if any("Finished in state Completed" in line for line in both) else []

                lines = _wait_for("the run's final log line", finished_lines, 60, [worker_log, prefect_server["log"]])
    print(f"\nscheduled run {run.name} ({run.id}): expected {run.expected_start_time}, state {run.state.name}")
    print("\n".join(lines[-12:]))
    assert (out / "prepared" / "emoji" / "splits.parquet").is_file()  # the real stage ran
    assert (source / "metrics" / "prepare" / "emoji.json").is_file()  # in the deployment's folder


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Records every POSTed JSON body (the notification webhook's receiving end)."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server on 127.0.0.1 recording what is POSTed to it."""
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(300)
def test_automations_notify_on_a_refused_promotion_and_a_failed_run(
    prefect_server: dict[str, Any],
    receiver: tuple[str, list[dict[str, Any]]],
    s3_env: Any,
    bucket_name: str,
    make_adapter: Any,
    pairs_table: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`flows.deploy.setup` with PMG_NOTIFY_WEBHOOK_URL set; a CLI promotion the gates refuse; a failing flow."""
    from flows.retrain import register_flow
    from pmg.cli import main

    url, received = receiver
    monkeypatch.setenv(deploy.WEBHOOK_ENV, url)
    monkeypatch.chdir(tmp_path)
    s3_env.client().create_bucket(Bucket=bucket_name)
    registry = ["--set", f"registry.endpoint_url={s3_env.endpoint_url}", "--set", f"registry.bucket={bucket_name}"]

    def pmg(*args: str) -> tuple[int, str, str]:
        code = main(["--params", str(PARAMS), *registry, "registry", *args])
        out, err = capsys.readouterr()
        return code, out, err

    with _api(prefect_server["url"]):
        done = deploy.setup(gpu_slots=1)
        assert done["notifications"] == [deploy.FAILED_RUN_AUTOMATION, deploy.PROMOTION_AUTOMATION]
        assert deploy.setup(gpu_slots=1)["notifications"] == done["notifications"]  # idempotent
        from prefect.automations import Automation

        assert Automation.read(name=deploy.PROMOTION_AUTOMATION).actions[0].type == "send-notification"

        metrics = tmp_path / "metrics.json"
        metrics.write_text(json.dumps({"lpips_history": 0.4, "lpips_target": 0.5}))
        clothing = ("--scenario", "clothing")
        for seed, history in ((1, 0.40), (2, 0.46)):
            pairs = str(pairs_table(history, 0.50))
            assert pmg("push", str(make_adapter(seed)), "--metrics", str(metrics), "--pairs", pairs, *clothing)[0] == 0
            assert pmg("promote", str(seed), "--to", "staging", "--reason", "candidate", *clothing)[0] == 0
        assert pmg("promote", "1", "--to", "production", "--reason", "first", *clothing)[0] == 0
        code, _, err = pmg("promote", "2", "--to", "production", "--reason", "nightly", *clothing)
        assert code == 2 and "FAIL lpips_history" in err and "not announced" not in err

        def notified(kind: str) -> list[dict[str, Any]]:
            return [body for body in received if kind in body.get("subject", "")]

        refused = _wait_for("the refused-promotion notification", lambda: notified("pmg.promotion.refused"),
                            90, [prefect_server["log"]])
        print(f"\nreceived: {json.dumps(refused[0], indent=2)}")
        assert refused[0]["source"] == "pmg"
        assert refused[0]["subject"] == "pmg: pmg.promotion.refused: clothing version 2 -> production"
        assert "over 40 common pairs" in refused[0]["body"]

        # A forced promotion is announced too.
        assert pmg("promote", "2", "--to", "production", "--reason", "hotfix", "--force", *clothing)[0] == 0
        forced = _wait_for("the forced-promotion notification", lambda: notified("pmg.promotion.forced"),
                           90, [prefect_server["log"]])
        assert "hotfix" in forced[0]["body"]
        # CLI moves refresh the registry artifact too (a Prefect API is reachable here).
        from prefect.artifacts import Artifact

        rows = json.loads(Artifact.get("pmg-registry").data)
        assert {(r["alias"], r["version"], r["action"]) for r in rows if r["scenario"] == "clothing"} == {
            ("staging", 2, "promote"),
            ("production", 2, "promote (forced)"),
        }

        # A failed flow run (a missing adapter folder) is notified, with the state's message.
        state = register_flow(
            adapter_dir=str(tmp_path / "no-such-adapter"),
            metrics={},
            scenario="clothing",
            params_path=str(PARAMS),
            overrides={"registry.endpoint_url": s3_env.endpoint_url, "registry.bucket": bucket_name},
            return_state=True,
        )
        assert state.is_failed()
        failed = _wait_for("the failed-run notification", lambda: notified("ended Failed"), 90,
                           [prefect_server["log"]])
        print(f"received: {json.dumps(failed[0], indent=2)}")
        assert "adapter folder does not exist" in failed[0]["body"]


AUTH = "pmg-admin:correct horse battery staple"


def _after_prefect_env(env: dict[str, str], argv: list[str]) -> list[str]:
    """`argv` run as the Makefile's Prefect targets run it: after reading prefect.env (state kept here)."""
    keep = " ".join(f'{name}="{env[name]}"' for name in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH"))
    return ["bash", "-c", f'set -a; . "{ROOT / "prefect.env"}"; set +a; export {keep}; exec "$0" "$@"', *argv]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server started as `make prefect-server` does (prefect.env, `flows.launch`), with an auth string."""
    home = tmp_path_factory.mktemp("prefect-auth-server")
    port = _free_port()
    env = _env(home, PMG_PREFECT_AUTH_STRING=AUTH, PMG_PREFECT_PORT=str(port))
    command = _after_prefect_env(env, [sys.executable, "-m", "flows.launch", "server", "--port", str(port)])
    with _serve(home, port, command, env) as server:
        yield server


@pytest.mark.timeout(300)
def test_an_api_with_an_auth_string_refuses_clients_without_it_and_serves_those_with_it(
    auth_server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """HTTP 401 without the string or with a wrong one; the project's deploy code and a worker use it."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, temporary_settings

    url = auth_server["url"]
    user, password = AUTH.split(":", 1)
    answers = {
        "none": httpx.post(f"{url}/work_pools/filter", json={}, timeout=10),
        "wrong": httpx.post(f"{url}/work_pools/filter", json={}, auth=(user, "guess"), timeout=10),
        "right": httpx.post(f"{url}/work_pools/filter", json={}, auth=(user, password), timeout=10),
    }
    codes = {k: r.status_code for k, r in answers.items()}
    assert codes == {"none": 401, "wrong": 401, "right": 200}

    # A Prefect client without the string: `python -m flows.deploy` says so in one line.
    with _api(url), temporary_settings(restore_defaults={PREFECT_API_AUTH_STRING}):
        assert deploy.main(["setup"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            f"pmg: error: the Prefect API {url} refused the request (401 Unauthorized): "
            "set PMG_PREFECT_AUTH_STRING to the server's auth string before reading prefect.env"
        ]
    # With it: the pool, its queues and the automations are made; a worker started as
    # `make worker` does (prefect.env, flows.launch) registers with the pool.
    with _api(url), temporary_settings(updates={PREFECT_API_AUTH_STRING: AUTH}):
        assert deploy.setup(gpu_slots=1)["pool"] == deploy.POOL
        log = auth_server["home"] / "worker.log"
        env = _env(auth_server["home"] / "worker", PMG_PREFECT_API_URL=url, PMG_PREFECT_AUTH_STRING=AUTH)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                _after_prefect_env(
                    env,
                    [sys.executable, "-m", "flows.launch", "worker", "--pool", deploy.POOL,
                     "--type", "process", "--name", "worker-auth"],
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=auth_server["home"],
                start_new_session=True,
            )
        try:
            with get_client(sync_client=True) as client:

                def registered() -> list[Any]:
                    if proc.poll() is not None:
                        tail = log.read_text(errors="replace")[-3000:]
                        pytest.fail(f"the worker exited with {proc.returncode}:\n{tail}")
                    workers = client.read_workers_for_work_pool(deploy.POOL)
                    return [w for w in workers if w.name == "worker-auth"]

                worker = _wait_for("the worker to register", registered, 90, [log, auth_server["log"]])[0]
        finally:
            _stop(proc)
    print(f"\nPOST /api/work_pools/filter without, with a wrong, with the auth string: {codes}")
    print(f"worker {worker.name}: last heartbeat {worker.last_heartbeat_time}")
    assert "401" not in log.read_text(errors="replace")
