"""Local LLM loading (hf, gguf), batched generation, GGUF conversion, and load errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pmg.config import ModelSpec
from pmg.errors import ModelError
from pmg.models import tiny
from pmg.models.llm import LocalLLM, convert_gguf_to_hf, load_llm, plan_batches

KEY = "profiles.mini.llm"
PROMPTS = ["red dress", "List 5 colour keywords for: red striped dress, blue dotted shirt", "hi"]


@pytest.fixture(scope="module")
def llm(tiny_llm_dir: Path) -> LocalLLM:
    return load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir)), "cpu", key=KEY)


def _greedy(model: torch.nn.Module, ids: list[int], steps: int, eos: int) -> list[int]:
    """Reference greedy decoding, one unpadded sequence, no cache."""
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            if token == eos:
                break
            out.append(token)
    return out


def test_hf_round_trip_keeps_weights_and_prepares_tokenizer(llm: LocalLLM) -> None:
    reference = tiny.build_tiny_llama(tiny.tiny_llm_tokenizer(), seed=0)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(llm.model.state_dict()[name], tensor), name
    # The tokenizer had no pad token: the loader pads with EOS, on the left.
    assert llm.tokenizer.pad_token == llm.tokenizer.eos_token == "</s>"
    assert llm.tokenizer.padding_side == "left"
    assert llm.context_length == 256
    assert llm.model.dtype == torch.float32
    assert not llm.model.training


def test_prompts_are_wrapped_in_the_chat_template(llm: LocalLLM) -> None:
    assert llm.format_prompt("red dress") == "<|user|>red dress</s><|assistant|>"


def test_batch_is_left_padded_and_equals_prompts_alone(llm: LocalLLM) -> None:
    texts = [llm.format_prompt(p) for p in PROMPTS]
    enc = llm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    short = enc["attention_mask"][2]
    assert short[0] == 0 and short[-1] == 1  # padding sits on the left
    batched = llm.generate(PROMPTS, max_new_tokens=6)
    alone = [llm.generate([p], max_new_tokens=6)[0] for p in PROMPTS]
    assert batched == alone
    assert len(set(batched)) > 1  # the prompts matter
    # Both equal the reference: one unpadded sequence at a time, no KV cache.
    for answer, row in zip(batched, llm.encode(PROMPTS)):
        expected = _greedy(llm.model, row, 6, llm.tokenizer.eos_token_id)
        assert answer == llm.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_generation_is_greedy_decoding_of_the_templated_prompt(llm: LocalLLM) -> None:
    prompt = PROMPTS[1]
    ids = llm.tokenizer(llm.format_prompt(prompt), add_special_tokens=False)["input_ids"]
    expected = _greedy(llm.model, ids, 5, llm.tokenizer.eos_token_id)
    answer = llm.generate([prompt], max_new_tokens=5)[0]
    assert answer == llm.tokenizer.decode(expected, skip_special_tokens=True).strip()


def test_batches_larger_than_batch_size(tiny_llm_dir: Path) -> None:
    small = load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir)), "cpu", batch_size=2)
    big = load_llm(ModelSpec(kind="hf", path=str(tiny_llm_dir)), "cpu", batch_size=8)
    prompts = PROMPTS + ["blue shirt", "movie poster"]
    assert small.generate(prompts, max_new_tokens=4) == big.generate(prompts, max_new_tokens=4)


def test_sampling_is_seeded(llm: LocalLLM) -> None:
    first = llm.generate(PROMPTS, max_new_tokens=8, temperature=1.5)
    assert llm.generate(PROMPTS, max_new_tokens=8, temperature=1.5) == first
    torch.manual_seed(123)  # the caller's global RNG does not leak in
    assert llm.generate(PROMPTS, max_new_tokens=8, temperature=1.5) == first


def test_prompt_longer_than_context_is_refused(llm: LocalLLM) -> None:
    with pytest.raises(ModelError, match=r"prompt 1 has \d+ tokens.*context length 256"):
        llm.generate(["ok", "x" * 300], max_new_tokens=4)


def test_missing_path_names_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "llm"
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{missing}': no such file or folder"):
        load_llm(ModelSpec(kind="hf", path=str(missing)), "cpu", key=KEY)


def test_checkpoint_of_the_wrong_kind(tiny_clip_dir: Path) -> None:
    with pytest.raises(
        ModelError, match=rf"{KEY}\.path = '{tiny_clip_dir}': could not load a Hugging Face causal LM"
    ):
        load_llm(ModelSpec(kind="hf", path=str(tiny_clip_dir)), "cpu", key=KEY)


def test_checkpoint_missing_weights_is_refused(tiny_llm_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "llm"
    shutil.copytree(tiny_llm_dir, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"lacks 1 weights.*model\.layers\.1\.mlp\.up_proj\.weight"):
        load_llm(ModelSpec(kind="hf", path=str(broken)), "cpu", key=KEY)


def test_unknown_kind() -> None:
    with pytest.raises(ModelError, match=rf"{KEY}\.kind: unknown LLM kind 'llamacpp'"):
        load_llm(ModelSpec(kind="llamacpp", path="x"), "cpu", key=KEY)


# ----------------------------------------------------------------------------- GGUF


def test_gguf_by_file_or_by_folder_and_name(tiny_gguf_file: Path) -> None:
    by_file = load_llm(ModelSpec(kind="gguf", path=str(tiny_gguf_file)), "cpu", key=KEY)
    by_name = load_llm(
        ModelSpec(kind="gguf", path=str(tiny_gguf_file.parent), name=tiny_gguf_file.name), "cpu", key=KEY
    )
    assert by_file.tokenizer.chat_template == tiny.CHAT_TEMPLATE
    assert by_file.context_length == 256
    answers = by_file.generate(PROMPTS, max_new_tokens=5)
    assert answers == by_name.generate(PROMPTS, max_new_tokens=5)
    assert answers == [by_file.generate([p], max_new_tokens=5)[0] for p in PROMPTS]


def test_convert_gguf_to_hf_loads_as_hf_with_the_same_outputs(tiny_gguf_file: Path, tmp_path: Path) -> None:
    out = convert_gguf_to_hf(tiny_gguf_file, tmp_path / "converted")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    gguf_llm = load_llm(ModelSpec(kind="gguf", path=str(tiny_gguf_file)), "cpu", key=KEY)
    hf_llm = load_llm(ModelSpec(kind="hf", path=str(out)), "cpu", key=KEY)
    ids = torch.tensor([[5, 60, 70, 80, 90]])
    with torch.no_grad():
        assert torch.allclose(gguf_llm.model(ids).logits, hf_llm.model(ids).logits)
    assert hf_llm.generate(PROMPTS, max_new_tokens=5) == gguf_llm.generate(PROMPTS, max_new_tokens=5)


def test_gguf_garbage_file_is_named(tmp_path: Path) -> None:
    garbage = tmp_path / "model.gguf"
    garbage.write_bytes(b"<html>not a model</html>" * 10)
    with pytest.raises(ModelError, match=rf"{KEY}\.path: {garbage} is not a GGUF file \(starts with b'<htm'"):
        load_llm(ModelSpec(kind="gguf", path=str(garbage)), "cpu", key=KEY)


def test_gguf_truncated_file_fails_to_parse_clearly(tiny_gguf_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_gguf_file.read_bytes()[:200])  # valid magic, then cut short
    with pytest.raises(ModelError, match=rf"{KEY}\.path = '{truncated}': could not load a GGUF causal LM"):
        load_llm(ModelSpec(kind="gguf", path=str(truncated)), "cpu", key=KEY)


def test_gguf_folder_needs_a_name_when_ambiguous(tiny_gguf_file: Path, tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(tiny_gguf_file, tmp_path / name)
    with pytest.raises(
        ModelError,
        match=rf"holds 2 \.gguf files \(\['a\.gguf', 'b\.gguf'\]\); name the one to use in {KEY}\.name",
    ):
        load_llm(ModelSpec(kind="gguf", path=str(tmp_path)), "cpu", key=KEY)
    with pytest.raises(ModelError, match=rf"{KEY}\.name = 'c\.gguf': no such file"):
        load_llm(ModelSpec(kind="gguf", path=str(tmp_path), name="c.gguf"), "cpu", key=KEY)


def test_convert_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such GGUF file"):
        convert_gguf_to_hf(tmp_path / "none.gguf", tmp_path / "out")


# ------------------------------------------------------------- shared-prefix engine

HISTORY = "Bought:\n- a red striped wool coat\n- a blue dotted cotton shirt\n- green linen trousers\n\n"
SHARED = [HISTORY + f"Fill in the blank with {a} words." for a in ("colour", "material", "season")]


def test_plan_puts_every_prompt_once_and_groups_shared_prefixes() -> None:
    common = [1, 2, 3]
    user_a = common + list(range(100, 130))  # 30 tokens of one user's history
    user_b = common + list(range(200, 230))
    ids = [user_a + [7], user_b + [7], user_a + [8, 9], user_b + [8], [1, 2, 3, 5], user_a + [9]]
    plan = plan_batches(ids, batch_size=4, min_shared=16)
    assert sorted(plan.order()) == list(range(len(ids)))
    assert plan.common == 3
    groups = [g for batch in plan.batches for g in batch]
    by_rows = {frozenset(g.rows): g.prefix for g in groups}
    assert by_rows[frozenset({0, 2, 5})] == len(user_a)  # user a's history once
    assert by_rows[frozenset({1, 3})] == len(user_b)
    assert by_rows[frozenset({4})] == 3  # alone: only the common start is shared
    assert all(sum(len(g.rows) for g in batch) <= 4 for batch in plan.batches)
    # Too little shared beyond the common start: no group stage.
    assert all(len(g.rows) == 1 for b in plan_batches(ids, batch_size=4, min_shared=64).batches for g in b)


def test_shared_prefix_is_computed_once_and_answers_match_greedy_decoding(llm: LocalLLM) -> None:
    before = dict(llm.stats)
    answers = llm.generate(SHARED + ["hi"], max_new_tokens=5)
    ids = llm.encode(SHARED + ["hi"])
    computed = llm.stats["computed_prompt_tokens"] - before["computed_prompt_tokens"]
    history = len(llm.tokenizer(HISTORY, add_special_tokens=False)["input_ids"])
    # The 3 prompts share the history: it runs once, not 3 times.
    assert computed <= sum(len(row) for row in ids) - 2 * history
    for prompt, answer, row in zip(SHARED + ["hi"], answers, ids):
        expected = _greedy(llm.model, row, 5, llm.tokenizer.eos_token_id)
        assert answer == llm.tokenizer.decode(expected, skip_special_tokens=True).strip(), prompt


class StopAfter:
    """A stop rule: the answer is complete once it has `n` characters."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.key = f"after-{n}"

    def __call__(self, answer: str) -> bool:
        return len(answer) >= self.n


