"""The content-addressed LLM cache: hits, misses, invalidation, concurrency, model ids."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import torch
from method_helpers import ScriptedLLM  # tests/method/ is on sys.path
from PIL import Image
from safetensors.torch import save_file

from pmg.config import ModelSpec
from pmg.method.llm_cache import (
    CachedCaptioner,
    CachedLLM,
    ContentCache,
    ask_llm,
    llm_key,
    model_fingerprint,
    model_id_of,
    takes_stop_rules,
)


def echo(prompt: str) -> str:
    return f"answer to {prompt}"


def test_second_call_does_not_reach_the_llm(tmp_path: Path) -> None:
    llm = ScriptedLLM(echo)
    cached = CachedLLM(llm, "m", ContentCache(tmp_path))
    first = cached.generate(["a", "b", "c"], max_new_tokens=8, template_version="v1")
    assert llm.calls == [["a", "b", "c"]]  # all misses in ONE batched call
    # A fresh wrapper over the same folder (another run) answers from disk.
    again = CachedLLM(llm, "m", ContentCache(tmp_path))
    assert again.generate(["c", "a", "b"], max_new_tokens=8, template_version="v1") == [
        first[2],
        first[0],
        first[1],
    ]
    assert len(llm.calls) == 1
    assert again.stats.as_dict() == {"hits": 3, "misses": 0, "calls": 0}


def test_only_misses_are_sent_once_each(tmp_path: Path) -> None:
    llm = ScriptedLLM(echo)
    cached = CachedLLM(llm, "m", ContentCache(tmp_path))
    cached.generate(["a"], max_new_tokens=8, template_version="v1")
    answers = cached.generate(["a", "x", "x", "y"], max_new_tokens=8, template_version="v1")
    assert llm.calls[-1] == ["x", "y"]  # 'a' cached, 'x' de-duplicated
    assert answers == ["answer to a", "answer to x", "answer to x", "answer to y"]
    assert cached.stats.calls == 2 and cached.stats.misses == 3


def test_key_covers_template_version_model_and_generation_params(tmp_path: Path) -> None:
    llm = ScriptedLLM(echo)
    cached = CachedLLM(llm, "m", ContentCache(tmp_path))
    cached.generate(["a"], max_new_tokens=8, template_version="v1")
    cached.generate(["a"], max_new_tokens=8, template_version="v2")  # new template version
    cached.generate(["a"], max_new_tokens=16, template_version="v1")  # new generation params
    CachedLLM(llm, "other-model", ContentCache(tmp_path)).generate(
        ["a"], max_new_tokens=8, template_version="v1"
    )
    assert len(llm.calls) == 4
    keys = {
        llm_key("m", "v1", "a", 8, 0.0),
        llm_key("m", "v2", "a", 8, 0.0),
        llm_key("m", "v1", "a", 16, 0.0),
        llm_key("m", "v1", "a", 8, 0.5),
        llm_key("other-model", "v1", "a", 8, 0.0),
    }
    assert len(keys) == 5


def test_batch_size_splits_misses_and_keeps_finished_chunks(tmp_path: Path) -> None:
    def rule(prompt: str) -> str:
        if prompt == "boom":
            raise RuntimeError("model crashed")
        return prompt.upper()

    llm = ScriptedLLM(rule)
    cached = CachedLLM(llm, "m", ContentCache(tmp_path), batch_size=2)
    with pytest.raises(RuntimeError):
        cached.generate(["a", "b", "c", "boom"], max_new_tokens=4)
    # The first chunk was stored before the crash: a retry only sends the rest.
    llm.rule = str.upper
    assert cached.generate(["a", "b", "c", "boom"], max_new_tokens=4) == ["A", "B", "C", "BOOM"]
    assert llm.calls[-1] == ["c", "boom"]


def test_entries_are_readable_json_and_corrupt_ones_are_misses(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    llm = ScriptedLLM(echo)
    CachedLLM(llm, "m", cache).generate(["a"], max_new_tokens=8, template_version="v1")
    key = llm_key("m", "v1", "a", 8, 0.0)
    record = json.loads(cache.path(key).read_text())
    assert (
        record["prompt"] == "a" and record["answer"] == "answer to a" and record["template_version"] == "v1"
    )
    cache.path(key).write_text("{ truncated")
    CachedLLM(llm, "m", cache).generate(["a"], max_new_tokens=8, template_version="v1")
    assert len(llm.calls) == 2
    assert json.loads(cache.path(key).read_text())["answer"] == "answer to a"
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00 not utf-8", b"", b"[1, 2]", b'{"key": "another"}'])
def test_an_entry_that_is_not_utf8_json_is_a_miss_and_is_overwritten(tmp_path: Path, garbage: bytes) -> None:
    cache = ContentCache(tmp_path)
    llm = ScriptedLLM(echo)
    key = llm_key("m", "v1", "a", 8, 0.0)
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(garbage)
    assert CachedLLM(llm, "m", cache).generate(["a"], max_new_tokens=8, template_version="v1") == ["answer to a"]
    assert len(llm.calls) == 1
    assert json.loads(cache.path(key).read_text(encoding="utf-8"))["answer"] == "answer to a"


def _writer(folder: str, worker: int, n: int) -> None:
    cache = ContentCache(folder)
    for i in range(n):
        # Half the keys are shared by both workers, half are the worker's own.
        for name in (f"shared-{i}", f"own-{worker}-{i}"):
            key = llm_key("m", "v", name, 1, 0.0)
            cache.put(key, {"prompt": name, "answer": "x" * 2000 + name})


def test_two_processes_writing_at_once_do_not_corrupt_it(tmp_path: Path) -> None:
    # spawn, not fork: forking a process that already runs torch threads can hang.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(tmp_path), w, 150)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
        assert worker.exitcode == 0
    cache = ContentCache(tmp_path)
    assert len(cache) == 150 * 3
    for name in [f"shared-{i}" for i in range(150)] + [f"own-{w}-{i}" for w in range(2) for i in range(150)]:
        record = cache.get(llm_key("m", "v", name, 1, 0.0))
        assert record is not None and record["answer"] == "x" * 2000 + name
    assert not list(tmp_path.rglob("*.tmp"))


def _tiny_weights(folder: Path, value: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    save_file({"w": torch.full((8, 8), value)}, folder / "model.safetensors")


def test_model_id_changes_when_weights_change_at_the_same_path(tmp_path: Path) -> None:
    folder = tmp_path / "llm"
    _tiny_weights(folder, 1.0)
    spec = ModelSpec(kind="hf", path=str(folder))
    first = model_id_of(spec)
    assert first == model_id_of(spec)  # stable
    _tiny_weights(folder, 2.0)  # same shapes, same header, new values
    assert model_id_of(spec) != first
    # A copy elsewhere is the same model (no path, no mtime in the fingerprint).
    _tiny_weights(tmp_path / "copy", 2.0)
    assert model_fingerprint(tmp_path / "copy") == model_fingerprint(folder)
    # A swapped tokenizer/chat template counts too.
    before = model_fingerprint(folder)
    (folder / "tokenizer_config.json").write_text('{"chat_template": "x"}')
    assert model_fingerprint(folder) != before


def test_large_weights_are_sampled_not_read_whole(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    data = bytearray(20 * 2**20)
    (folder / "w.bin").write_bytes(bytes(data))
    first = model_fingerprint(folder)
    data[10 * 2**20 : 10 * 2**20 + 4 * 2**20] = b"\x01" * (4 * 2**20)  # a change in the middle
    (folder / "w.bin").write_bytes(bytes(data))
    assert model_fingerprint(folder) != first


def test_hub_ids_and_endpoints_are_named_not_fingerprinted() -> None:
    assert model_id_of(ModelSpec(kind="hf", path="meta-llama/Llama-2-7b-chat-hf", dtype="float16")) == (
        "hf:meta-llama/Llama-2-7b-chat-hf:float16"
    )
    assert model_id_of(ModelSpec(kind="openai", url="http://h:8000", name="m")).startswith(
        "openai:http://h:8000:m"
    )


class CountingCaptioner:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def caption(self, images: list[Image.Image]) -> list[str]:
        self.calls.append(len(images))
        return [f"colour {im.getpixel((0, 0))[0]}" for im in images]


def test_captions_are_cached_by_pixels(tmp_path: Path) -> None:
    captioner = CountingCaptioner()
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    cached = CachedCaptioner(captioner, "cap", ContentCache(tmp_path))
    assert cached.caption([red, blue, red.copy()]) == ["colour 255", "colour 0", "colour 255"]
    assert captioner.calls == [2]
    assert CachedCaptioner(captioner, "cap", ContentCache(tmp_path)).caption([blue, red]) == [
        "colour 0",
        "colour 255",
    ]
    assert captioner.calls == [2]
    CachedCaptioner(captioner, "cap-v2", ContentCache(tmp_path)).caption([blue])
    assert captioner.calls == [2, 1]


class Rule:
    """A stop rule with a cache key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, answer: str) -> bool:
        return False


