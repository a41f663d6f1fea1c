"""The default emoji world: real emoji glyphs and simulated chatting users.

Items are the glyphs of :data:`EMOJI` drawn from Noto Color Emoji on white,
titled by their Unicode name (`unicodedata.name`, lower case: "crying cat
face"). Each has a `character` (who is shown) and an `emotion` (what it
expresses), from the table below, which is this module's own reading of the
glyphs:

=========  ==========================================================
character  emotions covered (neutral besides)
=========  ==========================================================
face       joy, love, sadness, anger, surprise, fear (the smileys)
cat        joy, love, sadness, anger, fear (the nine cat faces)
monkey     joy, fear, surprise (see/hear/speak-no-evil)
person     joy, love, sadness, anger, surprise (gesturing people)
=========  ==========================================================

Only single code points (with U+FE0F where needed) are used: ZWJ sequences
depend on the text-shaping library Pillow was built with.

Users. Each simulated user draws a latent preferred character and a
conversation emotion (both ground truth). Their sequence is, oldest first:

1. `history_len` distinct emoji they used, each of their character with
   probability :data:`CHARACTER_AFFINITY`, else of another character;
2. the target: a face emoji (the generic smiley family) expressing the
   conversation's emotion — the emoji the method personalises;
3. the supervision item: an emoji of their character, distinct from the rest.

So `make_splits(data, history_len)` gives history = the used emoji, target =
the generic emotion emoji, supervision = a character emoji. For users whose
character is `face` the target and the supervision are both faces, kept
distinct. The conversation (`turns` turns, between steps 1 and 2 in the story)
is drawn from per-emotion templates and never names a character.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import ImageFont

from pmg import schemas
from pmg.data.dataset import ScenarioData
from pmg.data.world.render import glyph_on_white, load_emoji_font, relative_image_path, render_glyph, save_png

if TYPE_CHECKING:  # the section type only; the scenario module imports this one
    from pmg.scenarios.emoji import EmojiSource

SCENARIO = "emoji"

EMOTIONS = ("joy", "sadness", "anger", "surprise", "love", "fear")
"""Emotions a conversation expresses (items may also be `neutral`)."""

GENERIC_CHARACTER = "face"
"""The character whose emoji are the generic, unpersonalised targets."""

CHARACTER_AFFINITY = 0.85
"""Probability that a history emoji is of the user's own character."""

# character -> emotion -> emoji. A value's first code point names the item.
EMOJI: dict[str, dict[str, tuple[str, ...]]] = {
    "face": {
        "joy": ("😀", "😃", "😄", "😁", "😆", "😂", "🤣", "😊", "🙂", "🥳", "🤩"),
        "love": ("😍", "🥰", "😘", "😗", "😙", "😚"),
        "sadness": ("😢", "😭", "😞", "😔", "😥", "🙁", "🥺"),
        "anger": ("😠", "😡", "🤬", "😤"),
        "surprise": ("😮", "😯", "😲", "😳", "🤯", "😦"),
        "fear": ("😨", "😰", "😱", "😧", "😬", "😟"),
    },
    "cat": {
        "joy": ("😺", "😸", "😹", "😼"),
        "love": ("😻", "😽"),
        "sadness": ("😿",),
        "anger": ("😾",),
        "fear": ("🙀",),
        "neutral": ("🐱",),
    },
    "monkey": {
        "joy": ("🐵",),
        "fear": ("🙈", "🙉"),
        "surprise": ("🙊",),
        "neutral": ("🐒",),
    },
    "person": {
        "joy": ("🙋", "🙆", "💃", "🕺"),
        "love": ("💑", "💏"),
        "sadness": ("🙍", "🙇"),
        "anger": ("🙎", "🙅", "🤦"),
        "surprise": ("🤷",),
    },
}
"""The catalogue: character -> emotion -> glyphs."""

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "joy": (
        "I got the job!! I still can't believe it.",
        "We won the match tonight, what a game!",
        "Guess who just passed every exam this term?",
        "Best {day} ever, everything went right for once.",
        "My {relative} is coming to visit and I'm so excited.",
        "Just finished my first {race} and I feel amazing!",
        "The sun is out and I'm off for a week, life is good.",
        "They loved my presentation, my boss even clapped.",
        "I finally finished the puzzle I started last year, ha!",
        "Haha that video you sent made my whole {day}.",
    ),
    "sadness": (
        "I failed my driving test again...",
        "My {relative} moved away today and the house feels empty.",
        "Nobody remembered my birthday this year.",
        "I lost the bracelet my grandmother gave me.",
        "It's been a grey, long {day} and I just feel low.",
        "I didn't get into the course I applied for.",
        "We had to cancel the trip we'd planned for months.",
        "I miss how things used to be, honestly.",
        "Another rejection email this morning. I'm tired.",
        "My best friend and I had a falling out and it hurts.",
    ),
    "anger": (
        "The train was cancelled AGAIN and no one told us!",
        "Someone scratched my car and just drove off.",
        "My {relative} read my messages without asking, I'm furious.",
        "I waited two hours and they gave my table away.",
        "The landlord raised the rent for the third time this year!",
        "My coworker took credit for my work in the meeting.",
        "They charged me twice and now customer service hangs up on me.",
        "The neighbours had a party until 4 am on a {weekday}.",
        "I'm so done with people who never say sorry.",
        "The parcel was 'delivered' but it's not here. Unbelievable.",
    ),
    "surprise": (
        "Wait, you're telling me they're getting married?!",
        "I just opened the door and the whole team was there!",
        "No way, I won the raffle? I never win anything!",
        "My {relative} showed up from abroad without telling anyone!",
        "It snowed in the middle of summer, look outside!",
        "I found fifty euros in an old coat pocket, what?",
        "They picked MY design out of two hundred entries?!",
        "The quiet new guy just did a backflip at lunch.",
        "Did you see the ending of that {show}? I did not expect that.",
        "My score came back and it's twice what I expected!",
    ),
    "love": (
        "I think I'm falling for them, they're so thoughtful.",
        "We've been together five years today and I'd do it all again.",
        "My {relative} knitted me a scarf and I adore it.",
        "Seeing you after so long made my heart so full.",
        "I just can't stop smiling when they text me.",
        "Tonight we're cooking dinner together, just the two of us.",
        "I wrote them a letter about everything they mean to me.",
        "Holding my baby niece for the first time, pure love.",
        "You're the best friend anyone could ask for, really.",
        "They surprised me with flowers for no reason at all.",
    ),
    "fear": (
        "There's a weird noise downstairs and I'm alone at home...",
        "My exam results come out tomorrow and I'm terrified.",
        "The plane is shaking a lot, I hate turbulence.",
        "I have to give a speech to {crowd} people on {weekday}.",
        "I think someone has been following me home.",
        "The doctor wants to run more tests and I'm scared.",
        "The storm knocked the power out and it's pitch dark.",
        "I walked past the old house and the door creaked open by itself.",
        "My {relative} hasn't answered the phone all day.",
        "I have a job interview in an hour and my hands are shaking.",
    ),
}

