"""The image-text scorer (CLIP) that picks among candidates, loaded with open_clip.

Two on-disk forms, both read by open_clip itself:

- `name` a built-in architecture (e.g. `ViT-B-32`) + `path` a checkpoint file
  (`.bin`, `.pt`, `.safetensors`):
  `open_clip.create_model_and_transforms(name, pretrained=path)`.
- `path` a folder holding `open_clip_config.json` (`{"model_cfg": ...,
  "preprocess_cfg": ...}`) and `open_clip_model.safetensors` — open_clip's
  hub format, read from disk through its `local-dir:` schema. Custom
  architectures (the mini profile's small CLIP) use this; write one with
  :func:`save_open_clip_folder`. `name` is then only a label.

Embeddings are L2-normalised, so a dot product is the cosine similarity the
selection step uses (`d_p = cos(e_M, e_p)`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.io import output_folder
from pmg.models.common import as_device, loading, require
from pmg.models.device import resolve_dtype

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


class Scorer:
    """An open_clip model with its image transform and tokenizer.

    Args:
        model: the open_clip model, on its device, in eval mode.
        preprocess: the eval image transform (PIL -> (3, H, W) tensor).
        tokenizer: the open_clip tokenizer (list[str] -> (N, context) ids).
        batch_size: images or texts per forward pass.
    """

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, *, batch_size: int = 32) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The model's weight dtype."""
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Embed images.

        Args:
            images: N PIL images of any size or mode (converted to RGB).

        Returns:
            (N, D) L2-normalised embeddings, float32, on CPU.
        """
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack(
                [self.preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]]
            )
            features = self.model.encode_image(batch.to(self.device, self.dtype))  # (b, D)
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embed texts.

        Args:
            texts: N strings (truncated to the tokenizer's context length).

        Returns:
            (N, D) L2-normalised embeddings, float32, on CPU.
        """
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a list of strings, not one string")
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size]))  # (b, context)
            features = self.model.encode_text(tokens.to(self.device))  # (b, D)
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, self.embed_dim)

    @property
    def embed_dim(self) -> int:
        """D, the joint embedding width."""
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, torch.Tensor):
            return int(projection.shape[-1])
        return int(self.embed_texts(["a"]).shape[-1])


def load_scorer(spec: ModelSpec, device: str | torch.device = "auto", *, key: str = "scorer") -> Scorer:
    """Load an open_clip model from a checkpoint file or an open_clip folder.

    Args:
        spec: `kind: open_clip`; `path` a folder with `open_clip_config.json`
            (custom architectures) or a checkpoint file with `name` the
            built-in architecture; `name` may also be an `hf-hub:org/repo`
            id with `path` unset (needs a reachable hub).
        device: `auto`, `cpu`, `cuda[:N]` or a `torch.device`.
        key: the spec's config key, for messages.

    Raises:
        ModelError: naming `key` and the path.
    """
    import open_clip

    if spec.kind not in ("open_clip", "clip-retrieval"):
        raise ModelError(f"{key}.kind: unknown scorer kind {spec.kind!r}; use open_clip")
    torch_device = as_device(device, key)
    dtype = resolve_dtype(spec.dtype, torch_device, key=f"{key}.dtype")
    precision = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]

    extra: dict = {}
    if spec.path is None and spec.name and spec.name.startswith("hf-hub:"):
        model_name, pretrained, source = spec.name, None, spec.name
    else:
        source = require(spec, "path", key)
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / CONFIG_NAME).is_file():
                raise ModelError(
                    f"{key}.path = {source!r}: folder has no {CONFIG_NAME}; an open_clip folder holds "
                    f"{CONFIG_NAME} and {WEIGHTS_NAME} (or give a checkpoint file and {key}.name)"
                )
            _require_weights(path, key)
            model_name, pretrained = f"local-dir:{path}", None
            extra = text_tower_override(path)
        elif path.is_file():
            model_name, pretrained = require(spec, "name", key), str(path)
            if model_name not in open_clip.list_models():
                raise ModelError(
                    f"{key}.name = {model_name!r}: not a built-in open_clip architecture (for a custom one, "
                    f"point {key}.path at a folder with {CONFIG_NAME})"
                )
        else:
            raise ModelError(
                f"{key}.path = {source!r}: no such file or folder (resolved to {path.resolve()})"
            )

    what = "an open_clip model (a checkpoint for the named architecture, or an open_clip folder)"
    with loading(key, source, what, hub=source.startswith("hf-hub:")):
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, precision=precision, device=torch_device, weights_only=True, **extra
        )
        tokenizer = open_clip.get_tokenizer(model_name)
    model.eval()
    return Scorer(model, preprocess, tokenizer)


