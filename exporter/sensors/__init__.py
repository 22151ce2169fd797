"""The meters: one module per meter, each registered by name in :mod:`.registry`; the protocols
they implement are in :mod:`.base`."""

from __future__ import annotations

from .base import MeterError
from .registry import open_cpu, open_gpu, probe_all

__all__ = ["MeterError", "open_cpu", "open_gpu", "probe_all"]
