"""`pmg models fetch`: pinned commits, verified files, one clear line when the hub is not there.

The download path runs the real huggingface_hub client against a local fake
hub (`fake_hub.FakeHub`, reached through huggingface_hub's endpoint setting);
no test reaches the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import constants

from pmg.cli import main
from pmg.config import ModelSpec, load_params
from pmg.errors import ModelError
from pmg.models import fetch
from pmg.models.fetch import FETCH_RULES, LOCK_FILE, FetchRule, fetch_spec
from pmg.models.generator import load_generator
from pmg.models.llm import load_llm
from pmg.models.scorer import load_scorer
from fake_hub import FakeHub, FakeRepo  # tests/models/ is on sys.path (pytest's default import mode)

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "pmg-test/tiny-sd"
KEY = "profiles.full.generator"


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite runs with HF_HUB_OFFLINE=1; these tests talk to a local hub only."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def tiny_sd_repo(tiny_sd_dir: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRepo:
    """The tiny SD pipeline as a hub commit holding fp16-named safetensors (as SD 1.5's fp16 files),
    plus a pickled weight file that must never be fetched, and a fetch rule naming the weights' sha256."""
    files: dict[str, bytes] = {}
    for path in sorted(tiny_sd_dir.rglob("*")):
        if path.is_file():
            name = path.relative_to(tiny_sd_dir).as_posix()
            files[name.replace(".safetensors", ".fp16.safetensors")] = path.read_bytes()
    files["unet/diffusion_pytorch_model.bin"] = b"pickled weights: never fetched"
    weights = sorted(name for name in files if name.endswith(".fp16.safetensors"))
    rule = FetchRule(
        files=("*.json", "*.txt", "*.fp16.safetensors", "*.bin"),
        required=("model_index.json", "unet/diffusion_pytorch_model.safetensors"),
        rename=((".fp16.safetensors", ".safetensors"),),
        sha256={COMMIT: {name: hashlib.sha256(files[name]).hexdigest() for name in weights}},
    )
    monkeypatch.setitem(FETCH_RULES, REPO, rule)
    return FakeRepo(commit=COMMIT, files=files, lfs=set(weights) | {"unet/diffusion_pytorch_model.bin"})


def _spec(folder: Path, **extra) -> ModelSpec:
    return ModelSpec(kind="diffusers", path=str(folder), safety_checker=False, hub=REPO, revision=COMMIT, **extra)


def test_fetch_verifies_renames_and_the_real_loader_reads_the_folder(online, tiny_sd_repo, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "sd"
    with FakeHub() as hub:
        hub.repos[REPO] = tiny_sd_repo
        record = fetch_spec(_spec(folder), key=KEY, endpoint=hub.url, say=lambda _: None)
    # Safetensors under the plain names diffusers loads; no pickle fetched.
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.fp16.*"))
    assert not (folder / ".cache").exists() and not (tmp_path / "models" / ".sd.partial").exists()
    lock = json.loads((folder / LOCK_FILE).read_text())
    assert lock == {k: v for k, v in record.items()} and lock["revision"] == COMMIT
    for name, facts in lock["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == facts["sha256"]
    assert lock["files"]["unet/diffusion_pytorch_model.safetensors"]["pinned"] is True
    generator = load_generator(_spec(folder), "cpu", key=KEY)
    assert generator.text_width == 32


def test_a_second_fetch_is_up_to_date_and_sends_no_request(online, tiny_sd_repo, tmp_path: Path) -> None:
    folder = tmp_path / "sd"
    with FakeHub() as hub:
        hub.repos[REPO] = tiny_sd_repo
        fetch_spec(_spec(folder), key=KEY, endpoint=hub.url, say=lambda _: None)
        sent = len(tiny_sd_repo.requests)
        again = fetch_spec(_spec(folder), key=KEY, endpoint=hub.url, say=lambda _: None)
        assert again["skipped"] is True and len(tiny_sd_repo.requests) == sent
        # A truncated file makes the folder stale: fetched again.
        weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1])
        assert "skipped" not in fetch_spec(_spec(folder), key=KEY, endpoint=hub.url, say=lambda _: None)


def test_bytes_that_do_not_match_the_commit_are_refused(online, tiny_sd_repo, tmp_path: Path) -> None:
    name = "unet/diffusion_pytorch_model.fp16.safetensors"
    good = tiny_sd_repo.files[name]
    tiny_sd_repo.served[name] = bytes([good[0] ^ 1]) + good[1:]  # same size, other bytes
    folder = tmp_path / "sd"
    with FakeHub() as hub, pytest.raises(ModelError, match=rf"{KEY}: {REPO}@0123456789ab: {name} sha256 \w+ != \w+ \(the commit.s LFS pointer\)"):
        hub.repos[REPO] = tiny_sd_repo
        fetch_spec(_spec(folder), key=KEY, endpoint=hub.url, say=lambda _: None)
    assert not folder.exists()  # nothing half-fetched under the final name


def test_a_hub_that_agrees_with_itself_but_not_with_the_pinned_sha256(online, tiny_sd_repo, tmp_path: Path) -> None:
    name = "vae/diffusion_pytorch_model.fp16.safetensors"
    tiny_sd_repo.files[name] = tiny_sd_repo.files[name][:-4] + b"\0\0\0\0"  # the hub's metadata follows it
    with FakeHub() as hub, pytest.raises(ModelError, match=rf"{name} sha256 \w+ != the pinned"):
        hub.repos[REPO] = tiny_sd_repo
        fetch_spec(_spec(tmp_path / "sd"), key=KEY, endpoint=hub.url, say=lambda _: None)


def test_small_files_are_checked_against_their_git_blob(online, tiny_sd_repo, tmp_path: Path) -> None:
    tiny_sd_repo.served["model_index.json"] = tiny_sd_repo.files["model_index.json"].replace(b"{", b" ", 1)
    with FakeHub() as hub, pytest.raises(ModelError, match=r"model_index.json does not match the commit's git blob"):
        hub.repos[REPO] = tiny_sd_repo
        fetch_spec(_spec(tmp_path / "sd"), key=KEY, endpoint=hub.url, say=lambda _: None)


def test_a_commit_without_the_required_safetensors(online, tiny_sd_repo, tmp_path: Path) -> None:
    del tiny_sd_repo.files["unet/diffusion_pytorch_model.fp16.safetensors"]
    with FakeHub() as hub, pytest.raises(
        ModelError, match=r"the commit has no \['unet/diffusion_pytorch_model.safetensors'\]"
    ):
        hub.repos[REPO] = tiny_sd_repo
        fetch_spec(_spec(tmp_path / "sd"), key=KEY, endpoint=hub.url, say=lambda _: None)


def test_gated_unknown_commit_and_unknown_repository(online, tiny_sd_repo, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with FakeHub() as hub:
        hub.repos[REPO] = tiny_sd_repo
        tiny_sd_repo.gated = True
        with pytest.raises(ModelError, match=r"access refused; the repository is gated: accept its licence at .* HF_TOKEN"):
            fetch_spec(_spec(tmp_path / "sd"), key=KEY, endpoint=hub.url, say=lambda _: None)
        tiny_sd_repo.gated = False
        other = ModelSpec(kind="diffusers", path=str(tmp_path / "sd"), hub=REPO, revision="f" * 40)
        with pytest.raises(ModelError, match=rf"the hub has no commit {'f' * 40}"):
            fetch_spec(other, key=KEY, endpoint=hub.url, say=lambda _: None)
        nowhere = ModelSpec(kind="diffusers", path=str(tmp_path / "sd"), hub="nobody/nothing", revision=COMMIT)
        with pytest.raises(ModelError, match=r"no such repository"):
            fetch_spec(nowhere, key=KEY, endpoint=hub.url, say=lambda _: None)


def test_offline_mode_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"HF_HUB_OFFLINE is set .* run `HF_HUB_OFFLINE=0 pmg models fetch --profile full`"):
        fetch_spec(_spec(tmp_path / "sd"), key=KEY, endpoint="http://127.0.0.1:9", say=lambda _: None)


def test_cli_with_no_hub_fails_in_one_line(online, monkeypatch, capsys) -> None:
    # Port 9 (discard) has no listener here: the same answer as a machine without network.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    status = main(["--params", str(ROOT / "params.yaml"), "models", "fetch", "--profile", "full", "--role", "scorer"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith(
        "pmg: error: profiles.full.scorer: laion/CLIP-ViT-B-32-laion2B-s34B-b79K@1a25a446712b at "
        "http://127.0.0.1:9: the hub is not reachable (ConnectError"
    )


