"""Benchmark: peak GPU memory of the soft model's training step on the full profile, from a measured rehearsal.

The `train_soft` step of the `full` profile backpropagates the frozen SD 1.5
UNet's denoising loss through the soft preference model into a P-Tuning v2
prefix in every layer of the frozen Llama-2-7b-chat. Does it fit one 80 GB
GPU? No GPU is here, so the step is *measured* with the real code
(`pmg.method.train_soft.train_soft`, one step) on rehearsal models that have
the real structure where memory scales with it and a small width:

* the LLM: Llama-2's layout with the real **32 layers**, 32 heads, the real
  prompt length (`train_soft.max_prompt_tokens`, prompts long enough to be
  cut to it) and batch (`train_soft.batch_size`), hidden width `h` in
  `--widths` (intermediate width `h * 11008 / 4096`, as in Llama-2);
* the UNet: SD 1.5's blocks (2 layers per block, 8 heads, cross-attention
  768), base channels `c` in `--channels` (SD 1.5: 320), at latent sides `S`
  in `--latents` (SD 1.5 at 512 px: 64; the attention over 64 x 64 = 4096
  tokens is too slow for these 2 CPU cores, so the side is extrapolated too).

What is measured is the memory held for the backward pass: every tensor
autograd saves during the step (`torch.autograd.graph.saved_tensors_hooks`,
deduplicated by storage, parameters excluded), split into the LLM's and the
UNet's by forward hooks. It is linear in the width (every saved activation is
`tokens x width` or `pixels x channels`; attention is SDPA, whose saved state
is linear in the sequence length, and the head count is held at the real
one), so the LLM's is fitted as `A(h) = a + b * h` and extrapolated to
h = 4096; the UNet's is fitted as `A_S(c) = a_S + b_S * c` at each latent side
`S`, extrapolated to c = 320, and then linearly in the pixel count `S * S`
(every saved UNet tensor is per pixel, except the fixed-size text condition)
to S = 64. Each extrapolation is checked on a point left out of its fit: the
largest width (LLM), the largest channel count (UNet), and a run at an
intermediate side (`--check-latent`) predicted from the others. The expected
peak is

    peak = W_llm + W_sd + W_adapter + A_llm(4096) + A_unet(320) + margin,
    margin = 10 % of the activations (backward temporaries: the gradient of
             one layer's activations, and the allocator's rounding),

with the weights counted exactly from the real configurations (built on the
`meta` device, no memory) in the half precision the device rule gives a
bf16-capable GPU (2 bytes), and the adapter (prefix, tokens, projection) in
fp32 with its gradient and AdamW's two moments (16 bytes per parameter).
The step runs in bfloat16 here too, so the saved tensors have the dtypes they
have on the GPU (RMSNorm's float32 statistics included).

On a CUDA device the script also reads `torch.cuda.max_memory_allocated` for
each measured step, so a GPU run checks the saved-tensor count against the
allocator. `--real` runs the step at the real sizes (random weights) on CUDA.

    python benchmarks/bench_soft_memory.py [--widths 64 128 256] [--channels 32 64 96] [--latents 16 32]

Gradient checkpointing is *not* used: transformers' checkpointing drops the
KV cache inside checkpointed layers (`cache=None`), which would silently
remove the P-Tuning v2 prefix from the forward pass; the estimate says
whether it is needed.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pmg.config import TrainSoftConfig, load_params  # noqa: E402
from pmg.models import rehearsal as R  # noqa: E402

GIB = 1024**3
REAL_WIDTH, REAL_CHANNELS, REAL_LATENT = 4096, 320, 64


# ------------------------------------------------------------------- models


def llm_sizes(width: int) -> dict:
    """Llama-2-7b's config at hidden width `width`: 32 layers, 32 heads, MLP ratio 11008 / 4096."""
    return {
        "hidden_size": width,
        "intermediate_size": round(width * 11008 / 4096),
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
    }