_SLOTS = {
    "day": ("day", "week", "weekend", "Monday", "Friday"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "relative": ("sister", "brother", "mum", "dad", "cousin", "roommate"),
    "race": ("5k", "half marathon", "triathlon", "10k"),
    "show": ("series", "film", "show", "play"),
    "crowd": ("two hundred", "three hundred", "a hundred", "five hundred"),
}


def emoji_item_id(glyph: str) -> str:
    """The item id of a glyph: `emoji-` and its first code point in hex (`emoji-1f63f`)."""
    return f"emoji-{ord(glyph[0]):x}"


def emoji_title(glyph: str) -> str | None:
    """The glyph's Unicode name in lower case (`crying cat face`); None if Python has no name for it."""
    name = unicodedata.name(glyph[0], None)
    return name.lower() if name else None


def conversation(emotion: str, turns: int, rng: np.random.Generator) -> list[str]:
    """`turns` user messages expressing `emotion`, from templates (distinct while they last)."""
    templates = _TEMPLATES[emotion]
    order = list(rng.permutation(len(templates)))
    while len(order) < turns:
        order += list(rng.permutation(len(templates)))
    texts = []
    for index in order[:turns]:
        template = templates[int(index)]
        fills = {slot: str(values[int(rng.integers(len(values)))]) for slot, values in _SLOTS.items()}
        texts.append(template.format(**fills))
    return texts


def catalogue_entries() -> list[tuple[str, str, str]]:
    """`(glyph, character, emotion)` for every glyph of :data:`EMOJI`, in table order."""
    return [
        (glyph, character, emotion)
        for character, by_emotion in EMOJI.items()
        for emotion, glyphs in by_emotion.items()
        for glyph in glyphs
    ]


def item_row(glyph: str, character: str, emotion: str, image_path: str | None) -> dict[str, str | None]:
    """The `Items` row of one glyph (its title must exist: see :func:`emoji_title`)."""
    title = emoji_title(glyph)
    return {
        "item_id": emoji_item_id(glyph),
        "scenario": SCENARIO,
        "title": title,
        "text": f"The {title} emoji: {character}, {emotion}.",
        "attributes": json.dumps({"character": character, "emotion": emotion}),
        "image_path": image_path,
    }


def build_catalogue(
    font: ImageFont.FreeTypeFont, images_dir: Path, size: int
) -> tuple[pd.DataFrame, Counter[str]]:
    """Render every glyph of :data:`EMOJI` into `images_dir`.

    Returns:
        The `Items` rows, and the glyphs skipped: `glyph_missing` (the font
        draws nothing) and `glyph_unnamed` (newer than Python's Unicode data).
    """
    rows: list[dict[str, str | None]] = []
    skipped: Counter[str] = Counter()
    for glyph, character, emotion in catalogue_entries():
        drawn = render_glyph(font, glyph)
        if drawn is None or emoji_title(glyph) is None:
            skipped["glyph_missing" if drawn is None else "glyph_unnamed"] += 1
            continue
        file_name = f"{emoji_item_id(glyph)}.png"
        save_png(glyph_on_white(drawn, size), images_dir / file_name)
        rows.append(item_row(glyph, character, emotion, relative_image_path(images_dir, file_name)))
    return pd.DataFrame(rows, columns=list(schemas.Items.to_schema().columns)), skipped


def _pick(rng: np.random.Generator, pool: list[str], exclude: set[str]) -> str | None:
    free = [item for item in pool if item not in exclude]
    return free[int(rng.integers(len(free)))] if free else None


def simulate_users(
    items: pd.DataFrame, cfg: EmojiSource, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Counter[str]]:
    """Simulated users: emoji used, a conversation, then target and supervision.

    Returns:
        `Interactions` (timestamps are sequence numbers 0, 1, ...),
        `Conversations`, `GroundTruth` (`{"character": ..., "emotion": ...}`)
        and reason -> users skipped (a character or emotion with no glyph left).
    """
    attributes = [json.loads(a) for a in items["attributes"]]
    ids = items["item_id"].tolist()
    by_character: dict[str, list[str]] = {}
    for item_id, attr in zip(ids, attributes, strict=True):
        by_character.setdefault(attr["character"], []).append(item_id)
    generic = {
        emotion: [
            i
            for i, a in zip(ids, attributes, strict=True)
            if a["character"] == GENERIC_CHARACTER and a["emotion"] == emotion
        ]
        for emotion in EMOTIONS
    }
    others_of = {c: [i for i in ids if i not in set(own)] for c, own in by_character.items()}
    characters = [c for c in EMOJI if len(by_character.get(c, ())) >= 2]
    emotions = [e for e in EMOTIONS if generic[e]]
    skipped: Counter[str] = Counter()
    width = max(4, len(str(cfg.n_users)))
    clicks, turns, truth = [], [], []
    for user in range(cfg.n_users):
        user_id = f"e{user + 1:0{width}d}"
        if not characters or not emotions:
            skipped["no_glyphs_for_user"] += 1
            continue
        character = characters[int(rng.integers(len(characters)))]
        emotion = emotions[int(rng.integers(len(emotions)))]
        own = by_character[character]
        others = others_of[character]
        target = _pick(rng, generic[emotion], set())
        supervision = _pick(rng, own, {target})
        used = {target, supervision}
        history = []
        for _ in range(cfg.history_len):
            first, second = (own, others) if rng.random() < CHARACTER_AFFINITY else (others, own)
            pick = _pick(rng, first, used) or _pick(rng, second, used)
            if pick is None:
                break
            history.append(pick)
            used.add(pick)
        if supervision is None or len(history) < cfg.history_len:
            skipped["too_few_glyphs_for_user"] += 1
            continue
        for order, item_id in enumerate([*history, target, supervision]):
            clicks.append({"user_id": user_id, "item_id": item_id, "timestamp": order, "rating": None})
        for turn, text in enumerate(conversation(emotion, cfg.turns, rng)):
            turns.append({"user_id": user_id, "turn": turn, "text": text})
        truth.append(
            {
                "user_id": user_id,
                "scenario": SCENARIO,
                "preferences": json.dumps({"character": character, "emotion": emotion}),
            }
        )
    interactions = pd.DataFrame(clicks, columns=["user_id", "item_id", "timestamp", "rating"])
    interactions["rating"] = interactions["rating"].astype(float)
    conversations = pd.DataFrame(turns, columns=["user_id", "turn", "text"])
    ground_truth = pd.DataFrame(truth, columns=["user_id", "scenario", "preferences"])
    return interactions, conversations, ground_truth, skipped


def build_emoji_world(
    cfg: EmojiSource, *, assets: Path, images_dir: Path, size: int, seed: int
) -> ScenarioData:
    """The default emoji scenario: glyph catalogue, used emoji and conversations.

    Args:
        cfg: the `prepare.emoji` section (`pmg.scenarios.emoji.EmojiSource`) (`n_users`, `history_len`, `turns`).
        assets: the assets folder; reads `noto-emoji/NotoColorEmoji.ttf`.
        images_dir: where the glyph PNGs go (`<scenario folder>/images`).
        size: image side in pixels.
        seed: seed of everything random here.

    Returns:
        Validated tables with ground truth; `skipped` counts glyphs the font
        lacks (`glyph_missing`) and users that could not be built.

    Raises:
        AssetError: the font is missing or corrupt.
    """
    font = load_emoji_font(Path(assets) / "noto-emoji" / "NotoColorEmoji.ttf")
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    items, skipped = build_catalogue(font, images_dir, size)
    items = schemas.Items.validate(items)
    interactions, conversations, ground_truth, user_skips = simulate_users(
        items, cfg, np.random.default_rng(seed)
    )
    skipped.update(user_skips)
    return ScenarioData(
        scenario=SCENARIO,
        items=items,
        interactions=schemas.Interactions.validate(interactions),
        conversations=schemas.Conversations.validate(conversations),
        ground_truth=schemas.GroundTruth.validate(ground_truth),
        skipped=+skipped,
    )