class StoppingLLM(ScriptedLLM):
    """Records the stop rules it was given; offers a batch order (reverse)."""

    def __init__(self) -> None:
        super().__init__(echo)
        self.stops: list = []

    def generate(self, prompts, *, max_new_tokens, temperature=0.0, stop=None):
        self.stops.append(stop)
        return super().generate(prompts, max_new_tokens=max_new_tokens, temperature=temperature)

    def batch_order(self, prompts):
        return list(reversed(range(len(prompts))))


def test_a_stop_rule_is_part_of_the_key_and_reaches_the_llm(tmp_path: Path) -> None:
    llm = StoppingLLM()
    cached = CachedLLM(llm, "m", ContentCache(tmp_path))
    cached.generate(["a"], max_new_tokens=8)
    cached.generate(["a"], max_new_tokens=8, stop=Rule("cloze-v1"))  # another key: runs again
    cached.generate(["a"], max_new_tokens=8, stop=Rule("cloze-v2"))
    cached.generate(["a"], max_new_tokens=8, stop=Rule("cloze-v1"))  # cached
    assert len(llm.calls) == 3
    assert llm.stops[0] is None and [r.key for r in llm.stops[1]] == ["cloze-v1"]
    assert llm_key("m", "", "a", 8, 0.0) != llm_key("m", "", "a", 8, 0.0, Rule("cloze-v1"))
    # Without a stop rule the key is the one of answers cached before stop rules existed.
    assert llm_key("m", "", "a", 8, 0.0, None) == llm_key("m", "", "a", 8, 0.0)
    with pytest.raises(ValueError, match="has no `key`"):
        cached.generate(["b"], max_new_tokens=8, stop=lambda answer: True)


