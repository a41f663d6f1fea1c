"""Ground-truth checks on hand-made images and keyword lists."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
from eval_helpers import build_world, keywords_frame, silhouette

from pmg.data.store import read_scenario, report_frame, write_scenario
from pmg.data.world.clothing import render_garment
from pmg.evaluate.ground_truth import (
    TARGET_IMAGE,
    ground_truth_hits,
    summarize_hits,
)
from pmg.io import output_folder, validate
from pmg.scenarios.clothing import clothing_hits
from pmg.scenarios.emoji import emoji_hits
from pmg.scenarios.movies import canonical_genre, movies_hits
from pmg.text import named
from pmg.schemas import GroundTruthHits


def test_clothing_hits_are_measured_on_pixels(tmp_path: Path) -> None:
    prepared = build_world(tmp_path / "prepared")  # u1: red/striped, target g5 green checked
    shape = silhouette()
    files = {}
    for name, colour, pattern in (
        ("right", "red", "striped"),
        ("colour_only", "red", "dotted"),
        ("wrong", "teal", "plain"),
    ):
        files[name] = tmp_path / f"{name}.png"
        render_garment(shape, colour, pattern, 64).save(files[name])
    (tmp_path / "broken.png").write_bytes(b"no image")
    outputs = pd.DataFrame(
        [
            {"variant": "pmg", "user_id": "u1", "target_item": "g5", "image": files["right"]},
            {"variant": "half", "user_id": "u1", "target_item": "g5", "image": files["colour_only"]},
            {"variant": "none", "user_id": "u1", "target_item": "g5", "image": files["wrong"]},
            {"variant": "none", "user_id": "u2", "target_item": "g2", "image": tmp_path / "broken.png"},
            {
                "variant": "none",
                "user_id": "nobody",
                "target_item": "g2",
                "image": files["wrong"],
            },  # no ground truth
        ]
    )
    hits = validate(clothing_hits(outputs, prepared), GroundTruthHits, "hits")
    value = {(r.variant, r.user_id, r.check): r.value for r in hits.itertuples()}
    assert value[("pmg", "u1", "colour")] == 1 and value[("pmg", "u1", "pattern")] == 1
    assert value[("half", "u1", "colour")] == 1 and value[("half", "u1", "pattern")] == 0
    assert value[("none", "u1", "colour")] == 0
    assert value[("none", "u2", "colour")] == 0  # unreadable = miss
    # The target item's own image: g5 is green checked, u1 wants red striped; u2's target g2 is red plain, u2 wants blue.
    assert value[(TARGET_IMAGE, "u1", "colour")] == 0 and value[(TARGET_IMAGE, "u2", "colour")] == 0
    assert not any(u == "nobody" for u in hits["user_id"])
    differs = {(r.user_id, r.check): r.target_differs for r in hits[hits.variant == "pmg"].itertuples()}
    assert differs == {("u1", "colour"): True, ("u1", "pattern"): True}

    summary = summarize_hits(hits)
    assert summary["pmg"]["colour"] == 1.0 and summary["pmg"]["n_colour"] == 1
    assert summary["pmg"]["colour_target_differs"] == 1.0
    assert summary["none"]["colour"] == 0.0 and summary["none"]["n_colour"] == 2


def _movies(folder: Path):
    final = folder / "movies"
    genres = {
        "1": ["Action", "Sci-Fi"],
        "2": ["Comedy", "Children's"],
        "3": ["Drama"],
        "4": ["Film-Noir", "Crime"],
    }
    items = pd.DataFrame(
        [
            {
                "item_id": i,
                "scenario": "movies",
                "title": f"Movie {i}",
                "text": "",
                "attributes": json.dumps({"genres": g}),
                "image_path": None,
            }
            for i, g in genres.items()
        ]
    )
    splits = pd.DataFrame(
        [
            {
                "user_id": "7",
                "scenario": "movies",
                "history_items": json.dumps(["1", "2"]),
                "target_item": "3",
                "supervision_item": "4",
            }
        ]
    )
    with output_folder(final) as staging:
        write_scenario(
            staging,
            items=items,
            interactions=pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"]),
            conversations=pd.DataFrame(columns=["user_id", "turn", "text"]),
            splits=splits,
            report=report_frame("movies", Counter({"users": 1}), Counter()),
            ground_truth=None,
        )
    return read_scenario(final)


def test_movie_genre_precision_and_recall(tmp_path: Path) -> None:
    prepared = _movies(tmp_path)
    keywords = keywords_frame("movies", [("7", [], "3", "4", "", "")]).assign(
        preference_keywords=json.dumps(["science fiction", "action-packed", "dramatic score", "spaceships"]),
        target_keywords=json.dumps(["drama", "family"]),
    )
    hits = validate(movies_hits(keywords, prepared), GroundTruthHits, "hits")
    value = {(r.variant, r.check): r.value for r in hits.itertuples()}
    # Named: sci fi, action, drama; history: action, sci fi, comedy, children.
    assert value[("preference_keywords", "genre_precision")] == 2 / 3
    assert value[("preference_keywords", "genre_recall")] == 2 / 4
    # Target keywords name drama and family (= children): one of two in the history.
    assert value[("target_keywords", "genre_precision")] == 1 / 2
    assert value[("target_keywords", "genre_recall")] == 1 / 4


def test_genre_words_match_whole_words_only() -> None:
    assert canonical_genre("Sci-Fi") == "sci fi" and canonical_genre("Children's") == "children"
    lexicon = {"war": ("war",), "romance": ("romance", "romantic")}
    assert named(["warm colours"], lexicon) == set()
    assert named(["Post-war", "romantic comedy"], lexicon) == {"war", "romance"}


def test_emoji_mentions_of_character_and_emotion(tmp_path: Path) -> None:
    final = tmp_path / "emoji"
    items = pd.DataFrame(
        [
            {
                "item_id": "e1",
                "scenario": "emoji",
                "title": "crying face",
                "text": "",
                "attributes": json.dumps({"character": "face", "emotion": "sadness"}),
                "image_path": None,
            },
            {
                "item_id": "e2",
                "scenario": "emoji",
                "title": "cat",
                "text": "",
                "attributes": json.dumps({"character": "cat", "emotion": "joy"}),
                "image_path": None,
            },
            {
                "item_id": "e3",
                "scenario": "emoji",
                "title": "cat 2",
                "text": "",
                "attributes": json.dumps({"character": "cat", "emotion": "love"}),
                "image_path": None,
            },
        ]
    )
    with output_folder(final) as staging:
        write_scenario(
            staging,
            items=items,
            interactions=pd.DataFrame(columns=["user_id", "item_id", "timestamp", "rating"]),
            conversations=pd.DataFrame(columns=["user_id", "turn", "text"]),
            splits=pd.DataFrame(
                [
                    {
                        "user_id": "e0001",
                        "scenario": "emoji",
                        "history_items": json.dumps(["e2"]),
                        "target_item": "e1",
                        "supervision_item": "e3",
                    }
                ]
            ),
            report=report_frame("emoji", Counter({"users": 1}), Counter()),
            ground_truth=pd.DataFrame(
                [
                    {
                        "user_id": "e0001",
                        "scenario": "emoji",
                        "preferences": json.dumps({"character": "cat", "emotion": "sadness"}),
                    }
                ]
            ),
        )
    prepared = read_scenario(final)
    keywords = keywords_frame("emoji", [("e0001", [], "e1", "e3", "", "")]).assign(
        preference_keywords=json.dumps(["cute kitten", "cartoon"]),
        target_keywords=json.dumps(["crying", "face", "tears"]),
    )
    hits = validate(emoji_hits(keywords, prepared), GroundTruthHits, "hits")
    value = {(r.variant, r.check): r.value for r in hits.itertuples()}
    assert value[("preference_keywords", "character")] == 1 and value[("preference_keywords", "emotion")] == 0
    assert value[("target_keywords", "character")] == 0 and value[("target_keywords", "emotion")] == 1
    assert value[("all_keywords", "character")] == 1 and value[("all_keywords", "emotion")] == 1
    differs = {r.check: r.target_differs for r in hits[hits.variant == "all_keywords"].itertuples()}
    assert differs == {"character": True, "emotion": False}  # the target is a face, crying


def test_no_ground_truth_gives_no_rows(tmp_path: Path) -> None:
    prepared = build_world(tmp_path / "prepared")
    empty = ground_truth_hits("clothing", prepared, outputs=None)
    assert empty.empty and list(empty.columns) == list(GroundTruthHits.to_schema().columns)
    assert summarize_hits(empty) == {}
