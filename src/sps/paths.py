"""Where sps reads benchmark data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The benchmark data folder: the argument, else $SPS_DATA_DIR, else ../shared/data next to the
    checkout when it exists. None when no folder is known (benchmarks must then be given as paths)."""
    if explicit:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"data directory {path} does not exist")
        return path
    if os.environ.get("SPS_DATA_DIR"):
        return data_dir(os.environ["SPS_DATA_DIR"])
    beside_checkout = REPO_ROOT.parent / "shared" / "data"
    return beside_checkout if beside_checkout.is_dir() else None


def cache_dir() -> Path:
    """The cache folder for converted models and built testbeds: $SPS_CACHE_DIR or ~/.cache/sps."""
    return Path(os.environ.get("SPS_CACHE_DIR") or Path.home() / ".cache" / "sps")
