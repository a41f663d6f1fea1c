"""Bad checkpoints and devices fail at load time with one line naming both sides; weights load from safetensors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from pmg.cli import main
from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import tiny
from pmg.models.captioner import load_captioner
from pmg.models.generator import load_generator
from pmg.models.llm import load_llm
from pmg.models.scorer import CONFIG_NAME, WEIGHTS_NAME, convert_open_clip_checkpoint, load_scorer

KEY = "profiles.full.llm"


def test_llm_of_another_architecture(tiny_llm_dir: Path) -> None:
    spec = ModelSpec(kind="hf", path=str(tiny_llm_dir), architecture="MistralForCausalLM")
    with pytest.raises(
        ModelError,
        match=rf"{KEY}\.path = '{tiny_llm_dir}': holds LlamaForCausalLM \(config.json\), but {KEY}\.architecture is 'MistralForCausalLM'",
    ):
        load_llm(spec, "cpu", key=KEY)
    assert load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir), architecture="LlamaForCausalLM"), "cpu")


def test_pipeline_of_another_class(tiny_sd_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sdxl"
    shutil.copytree(tiny_sd_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionXLPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    key = "profiles.full.generator"
    with pytest.raises(
        ModelError,
        match=rf"{key}\.path = '{folder}': holds a StableDiffusionXLPipeline \(model_index.json\), but the generator must be a StableDiffusionPipeline",
    ):
        load_generator(ModelSpec(kind="diffusers", path=str(folder)), "cpu", key=key)


def test_captioner_of_another_architecture(tmp_path: Path) -> None:
    folder = tiny.save_tiny_blip2(tmp_path / "blip2", seed=0)
    key = "profiles.full.captioner"
    spec = ModelSpec(kind="blip2", path=str(folder), architecture="InstructBlipForConditionalGeneration")
    with pytest.raises(ModelError, match=r"holds Blip2ForConditionalGeneration \(config.json\), but .*architecture is 'Instruct"):
        load_captioner(spec, "cpu", key=key)


def test_cuda_asked_where_there_is_none_is_an_error_not_a_cpu_run(tiny_llm_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"profiles\.full\.llm: device 'cuda' asked for, but CUDA is not available"):
        load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir)), "cuda", key=KEY)
    assert load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir)), "auto").device.type == "cpu"


# ------------------------------------------------------------------ no pickles


def _pickled_open_clip(tmp_path: Path) -> tuple[Path, torch.nn.Module, Path]:
    """A tiny CLIP saved as open_clip's laion folders ship it: config + `open_clip_pytorch_model.bin` (a pickle)."""
    model, cfg = tiny.build_tiny_open_clip(seed=0)
    folder = tiny.save_tiny_open_clip(tmp_path / "safe", seed=0)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(folder / CONFIG_NAME, pickled / CONFIG_NAME)
    torch.save(model.state_dict(), pickled / "open_clip_pytorch_model.bin")
    return pickled, model, folder


def test_pickled_weights_are_refused_with_the_converter_named(tmp_path: Path) -> None:
    pickled, _, _ = _pickled_open_clip(tmp_path)
    key = "profiles.full.scorer"
    with pytest.raises(ModelError, match=r"holds only pickled weights \(open_clip_pytorch_model.bin\).* `pmg models convert-clip"):
        load_scorer(ModelSpec(kind="open_clip", path=str(pickled)), "cpu", key=key)
    with pytest.raises(ModelError, match=r"a pickled checkpoint; weights load from safetensors only"):
        load_scorer(
            ModelSpec(kind="open_clip", name="ViT-B-32", path=str(pickled / "open_clip_pytorch_model.bin")), "cpu", key=key
        )


def test_convert_once_then_load_the_same_model(tmp_path: Path, capsys) -> None:
    pickled, _, safe = _pickled_open_clip(tmp_path)
    out = tmp_path / "converted"
    assert main(["models", "convert-clip", str(pickled), str(out)]) == 0
    assert (out / WEIGHTS_NAME).is_file() and not list(out.glob("*.bin"))
    converted = load_scorer(ModelSpec(kind="open_clip", path=str(out)), "cpu")
    original = load_scorer(ModelSpec(kind="open_clip", path=str(safe)), "cpu")
    images = [Image.new("RGB", (40, 40), c) for c in ("red", "teal")]
    assert torch.equal(converted.embed_images(images), original.embed_images(images))
    assert torch.equal(converted.embed_texts(["a red dress"]), original.embed_texts(["a red dress"]))


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path("/tmp/pmg-pwned-by-a-checkpoint"),))


def test_a_pickle_that_runs_code_is_refused_by_the_restricted_loader(tmp_path: Path) -> None:
    pickled, model, _ = _pickled_open_clip(tmp_path)
    marker = Path("/tmp/pmg-pwned-by-a-checkpoint")
    marker.unlink(missing_ok=True)
    state = dict(model.state_dict())
    state["payload"] = _Exploit()
    torch.save(state, pickled / "open_clip_pytorch_model.bin")
    with pytest.raises(ModelError, match=r"open_clip_pytorch_model.bin: could not convert: UnpicklingError"):
        convert_open_clip_checkpoint(pickled, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
