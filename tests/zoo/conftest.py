"""Tiny stand-ins for the mini zoo's inputs: a random-init BERT text tower and coloured squares."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

# A caption per colour; colour names are the clothing world's, so the colour check applies.
SQUARE_COLOURS = {
    "red": (215, 25, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 225),
    "yellow": (245, 195, 10),
}
WORDS = ["a", "square", "red", "green", "blue", "yellow", "small", "big"]


def save_tiny_text_tower(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer random-init `BertModel` (width 32) and a WordLevel tokenizer, as a Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=16,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    BertModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def square_pairs(folder: Path) -> pd.DataFrame:
    """Twelve 32 px images, three per colour: a square of that colour at three sizes on white.

    The middle-sized square of each colour is held out.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for colour, rgb in SQUARE_COLOURS.items():
        for side, split in ((12, "train"), (18, "heldout"), (26, "train")):
            image = Image.new("RGB", (32, 32), (255, 255, 255))
            start = (32 - side) // 2
            image.paste(Image.new("RGB", (side, side), rgb), (start, start))
            file = folder / f"{colour}-{side}.png"
            image.save(file)
            rows.append(
                {
                    "scenario": "clothing",
                    "item_id": f"{colour}-{side}",
                    "image_file": str(file),
                    "caption": f"{colour} square",
                    "split": split,
                    "attributes": {"colour": colour},
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_text_tower(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_tower(tmp_path_factory.mktemp("text-tower") / "bert")


@pytest.fixture(scope="session")
def squares(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return square_pairs(tmp_path_factory.mktemp("squares"))
