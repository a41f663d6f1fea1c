"""End to end: every method stage on a shrunken config with tiny random models.

prepare -> describe -> keywords -> train_soft -> generate -> select, then
`pmg personalize`, through the CLI and into tmp_path, with seeded tiny
models saved in the libraries' own formats (the same loading code as the
zoo). Tiny random models make no sense of content, so this checks the
wiring, the tables and the files, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmg import schemas
from pmg.cli import main
from pmg.io import read_table
from pmg.models.tiny import save_tiny_llm, save_tiny_open_clip, save_tiny_sd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chain_args(tmp_path_factory: pytest.TempPathFactory, packaged_data_assets: Path) -> list[str]:
    root = tmp_path_factory.mktemp("chain")
    save_tiny_llm(root / "llm")
    save_tiny_sd(root / "sd")
    save_tiny_open_clip(root / "clip")
    sets = {
        "assets.folder": packaged_data_assets,
        "prepare.out": root / "prepared",
        "prepare.image_size": 32,
        "prepare.clothing.n_items": 60,
        "prepare.clothing.n_users": 8,
        "prepare.emoji.n_users": 6,
        "prepare.movies.max_users": 10,
        # A few users per scenario: shares that leave every split at least one of them.
        "prepare.user_split.validation": 0.2,
        "prepare.user_split.test": 0.3,
        "prepare.user_split.min_users": 1,
        "profiles.mini.device": "cpu",
        "profiles.mini.llm.path": root / "llm",
        "profiles.mini.generator.path": root / "sd",
        "profiles.mini.scorer.path": root / "clip",
        "profiles.mini.captioner.path": root / "clip",
        "describe.out": root / "describe",
        "describe.max_users": 4,
        "describe.max_test_users": 2,   # clothing and emoji (adapters) describe train users too
        "describe.llm_cache": root / "cache",
        "keywords.out": root / "keywords",
        "keywords.llm_cache": root / "cache",
        "keywords.max_new_tokens": 6,
        "keywords.target_max_new_tokens": 6,
        "train_soft.out": root / "soft",
        "train_soft.scenarios": "[clothing, emoji]",
        "train_soft.steps": 3,
        "train_soft.batch_size": 2,
        "train_soft.val_every": 3,
        "train_soft.val_draws": 1,
        "generate.out": root / "generate",
        "generate.steps": 2,
        "select.out": root / "select",
    }
    args = ["--params", str(ROOT / "params.yaml")]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.slow
def test_all_method_stages_then_personalize(
    chain_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # stage metrics land under tmp_path/metrics
    root = Path(next(a.split("=", 1)[1] for a in chain_args if a.startswith("describe.out="))).parent
    for command in ("prepare", "describe", "keywords", "train_soft", "generate", "select"):
        assert main([*chain_args, command]) == 0, command
    for scenario in ("clothing", "movies", "emoji"):
        keywords = read_table(root / "keywords" / f"{scenario}.parquet", schemas.Keywords)
        splits = read_table(root / "prepared" / scenario / "splits.parquet", schemas.Splits)
        n_test = int((splits["split"] == "test").sum())
        # Adapter scenarios: 4 users, test first (at most 2); movies (no adapter): its test users only.
        assert len(keywords) == (min(2, n_test) if scenario == "movies" else 4)
        candidates = read_table(root / "generate" / scenario / "candidates.parquet", schemas.Candidates)
        scores = read_table(root / "select" / f"{scenario}.parquet", schemas.Scores)
        # One chosen candidate per described pair, each image on disk.
        assert scores.groupby(["user_id", "target_item"])["chosen"].sum().eq(1).all()
        assert all((root / "generate" / scenario / p).is_file() for p in candidates["image_path"])
        # The protocol: only test users are generated for (and so evaluated).
        split_of = dict(zip(splits["user_id"].astype(str), splits["split"]))
        assert {split_of[u] for u in candidates["user_id"].astype(str)} == {"test"}
        described_test = {u for u in keywords["user_id"].astype(str) if split_of[u] == "test"}
        assert set(candidates["user_id"].astype(str)) == described_test
        generate_metrics = json.loads((tmp_path / "metrics" / "generate" / f"{scenario}.json").read_text())
        # Movies has no adapter (not in train_soft.scenarios): keywords only, said so.
        assert generate_metrics["soft_embeddings"] is (scenario != "movies")
    soft_metrics = json.loads((tmp_path / "metrics" / "train_soft" / "clothing.json").read_text())
    assert soft_metrics["trained"] and soft_metrics["steps"] == 3
    assert (root / "soft" / "clothing" / "adapter.safetensors").is_file()
    # The adapter records the soft model's base (`soft_llm`, here the default: `llm`).
    config = json.loads((root / "soft" / "clothing" / "adapter_config.json").read_text())
    assert config["base_llm_spec"]["path"] == str(root / "llm")
    # It learned from train users and validated on validation users; no test user was seen.
    splits = read_table(root / "prepared" / "clothing" / "splits.parquet", schemas.Splits)
    split_of = dict(zip(splits["user_id"].astype(str), splits["split"]))
    assert config["train_users"] and {split_of[u] for u in config["train_users"]} == {"train"}
    assert {split_of[u] for u in config["val_users"]} <= {"validation"}
    for stage in ("prepare", "describe", "keywords", "train_soft", "generate", "select"):
        assert (tmp_path / "metrics" / "timings" / stage / "clothing.json").is_file(), stage
    curve = (tmp_path / "plots" / "train_soft" / "clothing.csv").read_text().splitlines()
    assert curve[0] == "step,train_loss,val_loss,val_loss_zeroed" and len(curve) == 4

    # The whole chain for one pair with any catalogue item as the target.
    prepared_splits = read_table(root / "prepared" / "clothing" / "splits.parquet", schemas.Splits)
    user = prepared_splits["user_id"].iloc[0]
    history = set(json.loads(prepared_splits["history_items"].iloc[0]))
    items = read_table(root / "prepared" / "clothing" / "items.parquet", schemas.Items)
    target = next(i for i in items["item_id"] if i not in history)
    capsys.readouterr()
    import pmg.models.llm

    llm_loads = []
    load_llm = pmg.models.llm.load_llm
    monkeypatch.setattr(pmg.models.llm, "load_llm", lambda *a, **k: llm_loads.append(1) or load_llm(*a, **k))
    status = main([*chain_args, "personalize", "--scenario", "clothing", "--user", user, "--target", target])
    out = capsys.readouterr().out
    assert status == 0, out
    # The soft model is built on the LLM the keywords used: one load, not two.
    assert "soft embeddings:     yes" in out and len(llm_loads) == 1
    assert f"user {user}, target {target}" in out and "chosen:" in out
    chosen = out.strip().splitlines()[-1].split("chosen: ")[1].split(" (weights")[0]
    assert Path(chosen).is_file()


def test_personalize_unknown_user_and_target_are_clear(
    chain_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*chain_args, "prepare", "--scenario", "emoji"]) == 0
    capsys.readouterr()
    assert main([*chain_args, "personalize", "--scenario", "emoji", "--user", "nobody", "--target", "x"]) == 2
    assert "unknown user 'nobody'" in capsys.readouterr().err
    assert main([*chain_args, "personalize", "--scenario", "emoji", "--user", "e0001", "--target", "nope"]) == 2
    assert "unknown target item 'nope'" in capsys.readouterr().err
