"""Live grid-intensity providers, one module each, registered in PROVIDERS by key.

Adding a provider: a new module with a ``Provider`` subclass (``key``, ``source``, ``fetch``)
and one entry in the table below. The adapters are imported on first use of ``PROVIDERS`` (or
of a class by name): a daemon with no live provider configured loads none of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import (
    ERROR_KINDS,
    LBS_PER_MWH_TO_G_PER_KWH,
    MAX_PLAUSIBLE_G_PER_KWH,
    SIGNALS,
    Provider,
    ProviderError,
    Reading,
    Secret,
)
# class name -> its module, in the order PROVIDERS lists them
_ADAPTERS = {"ElectricityMaps": "electricitymaps", "WattTime": "watttime", "UKCarbonIntensity": "ukgrid",
             "FileProvider": "file", "WattprintService": "wattprint"}


def _providers() -> dict[str, type[Provider]]:
    import importlib

    table = globals().get("PROVIDERS")
    if table is None:
        table = {cls.key: cls for cls in (getattr(importlib.import_module(f"{__name__}.{mod}"), cls_name)
                                          for cls_name, mod in _ADAPTERS.items())}
        globals()["PROVIDERS"] = table
    return table


def __getattr__(name: str) -> Any:
    """PROVIDERS (key -> class) and the adapter classes, imported on first use."""
    import importlib

    if name == "PROVIDERS":
        return _providers()
    if name in _ADAPTERS:
        return getattr(importlib.import_module(f"{__name__}.{_ADAPTERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def option_problem(key: str, option: str) -> str | None:
    """Why ``option`` is not a configuration option of provider ``key`` (None when it is)."""
    fields = {f.name: f for f in dataclasses.fields(_providers()[key]) if f.init}
    secrets = [n for n, f in fields.items() if f.type in ("Secret", Secret)]
    if option in secrets:
        return f"secrets are never inline: use {option}_file or {option}_env"
    if any(option in (f"{s}_file", f"{s}_env") for s in secrets):
        return None
    if option not in fields or option == "clock":
        allowed = sorted([n for n in fields if n not in ("clock", *secrets)] +
                         [f"{s}_{w}" for s in secrets for w in ("file", "env")])
        return f"unknown option; allowed: {', '.join(allowed)}"
    return None


def build(key: str, **options: Any) -> Provider:
    """A provider from config options. A Secret field ``x`` is given as ``x_file=path`` or
    ``x_env=NAME``, e.g. ``build("electricitymaps", zone="DE", token_env="EM_TOKEN")``."""
    try:
        cls = _providers()[key]
    except KeyError:
        raise ValueError(f"unknown intensity provider {key!r}; known: {sorted(_providers())}") from None
    for f in dataclasses.fields(cls):
        if f.type in ("Secret", Secret):
            where = {k: options.pop(f"{f.name}_{k}") for k in ("file", "env") if f"{f.name}_{k}" in options}
            if f.name not in options:
                options[f.name] = Secret(**where)
    return cls(**options)


__all__ = [
    "ERROR_KINDS",
    "LBS_PER_MWH_TO_G_PER_KWH",
    "MAX_PLAUSIBLE_G_PER_KWH",
    "PROVIDERS",
    "SIGNALS",
    "ElectricityMaps",
    "FileProvider",
    "Provider",
    "ProviderError",
    "Reading",
    "Secret",
    "UKCarbonIntensity",
    "WattTime",
    "WattprintService",
    "build",
]