def build_llm(width: int, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from pmg.models.llm import LocalLLM

    tokenizer = R.llama_tokenizer()
    values = R.apply_sizes(R.LLAMA_2_7B_CHAT, llm_sizes(width))
    values.update(num_key_value_heads=32, vocab_size=len(tokenizer), head_dim=width // 32)
    model = R._materialise(lambda: LlamaForCausalLM(LlamaConfig(**values)), device, dtype, 0)
    return LocalLLM(model, tokenizer, model_id=f"bench-llama-w{width}")


def unet_sizes(channels: int, latent: int) -> dict:
    return {"unet.block_out_channels": [channels, 2 * channels, 4 * channels, 4 * channels], "unet.sample_size": latent}


def build_generator(channels: int, latent: int, device: torch.device, dtype: torch.dtype, *, real: bool = False):
    """SD 1.5's pipeline with UNet base channels `channels` at the real 64 x 64 latents.

    The VAE and the text encoder run without gradient (before the step), so
    unless `real`, small ones with the same interface stand in (4 VAE levels:
    512 px -> 64 x 64 latents; text width 768, 77 positions); their real
    weights are counted analytically.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pmg.models.generator import ImageGenerator

    small_parts = {
        "vae.block_out_channels": [32, 32, 32, 32],
        "vae.layers_per_block": 1,
        "text_encoder.num_hidden_layers": 1,
    }
    values = R.apply_sizes(R.SD_1_5, {**unet_sizes(channels, latent), **({} if real else small_parts)})
    # The stand-ins run before the step, without gradient: fp32 keeps them fast on a CPU without bf16.
    side_dtype = dtype if real else torch.float32
    tokenizer = R.clip_tokenizer()
    text = {k: v for k, v in values["text_encoder"].items() if k != "architectures"}
    text.update(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    pipeline = StableDiffusionPipeline(
        vae=R._materialise(lambda: AutoencoderKL(**values["vae"]), device, side_dtype, 1),
        text_encoder=R._materialise(lambda: CLIPTextModel(CLIPTextConfig(**text)), device, side_dtype, 2),
        tokenizer=tokenizer,
        unet=R._materialise(lambda: UNet2DConditionModel(**values["unet"]), device, dtype, 0),
        scheduler=PNDMScheduler.from_config(values["scheduler"]),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    return ImageGenerator(pipeline)


def real_parameter_counts() -> dict[str, int]:
    """Exact parameter counts of Llama-2-7b-chat and SD 1.5's parts, built on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(**R.LLAMA_2_7B_CHAT))
        unet = UNet2DConditionModel(**R.SD_1_5["unet"])
        vae = AutoencoderKL(**R.SD_1_5["vae"])
        text = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in R.SD_1_5["text_encoder"].items() if k != "architectures"}))

    def count(module):
        return sum(p.numel() for p in module.parameters())

    return {"llm": count(llama), "unet": count(unet), "vae": count(vae), "text_encoder": count(text)}


# ------------------------------------------------------------------ measuring


