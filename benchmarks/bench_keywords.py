"""Benchmark: keyword generation, today's path against the new one, and the answers' quality.

Two paths make the `Keywords` table of the same users through the same
`pmg.method.keywords.keywords` (same prompts, same parsing), each with a
fresh, empty answer cache (so every prompt really runs):

* **reference** — what `LocalLLM.generate` did before issue 13:
  transformers' `model.generate`, 8 prompts per call in the order the stage
  lists them, left-padded, every answer to its full budget or EOS
  (`ReferenceLLM` below reproduces it);
* **new** — `LocalLLM.generate` as configured in `params.yaml` (`keywords.batch_size`,
  the profile's dtype, shared prefixes computed once, rows sorted by
  length, finished rows dropped, `ClozeStop` early stop).

Printed per scenario and in all: prompts/s, new tokens/s, the speed-up,
achieved GFLOP/s as a share of this machine's fp32 and bf16 matmul rate
measured in the same run (`benchmarks/machine.py`; the FLOPs of each path
are counted by `FlopCounterMode` on a repeat of the same work outside the
timing), and the share of users whose keywords are identical.

Quality: ground-truth hit rates of both paths' keywords on the same users
(`pmg.evaluate.ground_truth`): movie genre precision/recall of the
preference keywords, emoji character/emotion rates, and the clothing keyword
colour rate (does `k_p` name the user's latent colour; `ground_truth.named`
over the world's colours).

    python benchmarks/bench_keywords.py [--users 40] [--scenarios clothing movies emoji] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from machine import count_flops, measure_peak
from pmg import schemas
from pmg.config import load_params
from pmg.data.store import read_scenario
from pmg.io import read_table
from pmg.method.describe import natural_key
from pmg.method.keywords import keywords
from pmg.method.llm_cache import CachedLLM, ContentCache, model_id_of
from pmg.models.llm import load_llm


class ReferenceLLM:
    """Today's (pre-issue-13) local generation: `model.generate`, fixed batches, prompt order."""

    def __init__(self, llm, batch_size: int = 8) -> None:
        self.llm = llm
        self.model_id = llm.model_id
        self.context_length = llm.context_length
        self.tokenizer = llm.tokenizer
        self.batch_size = batch_size
        self.stats = {"new_tokens": 0, "computed_prompt_tokens": 0}

    def format_prompt(self, prompt: str) -> str:
        return self.llm.format_prompt(prompt)

    def generate(self, prompts, *, max_new_tokens: int, temperature: float = 0.0, **_ignored) -> list[str]:
        tokenizer, answers = self.tokenizer, []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self.format_prompt(p) for p in prompts[start : start + self.batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = self.llm.model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, top_p=None, top_k=None,
                    temperature=None, pad_token_id=tokenizer.pad_token_id,
                )  # fmt: skip
            new = out[:, enc["input_ids"].shape[1] :]
            self.stats["computed_prompt_tokens"] += int(enc["attention_mask"].sum())
            self.stats["new_tokens"] += int((new != tokenizer.pad_token_id).sum())
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers


def first_users(descriptions: pd.DataFrame, n: int | None) -> list[str]:
    users = sorted(set(descriptions["user_id"].astype(str)), key=natural_key)
    return users if n is None else users[:n]


def run_path(name, llm, descriptions, items, cfg, scenario, users, scratch: Path) -> dict:
    """One path over `users` with a fresh cache; returns timing and the table."""
    cache_dir = scratch / f"cache-{name}-{scenario}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    wrapped = CachedLLM(llm, llm.model_id, ContentCache(cache_dir), batch_size=cfg.batch_size)
    before = dict(llm.stats)
    started = time.perf_counter()
    table = keywords(descriptions, items, llm=wrapped, cfg=cfg, scenario=scenario, users=users)
    seconds = time.perf_counter() - started
    report = table.attrs["report"]
    return {
        "table": table,
        "seconds": seconds,
        "prompts": report["prompts"],
        "new_tokens": llm.stats["new_tokens"] - before.get("new_tokens", 0),
        "computed_prompt_tokens": llm.stats["computed_prompt_tokens"] - before.get("computed_prompt_tokens", 0),
        "misses": report["llm_cache"]["misses"],
    }


def same_keywords(a: pd.DataFrame, b: pd.DataFrame) -> float:
    left = a.set_index("user_id")[["preference_keywords", "target_keywords"]]
    right = b.set_index("user_id")[["preference_keywords", "target_keywords"]].reindex(left.index)
    return float((left == right).all(axis=1).mean())


