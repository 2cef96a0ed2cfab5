"""``pndm.json``: what decided the pixels of a sample folder, and which seeds it holds.

The first run into a folder writes it before its first image; every later run compares its
settings before loading the model. A pixel-deciding setting that differs (the model's content
hash, the method and its options, the steps or explicit timesteps, the dtype, the image size and
mode) refuses the run, naming each difference; other versions of pndm or torch only warn (pixels
may differ in the last bits). More seeds with the same settings extend the folder and the
manifest's seed list, in the order they were first asked for; that order is the order `pndm pack`
writes. A run records its seeds only once its last image is written, so a refused or interrupted
run leaves the file as it was. Batch size, world size, threads and device type are not recorded:
an image depends on its seed alone (at equal threads per process on the CPU). Every field is
checked when the file is read.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pndm.checks import shown
from pndm.files.jsonfile import MAX_JSON_BYTES, json_text, read_json, write_json
from pndm.jobs.seeds import check_image_count, parse_seeds, seeds_to_spec

NAME = "pndm.json"
FORMAT = "pndm-sample-folder/2"
OLD_FORMAT = "pndm-sample-folder/1"  # recorded a hash of the files, not `model_hash`
FIELDS = ("format", "settings", "image", "versions", "seeds")
SETTINGS = ("model", "method", "method_options", "steps", "timesteps", "calibration", "dtype",
            "conditioning")  # fmt: skip
OPTIONAL_SETTINGS = ("calibration", "conditioning")  # absent where none was used
# The JSON type of each recorded setting (its value is compared with the run's, not checked).
SETTING_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"),
    "method": ((str,), "a string"),
    "method_options": ((dict,), "an object"),
    "steps": ((int,), "an integer"),
    "timesteps": ((list, type(None)), "a list of times or null"),
    "calibration": ((dict,), "an object"),
    "conditioning": ((dict,), "an object"),  # `pndm.guidance.conditioning_setting`
    "dtype": ((str,), "a string"),
}
IMAGE = ("width", "height", "mode")
MODES = ("L", "RGB")  # the PNG modes pndm writes (`pndm.images.png_mode`)
# A side beyond any pixel-space diffusion model's; 8192 x 8192 stays under PIL's decompression
# bomb limit (89.5 Mpx), so every image of a folder can be read back.
MAX_SIDE = 8192
VERSIONS = ("pndm", "torch")
_MISSING = object()


class VersionsWarning(UserWarning):
    """A folder sampled with other versions of pndm or torch: new images may differ in the
    last bits (the CLI prints it as one ``warning:`` line)."""


@dataclass
class Manifest:
    """``settings``: the pixel-deciding values (keys `SETTINGS`); ``image``: width, height and PIL
    mode of every image; ``versions``: pndm and torch; ``seeds``: every seed recorded so far."""

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
        """The manifest ``data`` read from ``path``, every field checked: a hand-edited or
        damaged file is refused in one line naming the file and the field."""
        _check_format(data, path)
        _check_keys(data, "", FIELDS, FIELDS, path)
        settings = _settings(data["settings"], path)
        image = check_image(data["image"], path)
        return cls(settings, image, _versions(data["versions"], path), _seeds(data["seeds"], path))


def _invalid(path: Path, name: str, valid: str, value: Any) -> ValueError:
    """``<file>: <name> must be <valid>, got <value>`` (pndm.checks' shape, naming the file)."""
    got = "nothing" if value is _MISSING else shown(value)
    return ValueError(f"{path}: {name} must be {valid}, got {got}")


def _check_format(data: Mapping[str, Any], path: Path) -> None:
    if data.get("format") == OLD_FORMAT:
        raise ValueError(
            f"{path} was written by an earlier pndm ({OLD_FORMAT}), which identified the model "
            "by another hash; sample into a new folder"
        )
    if data.get("format") != FORMAT:
        valid = f"{FORMAT!r} (a pndm sample-folder manifest)"
        raise _invalid(path, "format", valid, data.get("format", _MISSING))


def _check_keys(
    value: Any, name: str, required: tuple[str, ...], allowed: tuple[str, ...], path: Path
) -> None:
    """``value`` (the field ``name``; "" for the whole file) must be an object holding every
    ``required`` key and no key beyond ``allowed``."""
    valid = f"an object of {', '.join(allowed)}"
    if not isinstance(value, dict):
        raise _invalid(path, name, valid, value)
    for key in required:
        if key not in value:
            raise _invalid(path, f"{name}.{key}".lstrip("."), "given", _MISSING)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(
            f"{path}: {name or 'the file'} must be {valid}, got the unknown key "
            f"{shown(unknown[0], 30)}"
        )


def _settings(settings: Any, path: Path) -> dict[str, Any]:
    required = tuple(key for key in SETTINGS if key not in OPTIONAL_SETTINGS)
    _check_keys(settings, "settings", required, SETTINGS, path)
    for key, value in settings.items():
        types, words = SETTING_TYPES[key]
        if type(value) not in types:  # exact: JSON's true is not the integer 1
            raise _invalid(path, f"settings.{key}", words, value)
    return dict(settings)


def check_image(image: Any, path: Path) -> dict[str, Any]:
    """``image`` if it is {width, height: integers in [1, `MAX_SIDE`], mode: one of `MODES`}."""
    _check_keys(image, "image", IMAGE, IMAGE, path)
    for side in ("width", "height"):
        value = image[side]
        if type(value) is not int or not 1 <= value <= MAX_SIDE:
            raise _invalid(path, f"image.{side}", f"an integer in [1, {MAX_SIDE}]", value)
    if type(image["mode"]) is not str or image["mode"] not in MODES:
        raise _invalid(path, "image.mode", f"one of {', '.join(MODES)}", image["mode"])
    return dict(image)


def _versions(versions: Any, path: Path) -> dict[str, str]:
    _check_keys(versions, "versions", VERSIONS, VERSIONS, path)
    for key, value in versions.items():
        if type(value) is not str:
            raise _invalid(path, f"versions.{key}", "a version string", value)
    return dict(versions)


def _seeds(spec: Any, path: Path) -> list[int]:
    """The recorded seeds, each once and in [0, 2**64), counted before any range is expanded."""
    valid = 'a seed list such as "0-63,100" naming each seed once'
    if type(spec) is not str:
        raise _invalid(path, "seeds", valid, spec)
    if not spec:
        return []
    try:
        return parse_seeds(spec, where=str(path))
    except ValueError as err:
        raise ValueError(f"{_invalid(path, 'seeds', valid, spec)} ({err})") from None


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


@dataclass(frozen=True)
class Update:
    """A run's writes of pndm.json. ``start``, before its first image: the settings with the
    seeds recorded so far (None: the file holds them already). ``end``, after its last image:
    every seed (None: nothing new). A refused or interrupted run writes neither, so the file
    never records a seed that was not sampled."""

    start: Manifest | None
    end: Manifest | None


def update(folder: Path, wanted: Manifest, overwrite: bool) -> Update:
    """The writes of a run of ``wanted`` into ``folder``: its settings and image checked against
    the folder's, its seeds added to the recorded ones. Raises, naming every difference, where
    the settings or the image differ, and where the folder would hold more than `MAX_IMAGES`."""
    _check_model_image(wanted.image)
    recorded = read(folder)
    if recorded is None:
        _check_no_foreign_images(folder, overwrite)
        return Update(Manifest(wanted.settings, wanted.image, wanted.versions), _fits(wanted))
    diffs = differences(recorded.settings, wanted.settings)
    if _canonical(recorded.image) != _canonical(wanted.image):  # what pack decodes the PNGs as
        diffs.append(f"image {_show(wanted.image)} (pndm.json: {_show(recorded.image)})")
    if diffs:
        raise ValueError(
            f"{folder} holds images made with other settings: {'; '.join(diffs)}. Sample into "
            "another folder, or with the recorded settings"
        )
    _warn_versions(recorded.versions, wanted.versions)
    seen = set(recorded.seeds)
    extra = [seed for seed in wanted.seeds if seed not in seen]
    if not extra:
        return Update(None, None)
    check_image_count(len(recorded.seeds) + len(extra), f"the sample folder {folder}")
    seeds = recorded.seeds + extra
    return Update(
        None, _fits(Manifest(recorded.settings, recorded.image, recorded.versions, seeds))
    )


def _fits(manifest: Manifest) -> Manifest:
    """``manifest`` if pndm can read it back (`MAX_JSON_BYTES`): a list of scattered seeds can
    outgrow it, and a folder whose manifest cannot be read could not be resumed or packed."""
    size = len(json_text(manifest.to_json()).encode())
    if size > MAX_JSON_BYTES:
        raise ValueError(
            f"the seed list would make {NAME} {size / 2**20:.1f} MiB, above the "
            f"{MAX_JSON_BYTES // 2**20} MiB pndm reads; sample seed ranges (a-b) rather than "
            "scattered seeds, or into another folder"
        )
    return manifest


def _check_model_image(image: dict[str, Any]) -> None:
    """The model's images must be ones a folder can record (`check_image`)."""
    try:
        check_image(image, Path(NAME))
    except ValueError:
        raise ValueError(
            f"this model makes {image['width']}x{image['height']} {image['mode']} images; a sample "
            f"folder holds L or RGB images of at most {MAX_SIDE} pixels a side"
        ) from None


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
            VersionsWarning,
            stacklevel=2,
        )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _show(value: Any, limit: int = 80) -> str:
    if isinstance(value, str):
        return shown(value, limit)
    text = _canonical(value)
    return text if len(text) <= limit else text[:limit] + "..."
