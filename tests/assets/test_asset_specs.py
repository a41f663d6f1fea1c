"""DEFAULT_ASSETS gives the layout other stages read, and specs reject unsafe values."""

from __future__ import annotations

import pytest

from pmg.assets import DEFAULT_ASSETS, AssetSpec, Extract, Licence
from pmg.assets.fetch import CONVERTERS


def _targets(name: str) -> set[str]:
    spec = next(spec for spec in DEFAULT_ASSETS if spec.name == name)
    return {rule.to for rule in spec.extract}


def test_default_assets_give_the_paths_the_pipeline_reads() -> None:
    # pmg.stages.prepare and pmg.data.world read these files under <folder>/<name>/.
    assert {"ml-100k.inter", "ml-100k.item", "ml-100k.user"} <= _targets("ml-100k")
    assert "NotoColorEmoji.ttf" in _targets("noto-emoji")
    assert {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} <= _targets("fashion-mnist")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in _targets("smollm2")
    assert _targets("minilm") == {""}  # the whole model folder at the asset root
    lpips = next(spec for spec in DEFAULT_ASSETS if spec.name == "lpips")
    assert lpips.converter in CONVERTERS


def test_default_assets_are_pinned_and_licensed() -> None:
    names = [spec.name for spec in DEFAULT_ASSETS]
    assert len(names) == len(set(names)) == 6
    for spec in DEFAULT_ASSETS:
        assert spec.version in spec.archive
        assert spec.licences and all(licence.licence and licence.evidence for licence in spec.licences)


def _spec(**changes: object) -> AssetSpec:
    fields: dict[str, object] = {
        "name": "x",
        "registry": "pypi",
        "package": "x",
        "version": "1",
        "archive": "x-1-py3-none-any.whl",
        "sha256": "a" * 64,
        "extract": (Extract("x/", ""),),
        "licences": (Licence("all", "MIT", "here"),),
        "source_url": "https://example.invalid",
    }
    fields.update(changes)
    return AssetSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "../x"}, "plain folder name"),
        ({"name": ".hidden"}, "plain folder name"),
        ({"sha256": "A" * 64}, "64 lowercase hex"),
        ({"sha256": "abc"}, "64 lowercase hex"),
        ({"archive": "x-1.deb"}, "not a wheel or sdist"),
        ({"registry": "deb"}, "not a deb"),
        ({"archive": "../x-1-py3-none-any.whl"}, "plain file name"),
        ({"extract": ()}, "nothing to extract"),
    ],
)
def test_spec_rejects_unsafe_or_inconsistent_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _spec(**changes)


@pytest.mark.parametrize("target", ["../out", "/abs/out", "a/../../out", "a\\..\\out"])
def test_extract_target_must_stay_inside_the_asset_folder(target: str) -> None:
    with pytest.raises(ValueError, match="inside the asset folder"):
        Extract("x/file", target)
