"""Captioners: CLIP retrieval over a vocabulary, BLIP and BLIP-2 round trips, kind checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import tiny
from pmg.models.captioner import BlipCaptioner, ClipRetrievalCaptioner, load_captioner
from pmg.models.scorer import Scorer

KEY = "profiles.mini.captioner"
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


class ColourScorer:
    """Embeds an image by its mean colour and a phrase by the colour words it names."""

    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        means = torch.tensor(np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images]))
        return torch.nn.functional.normalize(means, dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        vectors = torch.tensor(
            [[sum(c[i] for word, c in COLOURS.items() if word in t) + 1e-3 for i in range(3)] for t in texts]
        )
        return torch.nn.functional.normalize(vectors, dim=-1)


def test_retrieval_picks_the_closest_phrases_best_first() -> None:
    vocabulary = ["blue", "red", "green", "red", "purple red blue"]
    captioner = ClipRetrievalCaptioner(ColourScorer(), vocabulary, top_k=2)  # type: ignore[arg-type]
    assert captioner.vocabulary == ["blue", "red", "green", "purple red blue"]  # duplicates dropped
    red = Image.new("RGB", (8, 8), (250, 10, 10))
    magenta = Image.new("RGB", (8, 8), (200, 0, 210))
    assert captioner.caption([red, magenta]) == ["red, purple red blue", "purple red blue, blue"]
    assert captioner.with_vocabulary(["green", "red"], top_k=1).caption([red]) == ["red"]
    assert captioner.caption([]) == []


def test_retrieval_with_the_tiny_clip_matches_its_similarities(tiny_scorer: Scorer) -> None:
    vocabulary = ["red dress", "blue shirt", "striped", "dotted", "movie poster", "smiling face"]
    captioner = ClipRetrievalCaptioner(tiny_scorer, vocabulary, top_k=3)
    images = _images(4)
    similarities = tiny_scorer.embed_images(images) @ tiny_scorer.embed_texts(vocabulary).T  # (4, 6)
    expected = [
        ", ".join(vocabulary[i] for i in row.argsort(descending=True)[:3].tolist()) for row in similarities
    ]
    assert captioner.caption(images) == expected


def test_load_retrieval_captioner_from_the_clip_folder(tiny_clip_dir: Path, tiny_scorer: Scorer) -> None:
    spec = ModelSpec(kind="clip-retrieval", path=str(tiny_clip_dir))
    loaded = load_captioner(spec, "cpu", key=KEY, vocabulary=["red", "blue"], top_k=1)
    shared = load_captioner(spec, "cpu", key=KEY, vocabulary=["red", "blue"], top_k=1, scorer=tiny_scorer)
    assert isinstance(loaded, ClipRetrievalCaptioner) and shared.scorer is tiny_scorer
    assert loaded.caption(_images(3)) == shared.caption(_images(3))
    with pytest.raises(ModelError, match=rf"{KEY}: a clip-retrieval captioner needs the caller's vocabulary"):
        load_captioner(spec, "cpu", key=KEY)
    with pytest.raises(ModelError, match="vocabulary is empty"):
        load_captioner(spec, "cpu", key=KEY, vocabulary=["", "  "], scorer=tiny_scorer)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_blip(tmp_path_factory.mktemp("zoo") / "blip", seed=0)


def _reference_captions(captioner: BlipCaptioner, images: list[Image.Image]) -> list[str]:
    inputs = captioner.processor(images=images, return_tensors="pt")
    with torch.no_grad():
        output = captioner.model.generate(**inputs, max_new_tokens=captioner.max_new_tokens, do_sample=False)
    return [text.strip() for text in captioner.processor.batch_decode(output, skip_special_tokens=True)]


def test_blip_round_trip(blip_dir: Path) -> None:
    captioner = load_captioner(ModelSpec(kind="blip", path=str(blip_dir)), "cpu", key=KEY, max_new_tokens=6)
    assert isinstance(captioner, BlipCaptioner)
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration" and not captioner.model.training
    images = _images(3)
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captions == _reference_captions(captioner, images)
    captioner.batch_size = 2  # batching does not change captions
    assert captioner.caption(images) == captions


def test_blip2_round_trip(tmp_path: Path) -> None:
    folder = tiny.save_tiny_blip2(tmp_path / "blip2", seed=0)
    captioner = load_captioner(ModelSpec(kind="blip2", path=str(folder)), "cpu", key=KEY, max_new_tokens=4)
    assert type(captioner.model).__name__ == "Blip2ForConditionalGeneration"
    images = _images(2)
    assert captioner.caption(images) == _reference_captions(captioner, images)


def test_checkpoint_of_another_kind_is_refused(blip_dir: Path, tiny_llm_dir: Path) -> None:
    with pytest.raises(
        ModelError, match=rf"{KEY}\.path = '{blip_dir}': holds a 'blip' model, but {KEY}\.kind is 'blip2'"
    ):
        load_captioner(ModelSpec(kind="blip2", path=str(blip_dir)), "cpu", key=KEY)
    with pytest.raises(ModelError, match=rf"holds a 'llama' model, but {KEY}\.kind is 'blip'"):
        load_captioner(ModelSpec(kind="blip", path=str(tiny_llm_dir)), "cpu", key=KEY)
    with pytest.raises(ModelError, match=rf"{KEY}\.kind: unknown captioner kind 'git'"):
        load_captioner(ModelSpec(kind="git", path=str(blip_dir)), "cpu", key=KEY)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{tmp_path / 'blip'}': no such file or folder"):
        load_captioner(ModelSpec(kind="blip", path=str(tmp_path / "blip")), "cpu", key=KEY)
