"""Test helpers of the evaluation tests: a tiny clothing world and tiny models, built in code.

The world follows the default clothing world's rules (garments rendered with
the world's own `render_garment`, latent colour/pattern per user in a
`GroundTruth` table) at a size the tiny models handle in seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pmg.config import ModelSpec, Params, parse_params
from pmg.data.store import PreparedScenario, read_scenario, report_frame, write_scenario
from pmg.io import output_folder
from pmg.data.world.clothing import render_garment
from pmg.stages.catalogue import Catalogue

SIZE = 16  # generator output side: 8x8 latents keep the tiny UNet fast
ITEM_SIZE = 48  # prepared item images (the metrics resize everything)

# item_id, colour, pattern, category
ITEMS = [
    ("g1", "red", "striped", "coat"),
    ("g2", "red", "plain", "shirt"),
    ("g3", "blue", "dotted", "dress"),
    ("g4", "blue", "striped", "shirt"),
    ("g5", "green", "checked", "trousers"),
    ("g6", "black", "plain", "coat"),
    ("g7", "pink", "dotted", "dress"),
    ("g8", "yellow", "checked", "shirt"),
    ("g9", "red", "dotted", "trousers"),
]
# user, history, target, supervision, latent colour, latent pattern
USERS = [
    ("u1", ["g1", "g2", "g9"], "g5", "g3", "red", "striped"),
    ("u2", ["g3", "g4"], "g2", "g6", "blue", "striped"),
    ("u10", ["g7", "g3", "g4"], "g1", "g8", "blue", "dotted"),
    ("u3", ["g5", "g8"], "g9", "g1", "green", "checked"),
]


def silhouette() -> np.ndarray:
    """A 28 x 28 garment-like silhouette (a rounded block), like a Fashion-MNIST image."""
    yy, xx = np.mgrid[0:28, 0:28]
    body = (np.abs(xx - 13.5) < 8) & (yy > 4) & (yy < 25)
    sleeves = (np.abs(xx - 13.5) < 12) & (yy > 5) & (yy < 11)
    return ((body | sleeves) * 220).astype(np.uint8)


def build_world(folder: Path) -> PreparedScenario:
    """A 4-user clothing scenario with ground truth, written through the real store."""
    final = folder / "clothing"
    with output_folder(final) as staging:
        (staging / "images").mkdir()
        shape = silhouette()
        rows = []
        for item_id, colour, pattern, category in ITEMS:
            render_garment(shape, colour, pattern, ITEM_SIZE).save(staging / "images" / f"{item_id}.png")
            rows.append(
                {
                    "item_id": item_id,
                    "scenario": "clothing",
                    "title": f"{pattern} {colour} {category}",
                    "text": f"A {colour} {category} with a {pattern} pattern.",
                    "attributes": json.dumps({"category": category, "colour": colour, "elements": pattern}),
                    "image_path": f"images/{item_id}.png",
                }
            )
        splits = pd.DataFrame(
            [
                {
                    "user_id": u,
                    "scenario": "clothing",
                    "history_items": json.dumps(h),
                    "target_item": t,
                    "supervision_item": s,
                }
                for u, h, t, s, _, _ in USERS
            ]
        )
        interactions = pd.DataFrame(
            [
                {"user_id": u, "item_id": i, "timestamp": k, "rating": None}
                for u, h, t, s, _, _ in USERS
                for k, i in enumerate(h)
            ]
        )
        ground_truth = pd.DataFrame(
            [
                {"user_id": u, "scenario": "clothing", "preferences": json.dumps({"colour": c, "pattern": p})}
                for u, _, _, _, c, p in USERS
            ]
        )
        write_scenario(
            staging,
            items=pd.DataFrame(rows),
            interactions=interactions,
            conversations=pd.DataFrame(columns=["user_id", "turn", "text"]),
            splits=splits,
            report=report_frame("clothing", Counter({"users": len(USERS)}), Counter()),
            ground_truth=ground_truth,
        )
    return read_scenario(final)


def keywords_frame(scenario: str = "clothing", users=USERS, *, extra: dict | None = None) -> pd.DataFrame:
    """A Keywords table: preference = the latent colour and pattern words, target = the target's title words."""
    titles = {i: f"{p} {c} {cat}" for i, c, p, cat in ITEMS}
    rows = []
    for u, _, t, _, colour, pattern in users:
        rows.append(
            {
                "user_id": u,
                "scenario": scenario,
                "target_item": t,
                "preference_keywords": json.dumps([colour, pattern]),
                "target_keywords": json.dumps(titles.get(t, t).split()),
                "preference_source": "llm",
                "target_source": "llm",
                "truncated_history": 0,
                "n_prompts": 2,
                "preference_grounding": 1.0,
                "per_attribute": "{}",
                "target_answer": "",
                "template_version": "test",
                "model_id": "scripted",
                **(extra or {}),
            }
        )
    return pd.DataFrame(rows)


def behaviour(users=USERS) -> dict[str, str]:
    return {
        u: f"The user liked these clothing items:\n- {' '.join(h)}\nDescribe the user's visual preference:"
        for u, h, *_ in users
    }


