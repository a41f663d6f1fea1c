"""Ablations (PMG §4.5, Tables 2 and 3): the same pairs and seeds, one variant at a time.

Variants (names are the keys of every output):

=================  =========================================  ==========================
name               what conditions the generator              paper
=================  =========================================  ==========================
`none`             target keywords only (no personalisation)  Table 2, baseline
`keywords`         + preference keywords `E_k`                Table 2
`soft`             + soft embeddings `E_m` only               Table 2
`soft+keywords`    `E_m` + `E_k` (PMG)                        Table 2
`no_prefix`        PMG with P-Tuning v2 off                   Table 3
`L<n>`             PMG with `n` multimodal tokens             Table 3 (`L0` = keywords)
=================  =========================================  ==========================

`soft`, `soft+keywords` and `no_prefix` use `train_soft.num_tokens` tokens;
every soft variant but `no_prefix` uses `train_soft.use_prefix`. A soft
variant needs an adapter trained with its (L, P-Tuning v2) setting, named by
:attr:`Variant.adapter_key` (`L4-prefix`, `L8-prefix`, `L4-noprefix`, ...);
the runner takes a mapping key -> adapter folder (:func:`default_adapters`
finds the `train_soft` adapter and those under `evaluate.ablation_adapters`).
A variant whose adapter is missing (e.g. every soft variant of `emoji`, for
which the paper trains none) is reported as skipped, not run.

Pairs and seeds. Every variant runs on the same (user, target) pairs — the
first `evaluate.ablation_max_users` users (natural id order) that have
keywords, behaviour lines and a catalogued target — and candidate `k` of a
pair has the same seed in every variant (`pmg.method.generate.candidate_seed`
does not depend on the variant), so differences are the conditioning's.

Variants that would generate identical images (`L0` and `keywords`; `L4` and
`soft+keywords` when `num_tokens` is 4) share one run: a *generation key*
(soft on/off, keywords on/off, adapter key) identifies a run, and every
variant with that key reports its metrics.

Outputs of :func:`run_ablation_stage` in `<evaluate.ablations_out>/<scenario>/`:

    runs/<run>/<scenario>/   candidates.parquet, scores.parquet, PNGs (one run per key)
    pairs.parquet            PairMetrics of every variant
    issues.parquet           EvalIssues
    ground_truth.parquet     GroundTruthHits (default world)
    ablations.md             the tables in the paper's layout
    report.json              runs, shared keys, skipped variants and why, seconds

and the DVC metrics (outside the folder, see `pmg.evaluate.stage.Locations`):

    metrics/ablations/<scenario>.json               {scenario: {variant: {metric: value}}}
    metrics/ablations/<scenario>_ground_truth.json  {scenario: {variant: {check: rate}}}
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pmg.config import GenerateConfig, Params
from pmg.evaluate.metrics import EvalRequest, Evaluation, MetricModels, evaluate_requests, summarize
from pmg.io import write_json_atomic, write_table, write_text_atomic

log = logging.getLogger(__name__)

TABLES = {
    "components": "preference conditions (paper Table 2)",
    "prompt_tuning": "P-Tuning v2 and multimodal tokens L (paper Table 3)",
}
TABLE_METRICS = (
    ("lpips_alex_history", "History LPIPS-Alex ↓"),
    ("lpips_vgg_history", "History LPIPS-VGG ↓"),
    ("ssim_history", "History SSIM ↑"),
    ("lpips_alex_target", "Target LPIPS-Alex ↓"),
    ("lpips_vgg_target", "Target LPIPS-VGG ↓"),
    ("ssim_target", "Target SSIM ↑"),
)
BASELINE = "none"


@dataclass(frozen=True)
class Variant:
    """One ablation variant: what it conditions on and what it needs.

    Attributes:
        name: its key in every output (`none`, `keywords`, ..., `L8`).
        label: the row label of the tables.
        table: `components` (Table 2) or `prompt_tuning` (Table 3).
        use_soft: condition on soft preference embeddings `E_m`.
        use_keywords: condition on the preference keywords `E_k`.
        use_prefix: the adapter uses P-Tuning v2 (soft variants only).
        num_tokens: L, the adapter's multimodal tokens (soft variants only).
    """

    name: str
    label: str
    table: str
    use_soft: bool
    use_keywords: bool
    use_prefix: bool = True
    num_tokens: int = 4

    @property
    def soft(self) -> bool:
        """Whether `E_m` is really used (L = 0 means no soft tokens at all)."""
        return self.use_soft and self.num_tokens > 0

    @property
    def adapter_key(self) -> str | None:
        """The adapter this variant needs (`L4-prefix`, `L8-noprefix`, ...), or None."""
        if not self.soft:
            return None
        return f"L{self.num_tokens}-{'prefix' if self.use_prefix else 'noprefix'}"

    @property
    def generation_key(self) -> tuple[bool, bool, str | None]:
        """Variants with one key generate identical images and share one run."""
        return (self.soft, self.use_keywords, self.adapter_key)

    def generate_config(self, base: GenerateConfig) -> GenerateConfig:
        """The `generate` section of this variant: `base` with the two switches set."""
        return base.model_copy(update={"use_soft": self.soft, "use_keywords": self.use_keywords})


def variant(name: str, params: Params) -> Variant:
    """The variant called `name` (see the module docstring) under `params.train_soft`."""
    L, prefix = params.train_soft.num_tokens, params.train_soft.use_prefix
    fixed = {
        "none": Variant(
            "none", "No personalisation (target keywords)", "components", False, False, prefix, L
        ),
        "keywords": Variant("keywords", "Preference keywords", "components", False, True, prefix, L),
        "soft": Variant("soft", f"Soft embeddings (L={L})", "components", True, False, prefix, L),
        "soft+keywords": Variant(
            "soft+keywords", f"Keywords + soft embeddings (PMG, L={L})", "components", True, True, prefix, L
        ),
        "no_prefix": Variant(
            "no_prefix", f"PMG without P-Tuning v2 (L={L})", "prompt_tuning", True, True, False, L
        ),
    }
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"L(\d+)", name)
    if match:
        n = int(match.group(1))
        label = (
            f"PMG, L={n}" + (" (keywords only)" if n == 0 else "") + ("" if prefix else ", no P-Tuning v2")
        )
        return Variant(name, label, "prompt_tuning", True, True, prefix, n)
    raise ValueError(f"unknown ablation variant {name!r}; use {sorted(fixed)} or L<n>")


def variants(params: Params) -> list[Variant]:
    """The variants `evaluate.ablations` names, in that order."""
    return [variant(name, params) for name in params.evaluate.ablations]


# ------------------------------------------------------------------ adapters


def adapter_key_of(folder: str | Path) -> str | None:
    """The key (`L<n>-prefix` / `L<n>-noprefix`) of an adapter folder, from its config; None if none."""
    from pmg.method.soft import CONFIG_FILE

    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return f"L{int(config['num_tokens'])}-{'prefix' if config['use_prefix'] else 'noprefix'}"
    except (ValueError, KeyError, TypeError):
        return None


def default_adapters(params: Params, scenario: str) -> dict[str, Path]:
    """Adapters found for `scenario`: the `train_soft` one and those under `evaluate.ablation_adapters`.

    Keys come from each folder's `adapter_config.json` (not its name); an
    extra adapter with the main one's key does not replace it.
    """
    found: dict[str, Path] = {}
    main = Path(params.train_soft.out) / scenario
    key = adapter_key_of(main)
    if key:
        found[key] = main
    extra = Path(params.evaluate.ablation_adapters) / scenario
    if extra.is_dir():
        for folder in sorted(p for p in extra.iterdir() if p.is_dir()):
            key = adapter_key_of(folder)
            if key and key not in found:
                found[key] = folder
    return found


# -------------------------------------------------------------------- runner

GenerateFn = Callable[..., pd.DataFrame]
SelectFn = Callable[..., pd.DataFrame]


@dataclass
class AblationModels:
    """Loaded models the runner uses.

    Attributes:
        generator: the `ImageGenerator`.
        scorer: the CLIP `Scorer` of the selection.
        metric_models: LPIPS networks.
        llm: the base LLM of the soft adapters (None: soft variants are skipped).
    """

    generator: Any
    scorer: Any
    metric_models: MetricModels
    llm: Any | None = None


@dataclass
class AblationResult:
    """What :func:`run_ablations` produced.

    Attributes:
        evaluation: PairMetrics / issues of every variant that ran.
        outputs: one row per variant and pair: `variant`, `user_id`,
            `target_item`, `image` (absolute path of the chosen output).
        scores: the `Scores` table of each run, by variant name.
        candidates: the `Candidates` table of each run (with an absolute
            `image` column), by variant name.
        metrics: `{variant: {metric: value}}` of the variants that ran.
        skipped: `{variant: reason}` of the variants that did not.
        runs: `{variant: run folder name}`; variants sharing a folder shared the run.
        seconds: wall time per run.
    """

    evaluation: Evaluation
    outputs: pd.DataFrame
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    candidates: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_folder_name(key: tuple[bool, bool, str | None]) -> str:
    """A folder name for a generation key: `none`, `keywords`, `soft-L4-prefix`, `soft-keywords-L8-prefix`."""
    soft, keywords, adapter = key
    parts = (["soft"] if soft else []) + (["keywords"] if keywords else [])
    return "-".join(parts or ["none"]) + (f"-{adapter}" if adapter else "")


def ablation_pairs(
    keywords: pd.DataFrame, behaviour: Mapping[str, str | None], items: pd.DataFrame, max_users: int | None
) -> pd.DataFrame:
    """The Keywords rows every variant runs on: the first `max_users` usable users by id."""
    from pmg.method.describe import natural_key

    known = set(items["item_id"].astype(str))
    has_behaviour = [bool(behaviour.get(str(u))) for u in keywords["user_id"]]
    in_catalogue = [str(t) in known for t in keywords["target_item"]]
    usable = keywords.loc[np.array([a and b for a, b in zip(has_behaviour, in_catalogue)], dtype=bool)]
    order = sorted(usable["user_id"].astype(str), key=natural_key)
    keep = set(order if max_users is None else order[:max_users])
    return usable[usable["user_id"].astype(str).isin(keep)].reset_index(drop=True)


def _load_soft(folder: Path, llm: Any, generator: Any) -> Any:
    from pmg.method.soft import SoftPreferenceModel

    return SoftPreferenceModel.load(folder, llm, text_width=generator.text_width)


def _requests_for(
    chosen: pd.DataFrame, folder: Path, prepared, variant_name: str
) -> tuple[list[EvalRequest], pd.DataFrame]:
    history_of = {
        str(u): json.loads(h) for u, h in zip(prepared.splits["user_id"], prepared.splits["history_items"])
    }
    requests, rows = [], []
    for row in chosen.itertuples(index=False):
        user, target = str(row.user_id), str(row.target_item)
        image = folder / str(row.image_path)
        history = tuple((item, _image_or_none(prepared, item)) for item in history_of.get(user, []))
        requests.append(
            EvalRequest(user, target, image, history, _image_or_none(prepared, target), variant_name)
        )
        rows.append({"variant": variant_name, "user_id": user, "target_item": target, "image": image})
    return requests, pd.DataFrame(rows, columns=["variant", "user_id", "target_item", "image"])


def _image_or_none(prepared, item_id: str) -> Path | None:
    try:
        return prepared.image_file(item_id)
    except Exception:  # noqa: BLE001 - an unknown item is a missing image here, counted downstream
        return None


def run_ablations(
    params: Params,
    scenario: str,
    variant_list: Sequence[Variant],
    *,
    models: AblationModels,
    keywords: pd.DataFrame,
    behaviour: Mapping[str, str | None],
    adapters: Mapping[str, str | Path],
    out_dir: str | Path,
    prepared: Any = None,
    generate_fn: GenerateFn | None = None,
    select_fn: SelectFn | None = None,
    load_soft_fn: Callable[[Path], Any] | None = None,
) -> AblationResult:
    """Run every variant on the same pairs and seeds, then evaluate all outputs in one batched pass.

    Args:
        params: all parameters (`generate`, `select`, `evaluate`, `base.seed`).
        scenario: the scenario.
        variant_list: from :func:`variants`.
        models: generator, scorer, LPIPS networks and (for soft variants) the base LLM.
        keywords: the scenario's `Keywords` table.
        behaviour: user id -> behaviour prompt (`pmg.method.generate.behaviour_prompts`).
        adapters: adapter key -> adapter folder (see :func:`default_adapters`).
        out_dir: this scenario's ablation folder; runs go to `runs/<run>/`.
        prepared: the `PreparedScenario` (default: read from `prepare.out`).
        generate_fn: `run_generate`-compatible (default `pmg.method.generate.run_generate`).
        select_fn: `run_select`-compatible (default `pmg.method.select.run_select`).
        load_soft_fn: adapter folder -> soft model (default
            `SoftPreferenceModel.load(folder, models.llm, text_width=generator.text_width)`).

    Returns:
        The outputs, scores and metrics per variant, and the skipped variants.
    """
    from pmg.data.store import read_scenario
    from pmg.method.select import chosen_candidates
    from pmg.schemas import Scores

    if generate_fn is None:
        from pmg.method.generate import run_generate as generate_fn
    if select_fn is None:
        from pmg.method.select import run_select as select_fn
    if prepared is None:
        prepared = read_scenario(Path(params.prepare.out) / scenario)
    if load_soft_fn is None and models.llm is not None:
        load_soft_fn = partial(_load_soft, llm=models.llm, generator=models.generator)
    cfg = params.evaluate
    out_dir = Path(out_dir)
    pairs = ablation_pairs(
        keywords[keywords["scenario"] == scenario], behaviour, prepared.items, cfg.ablation_max_users
    )

    groups: dict[tuple, list[Variant]] = {}
    for v in variant_list:
        groups.setdefault(v.generation_key, []).append(v)

    result = AblationResult(evaluation=Evaluation(pairs=pd.DataFrame()), outputs=pd.DataFrame())
    requests: list[EvalRequest] = []
    outputs: list[pd.DataFrame] = []
    aliases: dict[str, list[str]] = {}
    for key, members in groups.items():
        lead = members[0]
        names = [m.name for m in members]
        if pairs.empty:
            for name in names:
                result.skipped[name] = "no pair to run (no keywords with behaviour and a catalogued target)"
            continue
        soft_model = None
        if lead.soft:
            folder = adapters.get(lead.adapter_key)
            if folder is None:
                reason = f"no soft adapter {lead.adapter_key} for {scenario} (train one, see evaluate.ablation_adapters)"
            elif load_soft_fn is None:
                reason = "no base LLM given for the soft adapter"
            else:
                reason = None
            if reason:
                for name in names:
                    result.skipped[name] = reason
                continue
            soft_model = load_soft_fn(Path(folder))
        run = run_folder_name(key)
        started = time.perf_counter()
        run_params = params.model_copy(update={"generate": lead.generate_config(params.generate)})
        run_root = out_dir / "runs" / run
        candidates = generate_fn(
            run_params,
            scenario,
            pairs,
            behaviour,
            generator=models.generator,
            soft_model=soft_model,
            out_dir=run_root,
            items=prepared.items,
        )
        folder = run_root / scenario
        scores = select_fn(run_params, scenario, candidates, scorer=models.scorer, candidates_dir=folder)
        write_table(scores, folder / "scores.parquet", Scores)
        result.seconds[run] = round(time.perf_counter() - started, 3)
        chosen = chosen_candidates(scores, candidates)
        run_requests, run_outputs = _requests_for(chosen, folder, prepared, lead.name)
        requests.extend(run_requests)
        candidates = candidates.assign(image=[folder / p for p in candidates["image_path"]])
        for name in names:
            result.runs[name] = run
            result.scores[name] = scores
            result.candidates[name] = candidates
            outputs.append(run_outputs.assign(variant=name))
        aliases[lead.name] = names[1:]
        log.info("ablations[%s]: run %s (%s) in %.1f s", scenario, run, ", ".join(names), result.seconds[run])

    evaluation = evaluate_requests(
        requests,
        models.metric_models,
        scenario=scenario,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        chunk_users=cfg.chunk_users,
        chunk_pairs=cfg.chunk_pairs,
    )
    # Variants that shared a run get the lead's rows under their own name.
    extra_pairs, extra_issues, extra_requests = [], [], []
    for lead, others in aliases.items():
        for name in others:
            extra_pairs.append(evaluation.pairs[evaluation.pairs["variant"] == lead].assign(variant=name))
            extra_issues.append(evaluation.issues[evaluation.issues["variant"] == lead].assign(variant=name))
            extra_requests += [(name, u, t) for (v, u, t) in evaluation.requests if v == lead]
    if extra_pairs:
        evaluation.pairs = pd.concat([evaluation.pairs, *extra_pairs], ignore_index=True)
        evaluation.issues = pd.concat([evaluation.issues, *extra_issues], ignore_index=True)
        evaluation.requests += extra_requests
    result.evaluation = evaluation
    result.outputs = (
        pd.concat(outputs, ignore_index=True)
        if outputs
        else pd.DataFrame(columns=["variant", "user_id", "target_item", "image"])
    )
    result.metrics = ablation_metrics(
        evaluation, [v.name for v in variant_list if v.name not in result.skipped]
    )
    return result


def ablation_metrics(evaluation: Evaluation, names: Sequence[str]) -> dict[str, dict]:
    """`{variant: metrics}`: the table's metrics, their standard errors, counts, and the change vs `none`.

    `lpips_history_change_vs_none` is `(LPIPS_v - LPIPS_none) / LPIPS_none`
    on the AlexNet history distance (negative = closer to the history than
    the non-personalised baseline; the paper's headline is up to -8%).
    """
    out: dict[str, dict] = {}
    for name in names:
        full = summarize(evaluation, name, with_sem=True)
        entry = {metric: full[metric] for metric, _ in TABLE_METRICS}
        entry.update({f"{metric}_sem": full[f"{metric}_sem"] for metric, _ in TABLE_METRICS})
        entry.update(
            n_pairs=full["n_pairs"],
            n_history=full["n_history"],
            n_target=full["n_target"],
            n_skipped=full["n_skipped"],
        )
        out[name] = entry
    base = out.get(BASELINE, {}).get("lpips_alex_history")
    for entry in out.values():
        value = entry.get("lpips_alex_history")
        entry["lpips_history_change_vs_none"] = (
            round((value - base) / base, 6) if base and value is not None else None
        )
    return out


# ------------------------------------------------------------------ tables


def _cell(value: float | None, sem: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" + (f" ± {sem:.4f}" if sem is not None else "")


def ablation_tables(
    metrics: Mapping[str, Mapping], variant_list: Sequence[Variant], skipped: Mapping[str, str]
) -> dict[str, list[dict]]:
    """Rows of each table (`components`, `prompt_tuning`) in variant order, for Markdown and HTML.

    Each row: `variant`, `label`, `n`, one formatted cell per `TABLE_METRICS`
    key, `change` (vs `none`), and `skipped` (reason or "").
    """
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for v in variant_list:
        m = metrics.get(v.name)
        row = {"variant": v.name, "label": v.label, "skipped": skipped.get(v.name, "")}
        if m is None:
            row.update({key: "—" for key, _ in TABLE_METRICS}, n="—", change="—")
        else:
            row.update({key: _cell(m.get(key), m.get(f"{key}_sem")) for key, _ in TABLE_METRICS})
            row["n"] = str(m.get("n_pairs", "—"))
            change = m.get("lpips_history_change_vs_none")
            row["change"] = "—" if change is None else f"{100 * change:+.1f}%"
        tables[v.table].append(row)
    return tables


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def ablation_markdown(
    scenario: str,
    metrics: Mapping[str, Mapping],
    variant_list: Sequence[Variant],
    skipped: Mapping[str, str],
    ground_truth: Mapping[str, Mapping] | None = None,
) -> str:
    """The ablation tables of one scenario as Markdown (for the README)."""
    lines: list[str] = []
    header = ["Variant", "n", *[title for _, title in TABLE_METRICS], "History LPIPS vs none"]
    for table, rows in ablation_tables(metrics, variant_list, skipped).items():
        if not rows:
            continue
        lines += [f"### {scenario} — {TABLES[table]}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            label = row["label"] + (f" *(skipped: {row['skipped']})*" if row["skipped"] else "")
            cells = [_md_escape(label), row["n"], *[row[key] for key, _ in TABLE_METRICS], row["change"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if ground_truth:
        lines += [f"### {scenario} — latent preference recovered (default world)", ""]
        checks = sorted({k for entry in ground_truth.values() for k in entry if not k.startswith("n_")})
        lines.append("| Variant | " + " | ".join(checks) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(checks)) + "|")
        for name, entry in ground_truth.items():
            cells = []
            for check in checks:
                value = entry.get(check)
                count = entry.get(f"n_{check}")
                cells.append("—" if value is None else f"{value:.2f} (n={count})")
            lines.append(f"| {_md_escape(name)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "LPIPS: lower = more similar; SSIM: higher = more similar; mean ± standard error over pairs "
        "(a pair's history value is the mean over its history images)."
    )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- stage


def load_ablation_models(params: Params, *, need_llm: bool = True) -> AblationModels:
    """Load the profile's generator, scorer, LPIPS networks and (optionally) LLM."""
    from pmg.evaluate.metrics import load_metric_models
    from pmg.models import load_generator, load_llm, load_scorer

    profile = params.profile
    key = f"profiles.{params.base.profile}"
    generator = load_generator(profile.generator, profile.device, key=f"{key}.generator")
    scorer = load_scorer(profile.scorer, profile.device, key=f"{key}.scorer")
    metric_models = load_metric_models(
        profile.lpips, profile.device, nets=params.evaluate.nets, key=f"{key}.lpips"
    )
    llm = load_llm(profile.llm, profile.device, key=f"{key}.llm") if need_llm else None
    return AblationModels(generator=generator, scorer=scorer, metric_models=metric_models, llm=llm)


def run_ablation_stage(
    params: Params,
    scenario: str,
    *,
    models: AblationModels | None = None,
    adapters: Mapping[str, str | Path] | None = None,
    keywords: pd.DataFrame | None = None,
    behaviour: Mapping[str, str | None] | None = None,
    out_dir: str | Path | None = None,
    generate_fn: GenerateFn | None = None,
    select_fn: SelectFn | None = None,
    locations: Any = None,
) -> dict:
    """The `ablations` stage of one scenario: run, evaluate, write (see the module docstring).

    Args:
        params: all parameters.
        scenario: the scenario.
        models: loaded models (default: the profile's, the LLM only when a
            soft variant has an adapter).
        adapters: adapter key -> folder (default :func:`default_adapters`).
        keywords: the Keywords table (default `<keywords.out>/<scenario>.parquet`).
        behaviour: user -> behaviour prompt (default from `<describe.out>/<scenario>.parquet`).
        out_dir: default `<evaluate.ablations_out>/<scenario>`.
        generate_fn, select_fn: see :func:`run_ablations`.
        locations: a `pmg.evaluate.stage.Locations` (default `metrics/`, `plots/`).

    Returns:
        The nested metrics written to `metrics/ablations/<scenario>.json`.
    """
    from pmg.data.store import read_scenario
    from pmg.evaluate.ground_truth import summarize_hits
    from pmg.evaluate.stage import Locations, ground_truth_hits
    from pmg.io import read_table
    from pmg.schemas import Descriptions, EvalIssues, GroundTruthHits, Keywords, PairMetrics

    locations = locations or Locations()
    prepared = read_scenario(Path(params.prepare.out) / scenario)
    if keywords is None:
        keywords = read_table(Path(params.keywords.out) / f"{scenario}.parquet", Keywords)
    if behaviour is None:
        from pmg.method.generate import behaviour_prompts

        descriptions = read_table(Path(params.describe.out) / f"{scenario}.parquet", Descriptions)
        behaviour = behaviour_prompts(descriptions, scenario)
    if adapters is None:
        adapters = default_adapters(params, scenario)
    variant_list = variants(params)
    if models is None:
        need_llm = any(v.soft and v.adapter_key in adapters for v in variant_list)
        models = load_ablation_models(params, need_llm=need_llm)
    out = Path(out_dir or Path(params.evaluate.ablations_out) / scenario)
    result = run_ablations(
        params,
        scenario,
        variant_list,
        models=models,
        keywords=keywords,
        behaviour=behaviour,
        adapters=adapters,
        out_dir=out,
        prepared=prepared,
        generate_fn=generate_fn,
        select_fn=select_fn,
    )
    write_table(result.evaluation.pairs, out / "pairs.parquet", PairMetrics)
    write_table(result.evaluation.issues, out / "issues.parquet", EvalIssues)
    used_keywords = keywords[keywords["user_id"].astype(str).isin(set(result.outputs["user_id"].astype(str)))]
    hits = ground_truth_hits(scenario, prepared, outputs=result.outputs, keywords=used_keywords)
    write_table(hits, out / "ground_truth.parquet", GroundTruthHits)
    ground_truth = summarize_hits(hits)
    nested = {scenario: result.metrics}
    write_json_atomic(locations.ablation_metrics(scenario), nested)
    write_json_atomic(locations.ablation_ground_truth(scenario), {scenario: ground_truth})
    write_text_atomic(
        out / "ablations.md",
        ablation_markdown(scenario, result.metrics, variant_list, result.skipped, ground_truth),
    )
    write_json_atomic(
        out / "report.json",
        {
            "scenario": scenario,
            "variants": [v.name for v in variant_list],
            "runs": result.runs,
            "skipped": result.skipped,
            "adapters": {k: str(v) for k, v in adapters.items()},
            "pairs": int(result.outputs[["user_id", "target_item"]].drop_duplicates().shape[0])
            if len(result.outputs)
            else 0,
            "seconds": result.seconds,
        },
    )
    return nested
