"""``pndm.json``: what decided the pixels of a sample folder, and which seeds it holds.

The first run into a folder writes it; every later run compares its settings before loading the
model. A pixel-deciding setting that differs (the model's content hash, the method and its options,
the steps or explicit timesteps, the dtype) refuses the run, naming each difference; other
versions of pndm or torch only warn (pixels may differ in the last bits). More seeds with the same
settings extend the folder and the manifest's seed list, in the order they were first asked for;
that order is the order `pndm pack` writes. Batch size, world size, threads and device type are
not recorded: an image depends on its seed alone (at equal threads per process on the CPU).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pndm.files.jsonfile import read_json, write_json
from pndm.jobs.seeds import seed_ranges, seeds_to_spec

NAME = "pndm.json"
FORMAT = "pndm-sample-folder/2"
OLD_FORMAT = "pndm-sample-folder/1"  # recorded a hash of the files, not `model_hash`
SETTINGS = ("model", "method", "method_options", "steps", "timesteps", "calibration", "dtype")


@dataclass
class Manifest:
    """``settings``: the pixel-deciding values (keys `SETTINGS`); ``image``: width, height and PIL
    mode of every image; ``versions``: pndm and torch; ``seeds``: every seed asked for so far."""

    settings: dict[str, Any]
    image: dict[str, Any]
    versions: dict[str, str]
    seeds: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "settings": self.settings,
            "image": self.image,
            "versions": self.versions,
            "seeds": seeds_to_spec(self.seeds),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Path) -> Manifest:
        if data.get("format") == OLD_FORMAT:
            raise ValueError(
                f"{path} was written by an earlier pndm ({OLD_FORMAT}), which identified the model "
                "by another hash; sample into a new folder"
            )
        if data.get("format") != FORMAT or not isinstance(data.get("settings"), dict):
            raise ValueError(f"{path} is not a pndm sample-folder manifest ({FORMAT})")
        spec = data.get("seeds", "")
        seeds = [s for r in seed_ranges(spec) for s in r] if spec else []
        return cls(dict(data["settings"]), dict(data["image"]), dict(data["versions"]), seeds)


def read(folder: Path) -> Manifest | None:
    """The folder's manifest, or None where there is none."""
    path = folder / NAME
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a file; a sample folder's manifest must be one")
    return Manifest.from_json(read_json(path), path) if path.is_file() else None


def write(folder: Path, manifest: Manifest) -> None:
    write_json(folder / NAME, manifest.to_json())


def differences(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``"steps 20 (pndm.json: 50)"`` for every setting whose values differ."""
    return [
        f"{key} {_show(wanted.get(key))} (pndm.json: {_show(recorded.get(key))})"
        for key in SETTINGS
        if _canonical(recorded.get(key)) != _canonical(wanted.get(key))
    ]


def merge(folder: Path, wanted: Manifest, overwrite: bool) -> Manifest:
    """The manifest after this run: ``wanted``'s settings checked against the folder's, its seeds
    added to the recorded ones. Raises, naming every difference, where the settings differ."""
    recorded = read(folder)
    if recorded is None:
        _check_no_foreign_images(folder, overwrite)
        return wanted
    diffs = differences(recorded.settings, wanted.settings)
    if diffs:
        raise ValueError(
            f"{folder} holds images made with other settings: {'; '.join(diffs)}. Sample into "
            "another folder, or with the recorded settings"
        )
    _warn_versions(recorded.versions, wanted.versions)
    seen = set(recorded.seeds)
    extra = [seed for seed in wanted.seeds if seed not in seen]
    return Manifest(recorded.settings, recorded.image, recorded.versions, recorded.seeds + extra)


def _check_no_foreign_images(folder: Path, overwrite: bool) -> None:
    if not overwrite and folder.is_dir() and any(folder.glob("seed*.png")):
        raise ValueError(
            f"{folder} holds seed PNGs but no {NAME}, so how they were made is unknown; sample "
            "into a new folder, or pass --overwrite to resample the requested seeds"
        )


def _warn_versions(recorded: Mapping[str, str], current: Mapping[str, str]) -> None:
    changed = [
        f"{k} {v} (pndm.json: {recorded.get(k)})"
        for k, v in current.items()
        if recorded.get(k) != v
    ]
    if changed:
        warnings.warn(
            f"this folder was sampled with other versions: {'; '.join(changed)}; new images may "
            "differ from the old ones in the last bits",
            UserWarning,
            stacklevel=2,
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _canonical(value)
