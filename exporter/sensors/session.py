"""The life of a GPU library session, the same for every vendor's backend (NVML, amdsmi).

A library that failed to open (no driver yet: a GPU operator installs it after the DaemonSet
starts) is tried again with a backoff; a session in which every GPU fails REOPEN_AFTER_READS
reads in a row (a driver reload: stale handles, DRIVER_NOT_LOADED, UNINITIALIZED) is shut down
and opened again, GPUs matched by UUID downstream. An exception a backend did not expect fails
that one GPU's reading (``unexpected_<exception>``), never the sample of every GPU. A backend
subclasses :class:`LibrarySession` and supplies ``open``, ``_open_again``, ``_shutdown``, ``_new_session``, ``_read_one``,
``_retry_discovery`` (both discover each GPU through ``_discover_into``) and ``_error`` (the kind
and advice of its library's errors).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from .base import GpuDevice, GpuReading, GpuStatus, MeterError

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

REOPEN_MIN_S, REOPEN_MAX_S = 10.0, 300.0  # retrying after a failed open or a lost session: backoff
REOPEN_AFTER_READS = 2                     # every GPU failing this many reads in a row: re-initialise


class LibrarySession:
    library = "GPU library"     # its name in the logs

    def __init__(self, backend: str, clock: Callable[[], float]) -> None:
        self.backend = backend
        self.clock = clock
        self.reinits = 0                          # successful re-initialisations after the first open
        self._failed_reads = 0
        self._retry_at = 0.0
        self._backoff = REOPEN_MIN_S
        self.devices: list[GpuDevice] = []
        self.status = GpuStatus("error", "not opened", backend=backend)
        self.undiscovered: dict[int, str] = {}   # GPU index -> error kind of its last discovery try
        self._unexpected_logged: set[str] = set()

    # --- what a backend supplies -----------------------------------------------------------
    def open(self) -> GpuStatus:
        raise NotImplementedError

    def _open_again(self) -> GpuStatus:
        """``open()``, its failures as a status (never raised)."""
        return self.open()

    def _shutdown(self) -> None:
        raise NotImplementedError

    def _new_session(self) -> None:
        """Forget per-session state (utilisation baselines) after a successful reopen."""

    def _read_one(self, d: GpuDevice) -> GpuReading:
        raise NotImplementedError

    def _retry_discovery(self) -> None:
        raise NotImplementedError

    # --- the shared life -------------------------------------------------------------------
    def _failed_open(self, status: GpuStatus) -> GpuStatus:
        """Record a failed open; read() tries again after the backoff."""
        self.status = status
        self._retry_at = self.clock() + self._backoff
        return status

    def read(self) -> list[GpuReading]:
        """One reading per GPU (see the module docstring for the retries)."""
        if self.status.state != "ok":
            if not self._reopen():
                return []
        if self.undiscovered:
            self._retry_discovery()
        readings = [self._read_guarded(d) for d in self.devices]
        if readings and all(r.error for r in readings) and not all(_unexpected(r) for r in readings):
            self._failed_reads += 1
            if self._failed_reads >= REOPEN_AFTER_READS and self._reopen():
                readings = [self._read_guarded(d) for d in self.devices]
        else:
            self._failed_reads, self._backoff = 0, REOPEN_MIN_S
        return readings

    def _error(self, e: Exception) -> tuple[str, str]:
        """(kind, what a person should do) of a library error; see ``_discover_into``."""
        return unexpected_kind(e), str(e)

    def _discover_into(self, i: int, discover: Callable[[], GpuDevice], first: bool) -> None:
        """Discover GPU ``i`` into ``devices``; on any failure (the library's error, or an answer
        of a shape nobody wrote for) it stays in ``undiscovered`` with its kind, retried each
        sample, and the others go on. Logged at the first try."""
        try:
            d = discover()
        except Exception as e:  # noqa: BLE001 - one GPU's discovery must not cost the others
            kind, why = self._error(e)
            self.undiscovered[i] = kind
            if first:
                log.warning("%s: GPU %d not discovered yet (retried every sample): %s", self.library, i, why)
            return
        if self.undiscovered.pop(i, None) is not None:
            log.info("%s: GPU %d discovered", self.library, i)
        self.devices.append(d)
        self.devices.sort(key=lambda g: g.index)

    def _read_guarded(self, d: GpuDevice) -> GpuReading:
        """``_read_one``, an exception it did not expect (a library's answer of a shape nobody
        wrote for: TypeError, AttributeError, …) failing that GPU's reading alone, as
        ``unexpected_<exception>`` (logged once per kind), never the sample of every GPU.
        Not a lost session: such readings alone do not re-initialise the library."""
        try:
            return self._read_one(d)
        except Exception as e:  # noqa: BLE001 - one GPU's odd answer must not cost the others
            kind = unexpected_kind(e)
            if kind not in self._unexpected_logged:
                self._unexpected_logged.add(kind)
                log.exception("%s: GPU %d: unexpected answer (%s); its reading fails, the others go on",
                              self.library, d.index, kind)
            r = GpuReading(d)
            r.error = kind
            return r

    def _reopen(self) -> bool:
        """Shut the library down and open it again (at most once per backoff); True when open."""
        now = self.clock()
        if now < self._retry_at:
            return False
        before = (self.status, self.devices, self.undiscovered)
        if before[0].state == "ok":
            log.warning("%s: every GPU has failed %d reads in a row: re-initialising", self.library,
                        self._failed_reads)
            self._shutdown()
        self.undiscovered = {}
        status = self._open_again()
        if status.state != "ok":
            self._retry_at, self._backoff = now + self._backoff, min(REOPEN_MAX_S, 2 * self._backoff)
            log.debug("%s still unavailable (%s); next try in %.0f s", self.library, status.detail,
                      self._retry_at - now)
            if before[0].state == "ok":  # keep the GPUs: each read goes on failing, counted, until it works
                self.status, self.devices, self.undiscovered = before
            return False
        self._new_session()
        self.reinits += 1
        self._failed_reads, self._backoff, self._retry_at = 0, REOPEN_MIN_S, 0.0
        log.warning("%s opened again: %s (where the driver reloaded, its energy counters restarted: "
                    "the gap is bridged, see wattprint_gpu_energy_resets_total)", self.library, status.detail)
        return True


def unexpected_kind(e: Exception) -> str:
    """The error kind of an exception a backend did not expect (``unexpected_typeerror``)."""
    return "unexpected_" + type(e).__name__.lower()


def _unexpected(r: GpuReading) -> bool:
    return bool(r.error and r.error.startswith("unexpected_"))


# --- registry entries ----------------------------------------------------------------------------

def opened(meter: Any, cfg: "Config", name: str) -> Any:
    """Open ``meter``; a backend asked for by name must work (MeterError), auto may fail."""
    status = meter.open()
    if cfg.gpu.backend == name and status.state != "ok":
        raise MeterError(f"gpu.backend={name}: {meter.library} unavailable: {status.detail}")
    return meter


def usable(meter: Any) -> bool:
    return bool(meter.status.state == "ok")