def quality(table: pd.DataFrame, prepared) -> dict:
    """Ground-truth hit rates of one scenario's keywords (see the module docstring)."""
    from pmg.evaluate.ground_truth import emoji_hits, movies_hits, named, summarize_hits

    if prepared.scenario == "movies":
        rates = summarize_hits(movies_hits(table, prepared)).get("preference_keywords", {})
        return {k: rates.get(k) for k in ("genre_precision", "genre_recall", "n_genre_precision")}
    if prepared.scenario == "emoji":
        rates = summarize_hits(emoji_hits(table, prepared)).get("preference_keywords", {})
        return {k: rates.get(k) for k in ("character", "emotion", "n_character")}
    from pmg.data.world.clothing import COLOURS

    truth = {
        str(u): json.loads(p).get("colour")
        for u, p in zip(prepared.ground_truth["user_id"], prepared.ground_truth["preferences"])
    }
    lexicon = {colour: () for colour in COLOURS}
    hits = [
        truth[str(u)] in named(json.loads(k), lexicon)
        for u, k in zip(table["user_id"], table["preference_keywords"])
        if str(u) in truth
    ]
    return {"colour": sum(hits) / len(hits) if hits else None, "n_colour": len(hits)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scenarios", nargs="+", default=["clothing", "movies", "emoji"])
    parser.add_argument("--users", type=int, default=40, help="users per scenario (first by id) on both paths")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (a repeat of each path)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = params.keywords
    peak = measure_peak()
    print(peak.describe())
    llm = load_llm(params.profile.llm, "cpu", seed=params.base.seed, batch_size=cfg.batch_size)
    llm.model_id = model_id_of(params.profile.llm, llm)
    print(f"LLM {llm.model_id} in {llm.dtype}, batch {cfg.batch_size}, stop_at_answer {cfg.stop_at_answer}")
    reference = ReferenceLLM(llm)
    reference_cfg = cfg.model_copy(update={"stop_at_answer": False, "batch_size": 8})
    scratch = Path(tempfile.mkdtemp(prefix="pmg-bench-keywords-"))
    totals = {name: {"seconds": 0.0, "prompts": 0, "new_tokens": 0, "flops": 0} for name in ("reference", "new")}
    try:
        for scenario in args.scenarios:
            descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", schemas.Descriptions)
            prepared = read_scenario(Path(params.prepare.out) / scenario)
            users = first_users(descriptions, args.users)
            runs = {}
            for name, model, path_cfg in (("reference", reference, reference_cfg), ("new", llm, cfg)):
                runs[name] = run_path(name, model, descriptions, prepared.items, path_cfg, scenario, users, scratch)
                if not args.no_flops:
                    runs[name]["flops"] = count_flops(
                        lambda m=model, c=path_cfg, n=name: run_path(
                            n + "-flops", m, descriptions, prepared.items, c, scenario, users, scratch
                        )
                    )
            print(f"\n{scenario}: {len(users)} users, {runs['new']['prompts']} prompts")
            for name, run in runs.items():
                line = (
                    f"  {name:<9} {run['seconds']:7.1f} s  {run['prompts'] / run['seconds']:6.2f} prompts/s  "
                    f"{run['new_tokens'] / run['seconds']:7.1f} new tokens/s  "
                    f"prompt tokens computed {run['computed_prompt_tokens']}"
                )
                if "flops" in run:
                    line += f"  {peak.share(run['flops'] / run['seconds'] / 1e9)}"
                print(line)
                for key in ("seconds", "prompts", "new_tokens"):
                    totals[name][key] += run[key]
                totals[name]["flops"] += run.get("flops", 0)
            print(
                f"  speed-up {runs['reference']['seconds'] / runs['new']['seconds']:.2f}x; "
                f"users with identical k_p and k_t: {same_keywords(runs['reference']['table'], runs['new']['table']):.0%}"
            )
            print(f"  hit rates, reference: {quality(runs['reference']['table'], prepared)}")
            print(f"  hit rates, new      : {quality(runs['new']['table'], prepared)}")
            new_stats = {k: round(v, 1) for k, v in llm.stats.items() if k.endswith("seconds")}
            print(f"  new path so far: {new_stats}")
        ref, new = totals["reference"], totals["new"]
        print(
            f"\nall: reference {ref['prompts'] / ref['seconds']:.2f} prompts/s, new {new['prompts'] / new['seconds']:.2f}"
            f" prompts/s: speed-up {ref['seconds'] / new['seconds']:.2f}x (target >= 5x)"
        )
        if not args.no_flops:
            for name, total in totals.items():
                print(f"  {name}: {peak.share(total['flops'] / total['seconds'] / 1e9)}")

        print(f"\nload average at the end: {__import__('os').getloadavg()[0]:.2f}")
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