def test_misses_go_in_the_llms_batch_order(tmp_path: Path) -> None:
    llm = StoppingLLM()
    cached = CachedLLM(llm, "m", ContentCache(tmp_path), batch_size=2)
    answers = cached.generate(["a", "b", "c"], max_new_tokens=8, stop=[Rule("r1"), None, Rule("r3")])
    assert answers == ["answer to a", "answer to b", "answer to c"]
    assert llm.calls == [["c", "b"], ["a"]]
    assert [[r and r.key for r in chunk] for chunk in llm.stops] == [["r3", None], ["r1"]]


def test_an_llm_without_stop_rules_answers_in_full_under_the_plain_key(tmp_path: Path) -> None:
    llm = ScriptedLLM(echo)  # its generate takes no `stop`, like the endpoint LLM
    cached = CachedLLM(llm, "m", ContentCache(tmp_path))
    assert cached.generate(["a", "b"], max_new_tokens=8, stop=[Rule("r1"), None]) == [
        "answer to a",
        "answer to b",
    ]
    # The rule was dropped, key included: the plain call is a hit.
    cached.generate(["a"], max_new_tokens=8)
    assert llm.calls == [["a", "b"]]
    assert ask_llm(llm, ["c"], max_new_tokens=8, template_version="", stop=Rule("r1")) == ["answer to c"]
    assert takes_stop_rules(StoppingLLM()) and not takes_stop_rules(llm)
