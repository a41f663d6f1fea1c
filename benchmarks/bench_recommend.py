"""Benchmark: MMGCN training throughput (edges per second) and its share of this machine's fp32 matmul rate.

The workload is the recommendation stage's: the movie scenario's graph
(`data/prepared/movies` when it exists — ML-100K in the default world —, else
a random graph of the same size: 943 users, 1,682 items, 54,763 training
edges), 384-wide visual features (the mini CLIP's width), the `recommend`
section of `params.yaml` (width, layers, batch size). Two models are timed,
the ID-only one (`no_image`) and the one with the visual branch and user
features (`mean_user` / `generated_user`: the most expensive setting).

What is printed, per model:

* training steps per second and edges per second (BPR pairs per second of
  forward + backward + Adam; best of `--repeat` runs of `--steps` steps);
* the FLOPs of one step — dense (counted by `torch.utils.flop_counter`) and
  sparse aggregation (2 · nnz · width per product, forward and backward) —
  and the achieved rate as a share of the machine's dense fp32 matmul rate,
  measured in the same run (square `--matmul-size` products, best of 5);
* the projected time of the stage's training: epochs × settings × seeds, in wall
  seconds here and in CPU seconds (what an idle machine would need with one thread).

Timings are minima over repeats and the load average is printed: on a shared
machine the absolute figures move with the load, the share less so.

    python benchmarks/bench_recommend.py --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pmg.config import load_params
from pmg.recommend.mmgcn import MMGCN, MeanAdjacency, NegativeSampler, edges_tensor

ROOT = Path(__file__).resolve().parents[1]


def matmul_rate(size: int, repeat: int = 5) -> tuple[float, float]:
    """fp32 GFLOP/s of a (size x size) @ (size x size) product: best wall-clock rate, and per CPU second."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    cpu_started = time.process_time()
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    cpu = (time.process_time() - cpu_started) / repeat
    return 2 * size**3 / best / 1e9, 2 * size**3 / cpu / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def graph(prepared: Path, min_rating: float) -> tuple[np.ndarray, int, int, str]:
    """Training edges (E, 2), U, I and a description: the real movie graph or a same-size random one."""
    if (prepared / "interactions.parquet").is_file():
        from pmg.data.store import read_scenario
        from pmg.recommend.data import split_interactions

        scenario = read_scenario(prepared)
        users = sorted(scenario.interactions["user_id"].unique())
        share = lambda u: int.from_bytes(hashlib.sha256(u.encode()).digest()[:8], "big") / 2**64  # noqa: E731
        split = split_interactions(
            scenario.interactions, scenario.items["item_id"].tolist(),
            validation_users=[u for u in users if share(u) < 0.1],
            test_users=[u for u in users if 0.1 <= share(u) < 0.3], min_rating=min_rating,
        )  # fmt: skip
        return split.train_edges, split.n_users, split.n_items, f"{prepared} (held-out users' last 2 positives removed)"
    rng = np.random.default_rng(0)
    n_users, n_items, n_edges = 943, 1682, 54763
    codes = rng.choice(n_users * n_items, n_edges, replace=False)
    return np.stack([codes // n_items, codes % n_items], 1), n_users, n_items, "random graph of ML-100K's size"


def bench_model(
    name: str, model: MMGCN, adjacency: MeanAdjacency, edges: np.ndarray, cfg, args
) -> tuple[float, float]:
    """Time training steps of one model; print throughput and matmul share. Returns wall and CPU s per epoch."""
    users, items = edges_tensor(edges)
    sampler = NegativeSampler(users, items, model.n_items, torch.Generator().manual_seed(0))
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = min(cfg.batch_size, len(edges))
    order = torch.randperm(len(edges), generator=torch.Generator().manual_seed(0))[:batch]
    batch_users, positives = users[order], items[order]

    def step() -> None:
        negatives = sampler(batch_users)
        bpr, penalty = model.bpr_loss(adjacency, batch_users, positives, negatives, cfg.reg_weight)
        optimiser.zero_grad(set_to_none=True)
        (bpr + penalty).backward()
        optimiser.step()

    step()  # warm-up
    with FlopCounterMode(display=False) as counter:
        step()
    dense = counter.get_total_flops()
    widths = [cfg.dim] * (cfg.layers * 2 if model.visual else cfg.layers)  # every layer aggregates `dim`-wide...
    if model.visual:
        widths[cfg.layers] = cfg.latent_dim  # ...but the visual branch's first layer aggregates its latent width
    nnz = adjacency.forward_csr.values().numel()
    sparse = sum(2 * nnz * w * 2 for w in widths)  # forward and backward product per aggregation
    cpu_started = time.process_time()
    seconds = min(_timed(lambda: [step() for _ in range(args.steps)]) for _ in range(args.repeat)) / args.steps
    cpu = (time.process_time() - cpu_started) / (args.steps * args.repeat)  # CPU seconds per step, all threads
    steps_per_epoch = -(-len(edges) // batch)
    rate = (dense + sparse) / seconds / 1e9
    print(
        f"[{name}] {sum(p.numel() for p in model.parameters()):,} parameters; batch {batch}, "
        f"{steps_per_epoch} steps per epoch\n"
        f"  {1 / seconds:6.2f} steps/s   {batch / seconds:10,.0f} edges/s   {seconds * steps_per_epoch:6.2f} s/epoch\n"
        f"  {(dense + sparse) / 1e9:.3f} GFLOP per step ({dense / 1e9:.3f} dense, {sparse / 1e9:.3f} sparse): "
        f"{rate:.2f} GFLOP/s = {100 * rate / args.matmul_gflops:.1f}% of the fp32 matmul rate\n"
        f"  {cpu:.3f} CPU s per step (wall {seconds:.3f} s): {cpu * steps_per_epoch:.2f} CPU s per epoch; "
        f"{(dense + sparse) / cpu / 1e9:.2f} GFLOP per CPU s = {100 * (dense + sparse) / cpu / 1e9 / args.matmul_cpu:.1f}% "
        f"of the matmul's rate per CPU s (less load-bound)"
    )
    return seconds * steps_per_epoch, cpu * steps_per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--prepared", default=str(ROOT / "data" / "prepared" / "movies"))
    parser.add_argument("--feature-dim", type=int, default=384, help="visual feature width (mini CLIP: 384)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = params.recommend
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    args.matmul_gflops, args.matmul_cpu = matmul_rate(args.matmul_size)
    print(
        f"fp32 matmul ({args.matmul_size}^3, best of 5): {args.matmul_gflops:.1f} GFLOP/s wall, "
        f"{args.matmul_cpu:.1f} GFLOP per CPU second"
    )

    edges, n_users, n_items, source = graph(Path(args.prepared), params.prepare.movies.min_rating)
    print(f"graph: {source}: {n_users} users, {n_items} items, {len(edges):,} training edges")
    print(f"model: dim {cfg.dim}, latent {cfg.latent_dim}, layers {cfg.layers}, features {args.feature_dim}\n")
    adjacency = MeanAdjacency(*edges_tensor(edges), n_users, n_items)
    torch.manual_seed(0)
    ids_only = MMGCN(n_users, n_items, dim=cfg.dim, layers=cfg.layers)
    epoch_ids = bench_model("no_image", ids_only, adjacency, edges, cfg, args)
    visual = MMGCN(
        n_users, n_items, dim=cfg.dim, layers=cfg.layers, latent_dim=cfg.latent_dim,
        item_features=torch.randn(n_items, args.feature_dim), user_features=torch.randn(n_users, args.feature_dim),
    )  # fmt: skip
    epoch_visual = bench_model("visual + user features", visual, adjacency, edges, cfg, args)

    image_settings = sum(s != "no_image" for s in cfg.settings)
    id_settings = len(cfg.settings) - image_settings
    wall, cpu = (
        cfg.epochs * len(cfg.seeds) * (id_settings * epoch_ids[i] + image_settings * epoch_visual[i]) for i in (0, 1)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"\nprojected training of the stage: {len(cfg.settings)} settings x {len(cfg.seeds)} seeds x "
        f"{cfg.epochs} epochs = {wall / 60:.1f} min wall here, {cpu / 60:.1f} CPU min "
        f"(validation excluded); peak RSS {peak:.2f} GiB"
    )
    print(f"load average now {os.getloadavg()}")


if __name__ == "__main__":
    main()