def text_tower_override(folder: str | Path) -> dict:
    """open_clip keyword arguments that make a saved mini CLIP load from any working directory.

    `text_cfg.hf_model_name` is stored as the path the folder was written
    to; from another working directory that relative path does not resolve.
    Passing the returned dict to `open_clip.create_model(_and_transforms)`
    replaces `text_cfg` with one naming `folder` itself (which holds the
    text tower's config). The tokenizer needs nothing: open_clip reads a
    `local-dir:` tokenizer from the folder anyway.

    Returns:
        `{"text_cfg": {...}}`, or `{}` when the folder's model has no Hugging
        Face text tower or its config is not in the folder.
    """
    folder = Path(folder)
    model_cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"]
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    if "hf_model_name" not in text_cfg or not (folder / "config.json").is_file():
        return {}
    text_cfg["hf_model_name"] = str(folder)
    # open_clip turns this off itself when a full checkpoint is found, but on the
    # config it read, which a `text_cfg` keyword replaces: the weights come from
    # the folder's safetensors, never from `from_pretrained`.
    text_cfg["hf_model_pretrained"] = False
    if text_cfg.get("hf_tokenizer_name"):
        text_cfg["hf_tokenizer_name"] = str(folder)
    return {"text_cfg": text_cfg}


# ------------------------------------------------------------------------ gate


def _require_weights(folder: Path, key: str) -> None:
    # open_clip only warns when a local-dir has a config but no weights; an
    # untrained scorer would silently rank candidates at random.
    if not any(any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.bin", "*.pth")):
        raise ModelError(
            f"{key}.path = {str(folder)!r}: {CONFIG_NAME} found but no weights file ({WEIGHTS_NAME})"
        )


def save_open_clip_folder(
    model: torch.nn.Module,
    model_cfg: dict,
    out_dir: str | Path,
    *,
    preprocess_cfg: dict | None = None,
) -> Path:
    """Write an open_clip model as a folder `load_scorer` (and open_clip's `local-dir:`) reads.

    Uses open_clip's own hub writer for the config; weights go to
    `open_clip_model.safetensors`. Written to a temporary sibling, then renamed.

    Args:
        model: the open_clip model (CLIP / CustomTextCLIP).
        model_cfg: the architecture config it was built from (`embed_dim`,
            `vision_cfg`, `text_cfg`, ...), as open_clip's JSON configs spell it.
        out_dir: the folder to write (replaced when it exists).
        preprocess_cfg: extra preprocessing settings to record (`mean`, `std`,
            `interpolation`, `resize_mode`); defaults to the model's own.

    Returns:
        `out_dir`.
    """
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.push_to_hf_hub import save_config_for_hf
    from safetensors.torch import save_file

    # `create_model` sets these; a model built directly from its class lacks them.
    for name, default in (("image_mean", OPENAI_DATASET_MEAN), ("image_std", OPENAI_DATASET_STD)):
        if getattr(model.visual, name, None) is None:
            setattr(model.visual, name, tuple(default))
    out_dir = Path(out_dir)
    with output_folder(out_dir) as tmp:
        save_config_for_hf(model, tmp / CONFIG_NAME, model_config=model_cfg)
        if preprocess_cfg:
            config = json.loads((tmp / CONFIG_NAME).read_text())
            config["preprocess_cfg"].update(preprocess_cfg)
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME))
    return out_dir
