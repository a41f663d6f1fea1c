"""Pandera schemas of every table the project reads or writes.

One model per table, `strict` (no unexpected columns) and `coerce` (types are
cast, and a value that cannot be cast fails with its row and column). Tables are
validated after every read and before every write through `pmg.io`.

Cells that hold structures are JSON text, so the tables stay plain Parquet:

* `attributes` (items) and `preferences` (ground truth): a JSON object of
  attribute name to a string or list of strings.
* `history_items` (splits): a JSON array of item ids, oldest first.

Image paths are POSIX paths relative to the folder that holds the table.

Scenarios. A `scenario` column holds a scenario's name (`SCENARIO_NAME`: a
lower-case identifier). Which scenarios exist is the registry's business
(`pmg.scenarios`), checked where the config is read; the schemas stay below
it, so that the data layer that validates with them can be imported by the
scenario declarations.
"""

from __future__ import annotations

import json

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

SCENARIO_NAME = r"^[a-z][a-z0-9_]*$"
"""What a scenario's name looks like (`clothing`, `movies`, `emoji`, ...)."""


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (TypeError, ValueError):
        return False


def _is_nonempty_json_list_of_str(text: str) -> bool:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return False
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) and v for v in value)


class Items(pa.DataFrameModel):
    """The item catalogue of one scenario: clothes, movies or emoji."""

    item_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    title: Series[str] = pa.Field(str_length={"min_value": 1})
    text: Series[str]
    attributes: Series[str]
    image_path: Series[str] = pa.Field(nullable=True)

    @pa.check("attributes", element_wise=True, name="json_object")
    def _attributes_are_json_objects(cls, value: str) -> bool:  # noqa: N805
        return _is_json_object(value)

    class Config:
        strict = True
        coerce = True


class Interactions(pa.DataFrameModel):
    """User behaviour: one row per click, rating or use of an item.

    `rating` is the explicit rating where the source has one (MovieLens), else
    null (POG clicks, emoji use). `timestamp` is seconds since the epoch, or a
    sequence number where the source only gives an order.
    """

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    timestamp: Series[int] = pa.Field(ge=0)
    rating: Series[float] = pa.Field(nullable=True, ge=0)

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "item_id", "timestamp"]


class Conversations(pa.DataFrameModel):
    """Conversation turns of a user, in order."""

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    turn: Series[int] = pa.Field(ge=0)
    text: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "turn"]