def descriptions_frame(users=USERS) -> pd.DataFrame:
    """A Descriptions table whose behaviour prompts (`pmg.method.soft.behaviour_prompts`) are `behaviour(users)`."""
    rows = []
    for u, h, t, *_ in users:
        rows.append({"user_id": u, "scenario": "clothing", "kind": "history", "ref": h[0], "position": 0,
                     "line": " ".join(h), "source": "text"})
        rows.append({"user_id": u, "scenario": "clothing", "kind": "target", "ref": t, "position": 0,
                     "line": f"target {t}", "source": "text"})
    return pd.DataFrame(rows)


def load_metric_models(spec: ModelSpec, device: str = "cpu", *, nets=("alex", "vgg")):
    """LPIPS networks from a spec (the stages load the profile's through `pmg.stages.loaders.metric_models`)."""
    from pmg.evaluate.metrics import MetricModels
    from pmg.models.lpips_metric import load_lpips

    return MetricModels({net: load_lpips(spec, device, net=net) for net in nets})


def catalogue(params: Params, root: Path) -> Catalogue:
    """Where the stages write for `params`, with metrics and plots under `root` (not the repository's)."""
    return Catalogue(params, metrics_root=root / "metrics", plots_root=root / "plots")


def make_params(root: Path, **sections) -> Params:
    """Params for a run under `root` with the tiny settings; `sections` update sections by name."""
    raw = {
        "base": {"seed": 0, "scenarios": ["clothing"]},
        "profiles": {
            "mini": {
                "device": "cpu",
                "llm": {"kind": "hf", "path": str(root / "llm")},
                "captioner": {"kind": "clip-retrieval", "path": str(root / "clip")},
                "generator": {"kind": "diffusers", "path": str(root / "sd")},
                "scorer": {"kind": "open_clip", "name": "pmg-tiny-clip", "path": str(root / "clip")},
                "lpips": {"kind": "lpips", "path": str(root / "lpips")},
            }
        },
        "prepare": {"out": str(root / "prepared")},
        "keywords": {"out": str(root / "keywords")},
        "describe": {"out": str(root / "describe")},
        "generate": {
            "out": str(root / "generate"),
            "steps": 2,
            "guidance_scale": 5.0,
            "height": SIZE,
            "width": SIZE,
        },
        "select": {"out": str(root / "select")},
        "train_soft": {"out": str(root / "soft"), "num_tokens": 4},
        "evaluate": {
            "out": str(root / "evaluate"),
            "ablations_out": str(root / "ablations"),
            "ablation_adapters": str(root / "soft_ablations"),
            "nets": ["alex"],
            "image_size": 32,
            "batch_size": 8,
            "ablation_max_users": 3,
            "case_study_pairs": 2,
        },
        "report": {
            "out": str(root / "report"),
            "gallery_pairs": 2,
            "thumbnail": 64,
            "grid_png": str(root / "docs" / "gallery.png"),
            "grid_tile": 32,
        },
    }
    for name, update in sections.items():
        raw.setdefault(name, {}).update(update)
    return parse_params(raw)


def write_main_run(prepared, params) -> None:
    """A hand-made main run: Candidates (3 weight pairs per user, images drawn here) and Scores."""
    from pmg.io import write_table
    from pmg.schemas import Candidates, Keywords, Scores

    folder = Path(params.generate.out) / "clothing"
    cands, scores = [], []
    splits = prepared.splits
    for u_index, (user, target) in enumerate(zip(splits["user_id"], splits["target_item"])):
        for k, (w_p, w_t) in enumerate([(0, 4), (2, 2), (4, 0)]):
            relative = f"{user}/{target}/cand_{k}.png"
            (folder / user / target).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (60 * k, 40 * u_index, 200)).save(folder / relative)
            cands.append(
                {
                    "user_id": user,
                    "scenario": "clothing",
                    "target_item": target,
                    "candidate": k,
                    "w_p": w_p,
                    "w_t": w_t,
                    "seed": k,
                    "mode": "weighted_embeddings",
                    "variant": "soft+keywords",
                    "preference_text": "red",
                    "target_text": "coat",
                    "keyword_fallback": "",
                    "image_path": relative,
                }
            )
            d_p, d_t = 0.1 + 0.05 * k, 0.3 - 0.05 * k
            z = 0.5 * np.log(d_p) + 0.5 * np.log(d_t)
            scores.append(
                {
                    "user_id": user,
                    "scenario": "clothing",
                    "target_item": target,
                    "candidate": k,
                    "w_p": w_p,
                    "w_t": w_t,
                    "d_p": d_p,
                    "d_t": d_t,
                    "z": z,
                    "floored": False,
                    "chosen": False,
                }
            )
    scores = pd.DataFrame(scores)
    best = scores.groupby("user_id")["z"].transform("max") == scores["z"]
    scores.loc[best, "chosen"] = True
    write_table(pd.DataFrame(cands), folder / "candidates.parquet", Candidates)
    write_table(scores, Path(params.select.out) / "clothing.parquet", Scores)
    write_table(keywords_frame(), Path(params.keywords.out) / "clothing.parquet", Keywords)


def run_report(params: Params, root: Path) -> Path:
    """The `report` stage with metrics and plots under `root`; the path of `index.html`."""
    from pmg.stages import report

    return Path(report.run(params, catalogue=catalogue(params, root), log=lambda _: None)["report_path"])


def headline(params: Params, root: Path) -> str:
    """The headline table the `report` stage writes, from the ablation metrics under `root`."""
    from pmg.stages import report

    return report.headline(params, catalogue(params, root))
