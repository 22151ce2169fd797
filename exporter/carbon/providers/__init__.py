"""Live grid-intensity providers, one module each, registered in PROVIDERS by key.

Adding a provider: a new module with a ``Provider`` subclass (``key``, ``source``, ``fetch``)
and one entry in the table below.
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
from .electricitymaps import ElectricityMaps
from .file import FileProvider
from .ukgrid import UKCarbonIntensity
from .wattprint import WattprintService
from .watttime import WattTime

PROVIDERS: dict[str, type[Provider]] = {
    cls.key: cls for cls in (ElectricityMaps, WattTime, UKCarbonIntensity, FileProvider, WattprintService)
}


def option_problem(key: str, option: str) -> str | None:
    """Why ``option`` is not a configuration option of provider ``key`` (None when it is)."""
    fields = {f.name: f for f in dataclasses.fields(PROVIDERS[key]) if f.init}
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
        cls = PROVIDERS[key]
    except KeyError:
        raise ValueError(f"unknown intensity provider {key!r}; known: {sorted(PROVIDERS)}") from None
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