def test_a_stop_rule_ends_its_row_only(llm: LocalLLM) -> None:
    full = llm.generate(SHARED, max_new_tokens=8)
    stopped = llm.generate(SHARED, max_new_tokens=8, stop=[StopAfter(1), None, None])
    assert stopped[1:] == full[1:]  # the other rows run on, unchanged
    assert full[0].startswith(stopped[0]) and len(stopped[0]) < len(full[0])
    first = llm.tokenizer(full[0], add_special_tokens=False)["input_ids"][:1]
    assert stopped[0] == llm.tokenizer.decode(first).strip()
    with pytest.raises(ValueError, match="2 stop rules given for 3 prompts"):
        llm.generate(SHARED, max_new_tokens=4, stop=[None, None])


def test_batch_order_runs_shared_prefixes_together(llm: LocalLLM) -> None:
    other = ["Bought:\n- black boots\n\nFill in the blank with colour words.", "hi"]
    prompts = [SHARED[0], other[0], SHARED[1], other[1], SHARED[2]]
    order = llm.batch_order(prompts)
    assert sorted(order) == list(range(5))
    positions = sorted(order.index(i) for i in (0, 2, 4))
    assert positions[-1] - positions[0] == 2  # one user's prompts are neighbours


def test_a_person_watching_sees_the_batches_progress(llm: LocalLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword prompts are the demo's longest LLM loop: at a terminal it shows counts and an ETA."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("CI", raising=False)
    answers = llm.generate(PROMPTS, max_new_tokens=2)
    assert len(answers) == 3
    assert f"llm {len(PROMPTS)} prompts, batches" in terminal.getvalue()