class Splits(pa.DataFrameModel):
    """The per-user split the method runs on.

    `history_items` are the behaviour the method reads (oldest first);
    `target_item` is the item generated for the user and evaluated;
    `supervision_item` is the last item of the user's sequence, whose image
    supervises the training of the soft preference embeddings. The three never
    overlap for one user.
    """

    user_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    history_items: Series[str]
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    supervision_item: Series[str] = pa.Field(str_length={"min_value": 1})

    @pa.check("history_items", element_wise=True, name="nonempty_json_list_of_ids")
    def _history_is_json_list(cls, value: str) -> bool:  # noqa: N805
        return _is_nonempty_json_list_of_str(value)

    @pa.dataframe_check(name="target_supervision_history_disjoint")
    def _disjoint(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        def ok(row: pd.Series) -> bool:
            try:
                history = set(json.loads(row["history_items"]))
            except (TypeError, ValueError):
                return True  # reported by the column check
            return (
                row["target_item"] != row["supervision_item"]
                and row["target_item"] not in history
                and row["supervision_item"] not in history
            )

        return frame.apply(ok, axis=1).astype(bool)

    class Config:
        strict = True
        coerce = True


class GroundTruth(pa.DataFrameModel):
    """Latent preferences of simulated users (default world only).

    Never read by the method; only evaluation reads it, to check whether
    personalisation recovered what the simulation put in.
    """

    user_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    preferences: Series[str]

    @pa.check("preferences", element_wise=True, name="json_object")
    def _preferences_are_json_objects(cls, value: str) -> bool:  # noqa: N805
        return _is_json_object(value)

    class Config:
        strict = True
        coerce = True


class PrepareReport(pa.DataFrameModel):
    """What `prepare` kept and skipped, one row per (scenario, reason)."""

    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    kind: Series[str] = pa.Field(isin=("kept", "skipped"))
    reason: Series[str]
    count: Series[int] = pa.Field(ge=0)

    class Config:
        strict = True
        coerce = True


# --------------------------------------------------------------- describe/keywords

DESCRIPTION_KINDS = ("history", "conversation", "target", "supervision")
DESCRIPTION_SOURCES = ("text", "summary", "caption", "text+caption", "summary+caption")
KEYWORD_SOURCES = ("llm", "fallback")


def _is_json_list_of_str(text: str) -> bool:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return False
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


class Descriptions(pa.DataFrameModel):
    """Behaviour as text (PMG 3.2.1): one short line per item or conversation turn.

    `kind` says what the line describes: a `history` item (the method's input
    `x_i`), a `conversation` turn (`y_i`), the `target` item (input of the
    target keywords) or the `supervision` item (the soft-embedding training's
    supervision). `ref` is the item id, or the turn number for a turn;
    `position` orders lines of one kind (history oldest first, turns in order).
    `source` says what made the line: the item `text` as is, an LLM `summary`
    of a long text, an image `caption`, or text/summary plus caption.
    """

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    kind: Series[str] = pa.Field(isin=DESCRIPTION_KINDS)
    ref: Series[str] = pa.Field(str_length={"min_value": 1})
    position: Series[int] = pa.Field(ge=0)
    line: Series[str] = pa.Field(str_length={"min_value": 1})
    source: Series[str] = pa.Field(isin=DESCRIPTION_SOURCES)

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "kind", "position"]


class Keywords(pa.DataFrameModel):
    """Explicit keywords per user (PMG 3.2.2): preference `k_p` and target `k_t`.

    `preference_keywords` and `target_keywords` are JSON arrays of strings
    (normalised, de-duplicated, in order). `*_source` says which path made
    them: `llm` (parsed from the LLM's answers), `fallback` (the LLM's answers
    held nothing usable; the most frequent attribute values of the history
    items, or the target item's own attributes and title words, stand in) or,
    for preferences, `mixed` (some attributes from each). `per_attribute` (a
    JSON object) keeps, per attribute, the raw answer, the keywords kept, the
    echoed format-example words dropped, and the source; `target_answer` the
    raw target answer. `truncated_history` counts behaviour lines dropped
    (oldest first) so the prompts fit the LLM's context. `n_prompts` counts
    the prompts the row needs (answered by the LLM or its cache).
    `preference_grounding` is the share of preference keywords whose words all
    occur in the user's lines (null when there are none): a cheap check of
    how far the keywords are read from the behaviour rather than invented.
    """

    user_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    preference_keywords: Series[str]
    target_keywords: Series[str]
    preference_source: Series[str] = pa.Field(isin=(*KEYWORD_SOURCES, "mixed"))
    target_source: Series[str] = pa.Field(isin=KEYWORD_SOURCES)
    truncated_history: Series[int] = pa.Field(ge=0)
    n_prompts: Series[int] = pa.Field(ge=0)
    preference_grounding: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    per_attribute: Series[str]
    target_answer: Series[str]
    template_version: Series[str] = pa.Field(str_length={"min_value": 1})
    model_id: Series[str]

    @pa.check("preference_keywords", element_wise=True, name="json_list_of_str")
    def _preference_is_json_list(cls, value: str) -> bool:  # noqa: N805
        return _is_json_list_of_str(value)

    @pa.check("target_keywords", element_wise=True, name="nonempty_json_list_of_str")
    def _target_is_json_list(cls, value: str) -> bool:  # noqa: N805
        return _is_nonempty_json_list_of_str(value)

    @pa.check("per_attribute", element_wise=True, name="json_object")
    def _per_attribute_is_object(cls, value: str) -> bool:  # noqa: N805
        return _is_json_object(value)

    class Config:
        strict = True
        coerce = True


