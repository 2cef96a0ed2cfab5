"""Diffusers-style configs and outputs: a frozen mapping, a mixin for from_config /
from_pretrained / save, and the output base class read by attribute, key or index.

The config of a class is the set of its constructor's keyword arguments. Keys that only this package
knows (``_extra_config_keys``) appear in ``config`` and on disk only when they differ from their
defaults, so a default config is byte-for-byte what diffusers writes.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pndm.files import PathLike
from pndm.files.jsonfile import read_json, write_json
from pndm.files.layout import CONFIG_NAME, component_dir

# The diffusers release whose file format (keys, defaults, layout) this package writes.
DIFFUSERS_VERSION = "0.42.1"

C = TypeVar("C", bound="ConfigMixin")


def _read_only(self: Any, *args: Any, **kwargs: Any) -> Any:
    raise TypeError("config is read-only; build a new object with from_config(config, key=value)")


class FrozenConfig(dict):
    """A read-only ``dict`` that also allows attribute access, like diffusers' ``FrozenDict``.

    Being a real ``dict`` lets diffusers take it where it wants a config (``from_config``,
    ``PNDMPipeline``'s scheduler conversion); every mutating method raises ``TypeError``.
    """

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __init__(self, data: Mapping[str, Any] | None = None, **values: Any) -> None:
        super().__init__({**(data or {}), **values})  # dict's own init: not our __setitem__

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy/pickle probe dunders: never config keys
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("config is read-only; build a new object with from_config(...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("config is read-only")

    def __reduce__(self) -> tuple[Any, ...]:  # copy, deepcopy, pickle: rebuild, never setitem
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenConfig({dict.__repr__(self)})"


def _init_defaults(cls: type) -> dict[str, Any]:
    """Constructor keyword arguments and their defaults, in signature order."""
    params = inspect.signature(cls.__init__).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.name != "self" and p.kind in kinds}


class ConfigMixin:
    """``config``, ``from_config``, ``from_pretrained``, ``save_pretrained`` from __init__'s args.

    A subclass sets ``config_name`` (the JSON file name) and calls ``self._register_config(...)``
    with its normalised constructor arguments.
    """

    config_name: ClassVar[str] = CONFIG_NAME
    _extra_config_keys: ClassVar[frozenset[str]] = frozenset()
    _config: FrozenConfig

    def _register_config(self, **values: Any) -> None:
        defaults = _init_defaults(type(self))
        values = {
            k: v
            for k, v in values.items()
            if k not in self._extra_config_keys or v != defaults.get(k)
        }
        self._config = FrozenConfig(values)

    @property
    def config(self) -> FrozenConfig:
        """The constructor arguments, read-only (``config.key`` and ``config["key"]`` both work)."""
        return self._config

    @classmethod
    def from_config(cls: type[C], config: Mapping[str, Any] | Any = None, **overrides: Any) -> C:
        """Build from a config mapping (or an object with ``.config``); ``overrides`` win.

        Private keys (``_class_name``, ...) are dropped; keys this class does not take (e.g. a
        DDPMScheduler's ``variance_type``) are ignored with one warning naming them.
        """
        if config is not None and not isinstance(config, Mapping):
            config = getattr(config, "config", config)
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"from_config needs a mapping, got {type(config).__name__}")
        kwargs, ignored = _split_config(cls, {**(config or {}), **overrides})
        if ignored:
            warnings.warn(
                f"config keys {sorted(ignored)} are not used by {cls.__name__} and are ignored",
                UserWarning,
                stacklevel=2,
            )
        return cls(**kwargs)

    @classmethod
    def from_pretrained(
        cls: type[C], folder: PathLike, subfolder: str | None = None, **overrides: Any
    ) -> C:
        """Load ``config_name`` from ``folder/subfolder``, else from ``folder`` (flat layout)."""
        path = component_dir(folder, subfolder, cls.config_name) / cls.config_name
        return cls.from_config(read_json(path), **overrides)

    def save_pretrained(self, save_directory: PathLike, **kwargs: Any) -> None:
        """Write ``config_name`` as diffusers does (``_class_name``, sorted keys, indent 2)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        data = {"_class_name": type(self).__name__, "_diffusers_version": DIFFUSERS_VERSION}
        write_json(folder / self.config_name, {**data, **self.config})


def _split_config(cls: type, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(constructor kwargs, ignored public keys); keys in ``_use_default_values`` take defaults."""
    accepted = _init_defaults(cls)
    use_default = set(config.get("_use_default_values") or ())
    public = {k: v for k, v in config.items() if not k.startswith("_") and k not in use_default}
    kwargs = {k: v for k, v in public.items() if k in accepted}
    return kwargs, [k for k in public if k not in accepted]


class BaseOutput(Mapping[str, Any]):
    """Base for output dataclasses: ``out.prev_sample``, ``out["prev_sample"]`` and ``out[0]``.

    As in diffusers, fields that are None are left out of the keys and the tuple form.
    """

    def _present(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {k: v for k, v in values.items() if v is not None}

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return self._present()[key]
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def to_tuple(self) -> tuple[Any, ...]:
        """The present values in field order (what ``return_dict=False`` returns)."""
        return tuple(self._present().values())
