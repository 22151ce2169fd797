"""File provider: an operator-supplied value, e.g. a mounted ConfigMap, in YAML or JSON.

    grams_per_kwh: 123          # required
    zone: DE                    # optional (default: the provider's zone)
    signal: average             # optional: average | marginal
    observed_at: 2025-06-01T12:00:00Z   # optional; without it the value is current at every read

The file is parsed again only when its mtime, size or inode changes (a ConfigMap update swaps a
symlink). Values are checked like any provider's; staleness only when ``observed_at`` is given
and ``stale_after_s`` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .base import SIGNALS, Provider, ProviderError, Reading, dig, number, parse_time


@dataclass(kw_only=True, eq=False)
class FileProvider(Provider):
    key = "file"
    source = "operator-supplied file"

    path: str
    zone: str = "local"
    stale_after_s: float | None = None
    _cache: tuple[tuple[int, int, int], Any] | None = field(default=None, init=False, repr=False)

    def _load(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, yaml.safe_load(Path(self.path).read_text()))  # JSON ⊂ YAML
        except OSError as exc:
            raise ProviderError("io", f"cannot read {self.path}: {exc.strerror}") from None
        except (yaml.YAMLError, UnicodeDecodeError):
            raise ProviderError("malformed", f"{self.path} is not YAML/JSON") from None
        doc = self._cache[1]
        if not isinstance(doc, dict):
            raise ProviderError("malformed", f"{self.path} is not a mapping")
        return doc

    async def fetch(self, session: aiohttp.ClientSession | None = None) -> list[Reading]:
        doc = self._load()
        signal = doc.get("signal", "average")
        if signal not in SIGNALS:
            raise ProviderError("malformed", f"signal must be one of {SIGNALS}")
        observed = doc.get("observed_at")
        observed = self.clock() if observed is None else parse_time(observed)
        value = number(dig(doc, "grams_per_kwh"), "grams_per_kwh")
        return [self.reading(str(doc.get("zone", self.zone)), signal, value, observed)]
