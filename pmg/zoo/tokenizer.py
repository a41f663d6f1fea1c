"""A CLIP tokenizer built from the BPE vocabulary that ships inside open_clip.

No model hub is reachable, yet a Stable Diffusion pipeline wants a
`CLIPTokenizer` folder (`vocab.json` + `merges.txt`). open_clip packages
OpenAI's `bpe_simple_vocab_16e6.txt.gz`; CLIP's vocabulary is a pure function
of it, built the way `open_clip.tokenizer.SimpleTokenizer` (and OpenAI's
original) builds it:

1. the 256 byte symbols of `bytes_to_unicode()`, in its order;
2. the same 256 symbols with the end-of-word suffix `</w>`;
3. one token per merge, the first 48,894 merges of the file (line 1 is a
   version header), in file order;
4. `<|startoftext|>` (49406) and `<|endoftext|>` (49407).

That is 49,408 tokens, the same ids as OpenAI CLIP and SD 1.x. open_clip
spells the two specials `<start_of_text>` / `<end_of_text>`; the ids agree.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from pmg.errors import ModelError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"

N_MERGES = 49152 - 256 - 2
"""Merges CLIP uses: vocabulary 49,152 minus the 256 bytes, minus 2 (OpenAI's construction)."""

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def default_bpe_path() -> Path:
    """The BPE merges file open_clip ships (`open_clip/bpe_simple_vocab_16e6.txt.gz`).

    Found without importing open_clip (whose import pulls in torch and timm).
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ModelError("open_clip is not installed; it ships CLIP's BPE file (pip install open_clip_torch)")
    path = Path(spec.origin).parent / BPE_FILE
    if not path.is_file():
        raise ModelError(f"open_clip at {path.parent} has no {BPE_FILE}")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode character map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes), strict=True))


def clip_vocab_and_merges(bpe_path: str | Path | None = None) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges from a `bpe_simple_vocab_16e6.txt.gz` file.

    Args:
        bpe_path: the gzip merges file; None uses open_clip's packaged one.

    Returns:
        (token -> id for 49,408 tokens, merges as `"a b"` lines in rank order).
    """
    path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(pair) != 2 for pair in merges):
        raise ValueError(f"{path}: expected {N_MERGES} merge lines of two symbols after the header")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(pair) for pair in merges]
    tokens += [BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: the merges produce duplicate tokens")
    return vocab, [" ".join(pair) for pair in merges]


def write_clip_tokenizer_files(folder: str | Path, bpe_path: str | Path | None = None) -> Path:
    """Write `vocab.json` and `merges.txt` (CLIP's on-disk format) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # Hugging Face's merges.txt starts with a version line, like OpenAI's file.
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def build_clip_tokenizer(model_max_length: int, bpe_path: str | Path | None = None):
    """A `transformers.CLIPTokenizer` with CLIP's vocabulary, padding with `<|endoftext|>` (as SD 1.x).

    Args:
        model_max_length: tokens per prompt including BOS and EOS; prompts are
            padded / truncated to it by the Stable Diffusion pipeline.
        bpe_path: the merges file; None uses open_clip's packaged one.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_path)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(line.split(" ")) for line in merges],
        model_max_length=model_max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