# ---------------------------------------------------------------- generate/select

GENERATION_MODES = ("weighted_embeddings", "repeat_keywords")
# What conditions the candidates: soft embeddings E_m and/or preference keywords, or neither.
PERSONALISATION_VARIANTS = ("soft+keywords", "soft", "keywords", "none")
_PAIR = ["user_id", "scenario", "target_item"]


def _weights_ok(frame: pd.DataFrame) -> Series[bool]:
    w_p, w_t = frame["w_p"].astype(float), frame["w_t"].astype(float)
    finite = (w_p.abs() < float("inf")) & (w_t.abs() < float("inf"))  # NaN compares False too
    return finite & (w_p >= 0) & (w_t >= 0) & (w_p + w_t > 0)


class Candidates(pa.DataFrameModel):
    """Candidate images of each (user, target) pair (PMG §3.4), one row per image.

    `candidate` is the index of the candidate's weight pair in
    `generate.weights` (or of its repeat count in `generate.repeats`); it also
    picks the seed, so candidate `k` of two ablation variants starts from the
    same noise. `w_p`, `w_t` are the preference and target weights (in
    `repeat_keywords` mode: the repeat count and 1). `seed` is the seed of the
    candidate's `torch.Generator`. `variant` says what personalised it.
    `preference_text` and `target_text` are the keyword strings the condition
    and the selection scores are built from; `keyword_fallback` names the
    fallback taken for an empty keyword list ("" = none). `image_path` is the
    PNG, relative to the folder holding the table.
    """

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    candidate: Series[int] = pa.Field(ge=0)
    w_p: Series[float] = pa.Field(ge=0)
    w_t: Series[float] = pa.Field(ge=0)
    seed: Series[int] = pa.Field(ge=0)
    mode: Series[str] = pa.Field(isin=GENERATION_MODES)
    variant: Series[str] = pa.Field(isin=PERSONALISATION_VARIANTS)
    preference_text: Series[str]
    target_text: Series[str] = pa.Field(str_length={"min_value": 1})
    keyword_fallback: Series[str]
    image_path: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})

    @pa.dataframe_check(name="weights_nonnegative_not_both_zero")
    def _weights(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        return _weights_ok(frame)

    @pa.check("image_path", element_wise=True, name="relative_posix_png")
    def _relative_png(cls, value: str) -> bool:  # noqa: N805
        return value.endswith(".png") and not value.startswith("/") and "\\" not in value and ".." not in value.split("/")

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "scenario", "target_item", "candidate"]