def test_the_full_profile_is_pinned_and_safetensors_only() -> None:
    full = load_params(ROOT / "params.yaml").profiles["full"]
    for role in fetch.ROLES:
        spec = getattr(full, role)
        assert spec.hub in FETCH_RULES, role
        assert not Path(spec.path).is_absolute() and spec.path.startswith("models/")
        rule = FETCH_RULES[spec.hub]
        assert all(not pattern.endswith(fetch._PICKLE_SUFFIXES) for pattern in rule.files)
        # Pinned sha256 values belong to the pinned commit: a revision bump must bring new ones.
        assert not rule.sha256 or spec.revision in rule.sha256, role


def test_missing_full_folders_name_key_folder_and_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    full = load_params(ROOT / "params.yaml").profiles["full"]
    expected = r"`HF_HUB_OFFLINE=0 pmg models fetch --profile full`"
    with pytest.raises(ModelError, match=rf"profiles\.full\.llm\.path = 'models/llama-2-7b-chat': no such folder .*meta-llama/Llama-2-7b-chat-hf@f5db02db7245: fetch it with {expected}"):
        load_llm(full.llm, "cpu", key="profiles.full.llm")
    with pytest.raises(ModelError, match=rf"profiles\.full\.generator\.path = 'models/stable-diffusion-v1-5': no such folder .*{expected}"):
        load_generator(full.generator, "cpu", key="profiles.full.generator")
    with pytest.raises(ModelError, match=rf"profiles\.full\.scorer\.path = 'models/clip-vit-b-32': no such folder .*{expected}"):
        load_scorer(full.scorer, "cpu", key="profiles.full.scorer")


def test_a_hub_spec_needs_a_pinned_commit_and_a_local_path() -> None:
    from pmg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"profiles\.full\.llm: Value error, hub 'meta-llama/x' needs 'revision'"):
        load_params(ROOT / "params.yaml", {"profiles.full.llm.revision": None, "profiles.full.llm.hub": "meta-llama/x"})
    with pytest.raises(ConfigError, match=r"profiles\.full\.llm\.revision: String should match pattern"):
        load_params(ROOT / "params.yaml", {"profiles.full.llm.revision": "main"})
