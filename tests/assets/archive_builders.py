"""Builders of tiny package archives (wheel, sdist, deb) for the assets tests.

Each builder writes a real archive of its format, so the fetcher's readers and
`pip download` see exactly what a registry would serve, only smaller.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

from pmg.assets.manifest import AssetSpec, Extract, Licence

FIXTURE_PACKAGE = "fixturepkg"
FIXTURE_VERSION = "1.0"
FIXTURE_WHEEL = f"{FIXTURE_PACKAGE}-{FIXTURE_VERSION}-py3-none-any.whl"

FIXTURE_FILES: dict[str, bytes] = {
    f"{FIXTURE_PACKAGE}/__init__.py": b"",
    f"{FIXTURE_PACKAGE}/data/a.txt": b"alpha\n",
    f"{FIXTURE_PACKAGE}/data/sub/b.bin": bytes(range(256)),
    f"{FIXTURE_PACKAGE}/notes.txt": b"notes\n",
    f"{FIXTURE_PACKAGE}/unwanted.txt": b"not extracted\n",
}
"""Payload of the fixture wheel; the fixture spec takes `data/` and `notes.txt`."""

FIXTURE_EXTRACTED: dict[str, bytes] = {
    "a.txt": FIXTURE_FILES[f"{FIXTURE_PACKAGE}/data/a.txt"],
    "sub/b.bin": FIXTURE_FILES[f"{FIXTURE_PACKAGE}/data/sub/b.bin"],
    "docs/notes.txt": FIXTURE_FILES[f"{FIXTURE_PACKAGE}/notes.txt"],
}
"""What the fixture spec must leave in the asset folder, by relative path."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(folder: Path, files: dict[str, bytes], *, license_field: str = "MIT") -> Path:
    """A minimal pure-Python wheel of `fixturepkg` 1.0 holding `files`."""
    dist_info = f"{FIXTURE_PACKAGE}-{FIXTURE_VERSION}.dist-info"
    path = folder / FIXTURE_WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
        wheel.writestr(
            f"{dist_info}/METADATA",
            f"Metadata-Version: 2.1\nName: {FIXTURE_PACKAGE}\nVersion: {FIXTURE_VERSION}\n"
            f"License: {license_field}\nHome-page: https://example.invalid/{FIXTURE_PACKAGE}\n"
            "Classifier: License :: OSI Approved :: MIT License\n\nA fixture.\n",
        )
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")
    return path


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tarball of `(name, data)` regular files and ready-made TarInfo entries (links, dirs)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii")
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def build_deb(
    path: Path,
    package: str,
    version: str,
    data_files: dict[str, bytes],
    copyright_text: str,
    *,
    compression: str = "xz",
) -> Path:
    """A Debian binary package: `ar` of debian-binary, control.tar.gz, data.tar.<compression>.

    `compression` is `xz` (Debian) or `zst` (Ubuntu; needs the `zstd` tool).

    An extra odd-sized `ar` member sits between them, so readers must honour
    ar's even-offset padding to find the data tarball.
    """
    control = (
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: Test <test@example.invalid>\nHomepage: https://example.invalid/{package}\n"
        "Description: fixture\n a fixture package\n"
    ).encode()
    control_tar = tar_bytes([("./control", control)], mode="w:gz")
    directory = tarfile.TarInfo("./usr")
    directory.type = tarfile.DIRTYPE
    data_members: list[tarfile.TarInfo | tuple[str, bytes]] = [directory]
    data_members += [(f"./{name}", data) for name, data in data_files.items()]
    data_members.append((f"./usr/share/doc/{package}/copyright", copyright_text.encode()))
    if compression == "zst":
        plain = tar_bytes(data_members, mode="w")
        zstd = shutil.which("zstd")
        assert zstd is not None, "building a .zst deb needs the zstd tool"
        data_tar = subprocess.run([zstd, "-c", "-q"], input=plain, capture_output=True, check=True).stdout
    else:
        data_tar = tar_bytes(data_members, mode=f"w:{compression}")
    path.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("zz-odd-sized", b"odd")
        + _ar_member("control.tar.gz", control_tar)
        + _ar_member(f"data.tar.{compression}", data_tar)
    )
    return path


def fixture_spec(sha256: str, **changes: object) -> AssetSpec:
    """The spec of the fixture wheel, with `changes` applied."""
    fields: dict[str, object] = {
        "name": "fixture",
        "registry": "pypi",
        "package": FIXTURE_PACKAGE,
        "version": FIXTURE_VERSION,
        "archive": FIXTURE_WHEEL,
        "sha256": sha256,
        "extract": (
            Extract(f"{FIXTURE_PACKAGE}/data/", ""),
            Extract(f"{FIXTURE_PACKAGE}/notes.txt", "docs/notes.txt"),
        ),
        "licences": (Licence(covers="everything", licence="MIT", evidence="METADATA License: MIT"),),
        "source_url": "https://example.invalid/fixturepkg",
    }
    fields.update(changes)
    return AssetSpec(**fields)  # type: ignore[arg-type]