class Scores(pa.DataFrameModel):
    """Selection scores of every candidate (PMG §3.4), and the chosen one per pair.

    `d_p` (preference score) and `d_t` (accuracy score) are the cosines of the
    candidate image's CLIP embedding to the preference and target keyword
    strings; `z = alpha·log d_p + (1 - alpha)·log d_t` with cosines below
    `select.min_cosine` floored first (`floored` marks the rows where that
    happened). Exactly one row per (user, scenario, target) is `chosen`: the
    highest `z`, the lower candidate index on a tie.
    """

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    candidate: Series[int] = pa.Field(ge=0)
    w_p: Series[float] = pa.Field(ge=0)
    w_t: Series[float] = pa.Field(ge=0)
    d_p: Series[float] = pa.Field(ge=-1.001, le=1.001)
    d_t: Series[float] = pa.Field(ge=-1.001, le=1.001)
    z: Series[float] = pa.Field(le=0.001)
    floored: Series[bool]
    chosen: Series[bool]

    @pa.dataframe_check(name="weights_nonnegative_not_both_zero")
    def _weights(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        return _weights_ok(frame)

    @pa.dataframe_check(name="one_chosen_per_pair")
    def _one_chosen(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        chosen = frame.groupby(_PAIR, sort=False)["chosen"].transform("sum")
        return chosen == 1

    @pa.dataframe_check(name="chosen_has_best_z")
    def _chosen_is_best(cls, frame: pd.DataFrame) -> Series[bool]:  # noqa: N805
        # The chosen row's z is its pair's maximum, and no earlier candidate ties it.
        best = frame.groupby(_PAIR, sort=False)["z"].transform("max")
        first_best = (
            frame.assign(_best=frame["z"] == best)
            .loc[lambda f: f["_best"]]
            .groupby(_PAIR, sort=False)["candidate"]
            .transform("min")
            .reindex(frame.index)
        )
        return ~frame["chosen"] | ((frame["z"] == best) & (frame["candidate"] == first_best))

    class Config:
        strict = True
        coerce = True
        unique = ["user_id", "scenario", "target_item", "candidate"]


# ------------------------------------------------------------------- evaluate

EVAL_REFERENCES = ("history", "target")
EVAL_ISSUE_KINDS = ("skipped", "adjusted")


class PairMetrics(pa.DataFrameModel):
    """LPIPS and SSIM of one chosen output against one reference image (PMG §4.1.2).

    One row per (variant, user, target, reference): `reference` is `history`
    (the history item at `position`, oldest first) or `target` (position 0).
    `variant` names what made the output (`pmg.evaluate.ablations`). A metric
    is null when its network was not evaluated. `output_image` is the output's
    file as evaluated.
    """

    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    variant: Series[str] = pa.Field(str_length={"min_value": 1})
    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    reference: Series[str] = pa.Field(isin=EVAL_REFERENCES)
    position: Series[int] = pa.Field(ge=0)
    reference_item: Series[str] = pa.Field(str_length={"min_value": 1})
    lpips_alex: Series[float] = pa.Field(nullable=True, ge=-1e-6)
    lpips_vgg: Series[float] = pa.Field(nullable=True, ge=-1e-6)
    ssim: Series[float] = pa.Field(ge=-1.0001, le=1.0001)
    output_image: Series[str] = pa.Field(str_length={"min_value": 1})

    class Config:
        strict = True
        coerce = True
        unique = ["variant", "user_id", "target_item", "reference", "position"]


class EvalIssues(pa.DataFrameModel):
    """What an evaluation skipped or adjusted, one row per occurrence.

    `kind` is `skipped` (a pair, a part of it or a reference could not be
    measured) or `adjusted` (an image was resized or converted to RGB);
    `reason` names it (`pmg.evaluate.metrics`); `path` the file ("" when the
    issue is not about one file).
    """

    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    variant: Series[str] = pa.Field(str_length={"min_value": 1})
    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    kind: Series[str] = pa.Field(isin=EVAL_ISSUE_KINDS)
    reason: Series[str] = pa.Field(str_length={"min_value": 1})
    path: Series[str]

    class Config:
        strict = True
        coerce = True


class GroundTruthHits(pa.DataFrameModel):
    """Default-world check of one output or keyword list against a user's latent preference.

    One row per (variant, user, target, check): `check` names what was
    checked (clothing: `colour`, `pattern`; movies: `genre_precision`,
    `genre_recall`; emoji: `character`, `emotion`), `expected` the latent
    value(s), `observed` what was measured or found, `value` 1/0 for a hit or
    miss (or a fraction for precision/recall; null when undefined), and
    `target_differs` whether the target item itself lacks the expected
    value (there personalisation has to change something).
    """

    scenario: Series[str] = pa.Field(str_matches=SCENARIO_NAME)
    variant: Series[str] = pa.Field(str_length={"min_value": 1})
    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    target_item: Series[str] = pa.Field(str_length={"min_value": 1})
    check: Series[str] = pa.Field(str_length={"min_value": 1})
    expected: Series[str]
    observed: Series[str]
    value: Series[float] = pa.Field(nullable=True, ge=0, le=1)
    target_differs: Series[bool] = pa.Field(nullable=True)

    class Config:
        strict = True
        coerce = True