class SavedTensors:
    """Bytes autograd saves for backward, per component, deduplicated by storage; parameters excluded."""

    def __init__(self, parameters: set[int], components: dict[str, torch.nn.Module]) -> None:
        self.parameters = parameters
        self.current = "other"
        self.bytes: dict[str, int] = {name: 0 for name in (*components, "other")}
        self.seen: set[int] = set()
        self.handles = []
        for name, module in components.items():
            self.handles.append(module.register_forward_pre_hook(lambda *_, n=name: self._enter(n)))
            self.handles.append(module.register_forward_hook(lambda *_: self._enter("other")))

    def _enter(self, name: str) -> None:
        self.current = name

    def pack(self, tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.parameters and pointer not in self.seen and storage.nbytes():
            self.seen.add(pointer)
            self.bytes[self.current] += storage.nbytes()
        return tensor

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(
    width: int, channels: int, latent: int, cfg: TrainSoftConfig, device: torch.device, dtype: torch.dtype
) -> dict:
    """One real `train_soft` step on a (width, channels, latent side) rehearsal; the bytes saved for backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from pmg.method.soft import _base_model, behaviour_prompt
    from pmg.method.train_soft import SoftExample, train_soft

    real = (width, channels, latent) == (REAL_WIDTH, REAL_CHANNELS, REAL_LATENT)
    llm = build_llm(width, device, dtype)
    generator = build_generator(channels, latent, device, dtype, real=real)
    side = latent * generator.pipeline.vae_scale_factor
    # Prompts long enough to be cut to max_prompt_tokens: the longest sequence the stage trains on.
    lines = [f"item {i}: a red wool coat with blue stripes, winter, casual" for i in range(40)]
    examples = [
        SoftExample(f"u{i}", behaviour_prompt("clothing", lines, []), "red, wool, striped", Image.new("RGB", (side, side), c))
        for i, c in enumerate(("red", "navy", "olive", "teal")[: max(cfg.batch_size, 2)])
    ]
    parameters = {
        p.untyped_storage().data_ptr()
        for module in (llm.model, generator.pipeline.unet, generator.pipeline.vae, generator.pipeline.text_encoder)
        for p in [*module.parameters(), *module.buffers()]
    }
    counter = SavedTensors(parameters, {"llm": _base_model(llm.model), "unet": generator.pipeline.unet})
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    flops = FlopCounterMode(display=False)
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack), flops:
        model, result = train_soft(cfg, examples, llm=llm, generator=generator, seed=0, log=lambda _: None)
    seconds = time.perf_counter() - started
    counter.close()
    row = {
        "width": width,
        "channels": channels,
        "latent": latent,
        "saved_llm_bytes": counter.bytes["llm"],
        "saved_unet_bytes": counter.bytes["unet"],
        "saved_other_bytes": counter.bytes["other"],
        "prompt_tokens": max(len(ids) for ids in [model.token_ids(e.prompt) for e in examples]),
        "step_seconds": round(result.metrics["train_seconds"], 2),
        "call_seconds": round(seconds, 2),
        "counted_gflop": round(flops.get_total_flops() / 1e9, 1),
    }
    if device.type == "cuda":
        row["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        row["cuda_weights_bytes"] = sum(
            p.numel() * p.element_size()
            for m in (llm.model, generator.pipeline.unet, generator.pipeline.vae, generator.pipeline.text_encoder)
            for p in m.parameters()
        )
    del llm, generator, model, result
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """This machine's dense matmul rate in the benchmark's dtype (best of `repeats`)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------- main


def _print_row(row: dict) -> None:
    extra = ""
    if "cuda_max_allocated_bytes" in row:
        extra = (
            f", CUDA max allocated {row['cuda_max_allocated_bytes'] / GIB:.3f} GiB "
            f"(weights {row['cuda_weights_bytes'] / GIB:.3f})"
        )
    print(
        f"  h={row['width']:4d} c={row['channels']:3d} S={row['latent']:2d}: saved LLM "
        f"{row['saved_llm_bytes'] / 2**20:8.1f} MiB, UNet {row['saved_unet_bytes'] / 2**20:8.1f} MiB, other "
        f"{row['saved_other_bytes'] / 2**20:.1f} MiB; {row['prompt_tokens']} prompt tokens; step "
        f"{row['step_seconds']} s, call {row['call_seconds']} s, {row['counted_gflop']} GFLOP{extra}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--widths", type=int, nargs=3, default=[64, 128, 256], help="LLM hidden widths measured")
    parser.add_argument("--channels", type=int, nargs=3, default=[32, 64, 96], help="UNet base channels measured")
    parser.add_argument("--latents", type=int, nargs=2, default=[16, 32], help="UNet latent sides measured")
    parser.add_argument("--check-latent", type=int, default=24, help="latent side of the run that checks the pixel fit")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="the GPU memory to fit in")
    parser.add_argument("--real", action="store_true", help="also run the real sizes (CUDA only)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)

    from pmg.models.device import resolve_device

    device = resolve_device(args.device, key="--device")
    if args.real and device.type != "cuda":
        parser.error("--real needs a CUDA device")
    dtype = torch.bfloat16
    torch.manual_seed(0)
    params = load_params(args.params)
    cfg = params.train_soft.model_copy(update={"steps": 1, "val_fraction": 0.0})
    print(
        f"train_soft step: batch {cfg.batch_size}, prompts cut to {cfg.max_prompt_tokens} tokens, L={cfg.num_tokens}, "
        f"S={cfg.prefix_length}; {dtype} on {device}; LLM 32 layers x 32 heads; SD 1.5 UNet blocks",
        flush=True,
    )
    started = time.perf_counter()
    (w0, *_), (s0, s1) = args.widths, args.latents
    # LLM width series and the UNet channel series at the small side, together; then the channel series
    # at the larger side (small LLM), then one run at an intermediate side to check the pixel fit.
    plan = [(w, c, s0) for w, c in zip(args.widths, args.channels)]
    plan += [(w0, c, s1) for c in args.channels]
    plan += [(w0, args.channels[-1], args.check_latent)]
    rows = []
    for width, channels, latent in plan:
        rows.append(measure(width, channels, latent, cfg, device, dtype))
        _print_row(rows[-1])
    figures: dict = {"rows": rows}

    # LLM: A(h) over the first three runs (same prompt tokens and batch in every run).
    llm_rows = rows[:3]
    xs, ys = [float(r["width"]) for r in llm_rows], [float(r["saved_llm_bytes"]) for r in llm_rows]
    a, b = fit(xs, ys)
    a2, b2 = fit(xs[:2], ys[:2])
    llm_real = a + b * REAL_WIDTH
    figures["llm"] = {"a": a, "b": b, "at_real": llm_real, "holdout_error": (a2 + b2 * xs[2] - ys[2]) / ys[2]}
    print(
        f"LLM: A(h) = {a / 2**20:.1f} MiB + {b / 2**20:.4f} MiB x h; fitting 2 widths predicts the 3rd within "
        f"{100 * abs(figures['llm']['holdout_error']):.1f} %; A(4096) = {llm_real / GIB:.2f} GiB"
    )

    # UNet: A_S(c) at each side, then linear in pixels.
    def unet_fit(side: int) -> tuple[float, float, float]:
        series = [r for r in rows if r["latent"] == side][:3]
        cx, cy = [float(r["channels"]) for r in series], [float(r["saved_unet_bytes"]) for r in series]
        ca, cb = fit(cx, cy)
        ha, hb = fit(cx[:2], cy[:2])
        return ca, cb, (ha + hb * cx[2] - cy[2]) / cy[2]

    fits = {side: unet_fit(side) for side in (s0, s1)}

    def unet_at(channels: float, side: float) -> float:
        (a0, b0, _), (a1, b1, _) = fits[s0], fits[s1]
        y0, y1 = a0 + b0 * channels, a1 + b1 * channels
        return y0 + (y1 - y0) * (side**2 - s0**2) / (s1**2 - s0**2)

    check = rows[-1]
    pixel_error = (unet_at(check["channels"], check["latent"]) - check["saved_unet_bytes"]) / check["saved_unet_bytes"]
    unet_real = unet_at(REAL_CHANNELS, REAL_LATENT)
    figures["unet"] = {
        "fits": {str(k): v for k, v in fits.items()},
        "channel_holdout_errors": [fits[s0][2], fits[s1][2]],
        "pixel_holdout_error": pixel_error,
        "at_real": unet_real,
    }
    print(
        f"UNet: A_S(c) linear in c at S={s0} and S={s1} (2 channel counts predict the 3rd within "
        f"{100 * abs(fits[s0][2]):.1f} % / {100 * abs(fits[s1][2]):.1f} %), linear in S*S between them (predicts the "
        f"S={check['latent']} run within {100 * abs(pixel_error):.1f} %); A(c=320, S=64) = {unet_real / GIB:.2f} GiB"
    )

    counts = real_parameter_counts()
    adapter = 32 * 2 * 32 * cfg.prefix_length * 128 + cfg.num_tokens * REAL_WIDTH + REAL_WIDTH * 768 + 768
    weights = {
        "llm": counts["llm"] * 2,
        "sd": (counts["unet"] + counts["vae"] + counts["text_encoder"]) * 2,
        "adapter": adapter * 16,
    }
    other = max(r["saved_other_bytes"] for r in rows)
    activations = llm_real + unet_real + other
    margin = 0.10 * activations
    peak = sum(weights.values()) + activations + margin
    figures.update(parameters=counts, adapter_parameters=adapter, weights_bytes=weights, peak_bytes=peak)
    print(
        f"weights (bf16): Llama-2-7b {weights['llm'] / GIB:.2f} GiB ({counts['llm']:,} parameters), SD 1.5 "
        f"{weights['sd'] / GIB:.2f} GiB (UNet {counts['unet']:,}, VAE {counts['vae']:,}, text encoder "
        f"{counts['text_encoder']:,}); adapter + grad + AdamW {weights['adapter'] / 2**20:.0f} MiB ({adapter:,} fp32 parameters)"
    )
    print(
        f"expected peak of the full profile's train_soft step: {peak / GIB:.1f} GiB = weights "
        f"{sum(weights.values()) / GIB:.1f} + activations {activations / GIB:.1f} (LLM {llm_real / GIB:.1f}, UNet "
        f"{unet_real / GIB:.1f}) + 10 % margin {margin / GIB:.1f}; {100 * peak / (args.gpu_gib * GIB):.0f} % of "
        f"{args.gpu_gib:.0f} GiB -> {'fits' if peak < args.gpu_gib * GIB else 'DOES NOT FIT'} without gradient checkpointing"
    )
    rate = matmul_gflops(device, dtype)
    biggest = max(rows, key=lambda r: r["counted_gflop"])
    achieved = biggest["counted_gflop"] / biggest["call_seconds"] if biggest["call_seconds"] else 0.0
    figures.update(matmul_gflops=rate, achieved_gflops=achieved, seconds=time.perf_counter() - started)
    print(
        f"speed: the largest run reached {achieved:.2f} GFLOP/s (counted by torch.utils.flop_counter, precompute "
        f"included) = {100 * achieved / rate:.1f} % of this machine's {rate:.1f} GFLOP/s {dtype} matmul (1024^2); "
        f"benchmark {figures['seconds'] / 60:.1f} min"
    )
    if args.real:
        row = measure(REAL_WIDTH, REAL_CHANNELS, REAL_LATENT, cfg, device, dtype)
        figures["real"] = row
        _print_row(row)
        print(
            f"real sizes, measured: CUDA max allocated {row['cuda_max_allocated_bytes'] / GIB:.1f} GiB (estimate "
            f"{peak / GIB:.1f}); saved LLM {row['saved_llm_bytes'] / GIB:.2f} GiB (estimate {llm_real / GIB:.2f}), "
            f"UNet {row['saved_unet_bytes'] / GIB:.2f} GiB (estimate {unet_real / GIB:.2f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
