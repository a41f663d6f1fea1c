"""Versioned prompt templates, one YAML file per scenario.

A template set holds everything the `describe` and `keywords` steps ask the
LLM for one scenario: the summary prompt, the per-attribute preference prompt
(the paper's instruction `p` + attribute `a_i` + format example `e` + history
`x` + conversations `y`), the target-item prompt, and the fallbacks used when
the LLM's answer has nothing usable.

`version` is part of every cache key. Changing anything in a file must change
its version: the file's own `versions` block (at its end) records the sha256
of the file's content per version (the file above the block, without its
`version` line), and a test fails when the content changed but the version
did not. The history lives in the template file itself so that a new
scenario's templates are one new file.

Which file a scenario reads is its declaration's business
(`pmg.scenarios.<name>.SCENARIO.prompts`: a file name in this folder or an
absolute path).

Placeholders (Python `str.format`):

* `summary`: `{text}` (the item or turn text), `{noun}` (`item_noun`).
* `preference`: `{history}` (history lines, one per item, oldest first, each
  formatted by `history_line`), `{conversations}` (the `conversations_block`
  filled with turn lines, or "" when the user has none), `{attribute}` (the
  attribute's `phrase`), `{n}` (keywords asked), `{example}` (the attribute's
  example keywords joined by ", "), `{cloze}` (the attribute's cloze sentence).
* `target`: `{line}` (the target item's description line), `{title}`, `{n}`,
  `{example}`, `{cloze}` (`target_cloze`).

Cloze sentences. A small instruct model asked "answer with 3 keywords, like:
navy, beige, olive" repeats the example back; asked to fill the blank of
"The shopper likes ____ colours." it answers "The shopper likes blue." So a
template may give, per attribute, a `cloze` sentence with a `____` blank as
its output-format example `e`; the answer's fill of the blank is then read
first (`pmg.method.parsing.extract_cloze`), the general keyword parser after.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pmg.errors import ConfigError
from pmg.scenarios import get as get_scenario

FOLDER = Path(__file__).resolve().parent
BLANK = "____"
HISTORY_MARKER = "# Content sha256 of every version of this file"
"""First line of a template file's version history block (everything below it is the history)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttributePrompt(_Frozen):
    """One attribute `a_i` of a scenario.

    Attributes:
        name: the attribute (as in the authors' code: colour, genre, ...).
        phrase: how the question names it ("colours", "film genres").
        example: format-example keywords `e`. They show the format; an answer
            that only repeats them (and they are not in the user's lines) is
            an echo, not a preference, and is discarded.
        fallback_fields: item attribute fields whose most frequent values in
            the history stand in when the LLM's answer is unusable.
        fallback_format: how a fallback value is written (`{value}`; `{decade}`
            gives e.g. "1990s" for a year).
        cloze: a sentence with a `____` blank the answer should complete
            ("The shopper likes ____ colours."); "" when the template uses none.
    """

    name: str = Field(min_length=1)
    phrase: str = Field(min_length=1)
    example: tuple[str, ...] = Field(min_length=1)
    fallback_fields: tuple[str, ...] = ()
    fallback_format: str = "{value}"
    cloze: str = ""

    @model_validator(mode="after")
    def _one_blank(self) -> AttributePrompt:
        if self.cloze and self.cloze.count(BLANK) != 1:
            raise ValueError(f"cloze of {self.name!r} must hold exactly one {BLANK!r}: {self.cloze!r}")
        return self


class PromptSet(_Frozen):
    """All templates of one scenario (see the module docstring)."""

    version: str = Field(min_length=1)
    scenario: str
    item_noun: str
    summary: str
    history_line: str = "- {line}"
    conversation_line: str = "- {line}"
    conversations_block: str = ""
    preference: str
    attributes: tuple[AttributePrompt, ...] = Field(min_length=1)
    target: str
    target_example: tuple[str, ...] = Field(min_length=1)
    target_fallback_fields: tuple[str, ...] = ()
    target_cloze: str = ""
    caption_fields: tuple[str, ...] = ()
    versions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_placeholders(self) -> PromptSet:
        allowed = {
            "summary": {"text", "noun"},
            "history_line": {"line", "n"},
            "conversation_line": {"line", "n"},
            "conversations_block": {"conversations"},
            "preference": {"history", "conversations", "attribute", "n", "example", "cloze"},
            "target": {"line", "title", "n", "example", "cloze"},
        }
        for name, fields in allowed.items():
            used = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f is not None}
            unknown = used - fields
            if unknown:
                raise ValueError(
                    f"{name} uses unknown placeholders {sorted(unknown)}; allowed: {sorted(fields)}"
                )
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"attribute names repeat: {names}")
        return self


def template_file(scenario: str) -> Path:
    """The YAML file of a scenario's templates (named by its declaration in `pmg.scenarios`)."""
    return FOLDER / get_scenario(scenario).prompts  # an absolute path stays as it is


def content_hash(path: Path) -> str:
    """sha256 of a template file above its version history block, without its `version:` line."""
    text = path.read_text(encoding="utf-8")
    if HISTORY_MARKER in text:
        text = text[: text.index(HISTORY_MARKER)].rstrip("\n") + "\n"
    body = re.sub(r"(?m)^version:.*\n?", "", text)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def load_prompt_set(scenario: str) -> PromptSet:
    """Read and validate the template set of `scenario`.

    Raises:
        ConfigError: an unknown scenario, no such file, not YAML, or a
            field/placeholder is wrong.
    """
    return _load(template_file(scenario), scenario)


@functools.cache
def _load(path: Path, scenario: str) -> PromptSet:
    if not path.is_file():
        raise ConfigError(f"{path}: no prompt templates for scenario {scenario!r}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        prompt_set = PromptSet.model_validate(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<top>'}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None
    if prompt_set.scenario != scenario:
        raise ConfigError(f"{path}: scenario is {prompt_set.scenario!r}, expected {scenario!r}")
    return prompt_set
