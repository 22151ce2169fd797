"""Process accounting from procfs (``--path.procfs``): per-process CPU-time deltas, node CPU busy
time from ``/proc/stat``, and each process's parent, name, command line and cgroup (read once per
process lifetime, kept for attribution). A process that exits between two samples keeps what was
already attributed to it; its last partial interval is in the node's busy time and lands in the
``system`` series, so no joule is lost.

Cost. Most processes on a host (kernel threads, daemons, shells) belong to no endpoint: their
CPU energy is the ``system`` remainder of the node's busy time, which ``/proc/stat`` measures
whole, so their own CPU time is never needed. The sampler marks such a process *cold* once it is
identified (:meth:`ProcessTable.mark_cold`); a cold process's ``stat`` is then read only on full
scans (every ``full_scan_every`` scans: the daemon makes that every ``FULL_SCAN_S``), which
catch a pid that was reused by a new process within that time. In our own pid namespace a due
full scan is put off while the newest pid has moved forward by less than pid_max / 4 since the
last one (a pid is reused only after the counter wraps), at most ``MAX_FULL_SKIPS`` times. New pids, and every process that is not cold, are read every
scan. A cold process that shows up on a GPU is marked hot again by the sampler.

Listing ``/proc`` (~0.1 ms hot, ~0.6 ms cold for 500 processes: the kernel walks every task) is
skipped between full scans when no process was created since the last scan: the last field of
``/proc/loadavg`` is the most recently allocated pid of the reader's pid namespace, so while it
stays the same the set of pids can only shrink, and the known pids are read directly (one that
is gone has exited). When it moved by a few pids, each of them is looked up: if every one is a
thread of a known process (``Tgid`` in its ``status``; a timer thread a second is common, e.g.
CodeCarbon's) or already gone, no process was created either. This holds only when
``--path.procfs`` shows our own pid namespace (``<procfs>/self`` is this process: host /proc with
hostPID, or the plain /proc); elsewhere, fixture trees included, every scan lists the directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
FULL_SCAN_S = 30.0  # cold processes are re-read (pid reuse caught) at least this often
MAX_FULL_SKIPS = 9  # a full scan is put off at most this many times in a row (10 × FULL_SCAN_S at most)
RACE_GRACE_SCANS = 3  # a pid whose stat read fails is kept this many scans before it counts as gone
MAX_PROBED_PIDS = 8  # pids allocated since the last scan that are looked at one by one before listing /proc


@dataclass
class ProcInfo:
    pid: int
    ppid: int
    comm: str
    starttime: int
    cmdline: tuple[str, ...]
    cgroup: str
    ticks: int = 0
    # the variables an inference server reads its settings from (only those: an environment
    # holds tokens and keys), for processes whose command line names a server; None: not read,
    # or unreadable (another user's process without CAP_SYS_PTRACE)
    environ: Mapping[str, str] | None = None


@dataclass
class CpuTimes:
    busy_s: float
    total_s: float


def parse_stat_line(text: str) -> tuple[str, int, int, int]:
    """``/proc/<pid>/stat`` → (comm, ppid, utime+stime ticks, starttime). comm may hold spaces
    and parentheses, so split at the last ')'."""
    lp, rp = text.index("("), text.rindex(")")
    comm = text[lp + 1: rp]
    f = text[rp + 2:].split()
    # fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
    return comm, int(f[1]), int(f[11]) + int(f[12]), int(f[19])


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line of ``/proc/stat`` → busy and total seconds since boot."""
    # the aggregate line comes first in the kernel's file: no need to split the rest (on a big
    # host, thousands of interrupt counts)
    lines = (text.partition("\n")[0],) if text.startswith("cpu ") else text.splitlines()
    for line in lines:
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            if len(v) < 4:
                raise ValueError(f"/proc/stat: the cpu line has {len(v)} fields, expected at least 4")
            # user nice system idle iowait irq softirq steal guest guest_nice (proc(5)). Steal is
            # time the hypervisor ran someone else while this guest wanted the CPU: not this
            # guest's work and not its time, so it is in neither busy nor total. Guest time is
            # already inside user/nice (counted once).
            total = sum(v[:7])
            idle = v[3] + (v[4] if len(v) > 4 else 0)
            return CpuTimes((total - idle) / CLK_TCK, total / CLK_TCK)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


ENVIRON_MAX_BYTES = 256 * 1024  # a bigger environment is read this far (a counted degradation)


def parse_environ(raw: bytes, keys: Collection[str]) -> dict[str, str]:
    """``/proc/<pid>/environ`` (NUL-separated ``KEY=VALUE``, the block the process started with)
    → the wanted keys only. Of a duplicated key the first is kept, as glibc's getenv() returns
    it (llama.cpp, TGI, Triton); Python's os.environ would keep the last (a block with duplicates
    is not made by a shell or a container runtime)."""
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq:
            k = key.decode("utf-8", "replace")
            if k in keys and k not in out:
                out[k] = value.decode("utf-8", "replace")
    return out


def _read(path: str, size: int = 65536) -> str:
    """One small procfs file, with raw os calls: about half the cost of open()/read() objects,
    which matters at hundreds of processes per sample."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < size and not path.endswith("cmdline"):
                break  # stat/cgroup fit in one read; cmdline may be long
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


class _KeptOpen:
    """A procfs file read again and again through one descriptor (``pread`` at offset 0 makes
    the kernel generate it anew), which saves the path walk, open and close of each read: about
    half the cost of a cold read of ``/proc/stat``. Only for a real proc mount: a fixture tree's
    file may be replaced by another, which a kept descriptor would not see. Opened again once
    if a read fails (the error of the second try is the caller's)."""

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self.fd: int | None = None

    def read(self) -> str:
        for last in (False, True):
            fd = self.fd
            try:
                if fd is None:
                    fd = self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                return os.pread(fd, self.size, 0).decode("utf-8", "replace")
            except OSError:
                self.close()
                if last:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    __del__ = close


class ProcessTable:
    """Scans procfs each sample; cmdline and cgroup are read once per (pid, starttime)."""

    def __init__(self, procfs: str, full_scan_every: int = 10,
                 environ_keys: tuple[Callable[[Sequence[str]], bool], Collection[str]] | None = None) -> None:
        """``environ_keys``: (which command lines need their environment, the keys to keep);
        None reads no environment."""
        self.procfs = procfs
        self.environ_keys = environ_keys
        self.environ_unreadable = 0  # environments wanted but not readable (EACCES), for ever
        self.procs: dict[int, ProcInfo] = {}
        self.races = 0            # processes that vanished while being read
        self.full_scan_every = max(1, full_scan_every)
        self.new: list[int] = []  # pids first seen by the last scan
        self.reads = 0            # stat files read by the last scan
        self._cold: set[int] = set()
        self._cold_shared = False  # a checkpoint holds self._cold: copy it before changing it
        self._scans = 0
        self._scanned = False
        self._misses: dict[int, int] = {}   # pid -> consecutive scans whose stat read failed
        self._last_cpu: CpuTimes | None = None
        self._last_pid = b""
        self._own_namespace = _shows_own_namespace(procfs)
        self._pid_at_full: int | None = None  # the newest pid at the last full scan
        self._full_skips = 0
        self._pid_max = _pid_max(procfs)
        # on a real proc mount, /proc/stat (its first line, the aggregate cpu line, is all that is
        # parsed) and /proc/loadavg are read through kept descriptors
        self._stat = _KeptOpen(os.path.join(procfs, "stat"), 4096) if self._own_namespace else None
        self._loadavg = _KeptOpen(os.path.join(procfs, "loadavg"), 256) if self._own_namespace else None

    def mark_cold(self, pid: int) -> None:
        """``pid``'s own CPU time cannot matter (it is the ``system`` remainder): read it on full
        scans only, and report no CPU-time delta for it."""
        if pid not in self._cold:
            self._own_cold().add(pid)

    def mark_hot(self, pid: int) -> None:
        if pid in self._cold:
            self._own_cold().discard(pid)

    def _own_cold(self) -> set[int]:
        """The cold set, copied first if a checkpoint shares it (copy on write: a sample in
        which no process changes state copies nothing)."""
        if self._cold_shared:
            self._cold, self._cold_shared = set(self._cold), False
        return self._cold

    def is_cold(self, pid: int) -> bool:
        return pid in self._cold

    def checkpoint(self) -> tuple:
        """The table's baselines, so that a failed sample can be undone whole. Cheap: a scan
        never changes a ProcInfo it has handed out (a changed process gets a new one), so the
        old table is its own snapshot."""
        self._cold_shared = True
        return self.procs, self._last_cpu, self._scanned, self._scans, self._cold, self._last_pid

    def restore(self, cp: tuple) -> None:
        # the newest pid too: the pids allocated in the failed sample's interval are looked at again
        self.procs, self._last_cpu, self._scanned, self._scans, self._cold, self._last_pid = cp
        self._cold_shared = True  # the checkpoint may be restored again

    def cpu_times(self) -> CpuTimes:
        if self._stat is not None:
            return parse_proc_stat(self._stat.read())
        return parse_proc_stat(_read(os.path.join(self.procfs, "stat")))

    def node_delta(self) -> tuple[float, float]:
        """(busy seconds, total CPU seconds) since the previous call; (0, 0) the first time."""
        cur = self.cpu_times()
        prev, self._last_cpu = self._last_cpu, cur
        if prev is None:
            return 0.0, 0.0
        return max(0.0, cur.busy_s - prev.busy_s), max(0.0, cur.total_s - prev.total_s)

    def scan(self) -> dict[int, float]:
        """Refresh the table; return CPU seconds per pid since the previous scan (new pids: 0)."""
        deltas: dict[int, float] = {}
        seen: dict[int, ProcInfo] = {}
        new: list[int] = []
        full = self._scans % self.full_scan_every == 0
        self._scans += 1
        cold, known = self._cold, self.procs
        reads = 0
        names: list[str] | None = None
        if self._own_namespace:
            last_pid = self._newest_pid()
            full = self._full_needed(full, last_pid)
            if not full and last_pid and (last_pid == self._last_pid or self._only_threads(self._last_pid, last_pid)):
                # no process was created (no pid allocated, or only to threads of known
                # processes): only exits can have happened. Cold entries carry over as they are
                # (an exit among them is seen at the next full scan); hot ones are read.
                seen = dict(known)  # hot entries are replaced (or dropped) below
                names = [str(pid) for pid in known.keys() - cold]
            self._last_pid = last_pid
        if names is None:
            names = os.listdir(self.procfs)
            if not full:
                # between full scans only new and hot processes are read: find them with set
                # operations (C loops) rather than a Python loop over every pid (CodeCarbon's
                # timer thread alone allocates a pid a second, so this is the usual path)
                listed = set(map(int, filter(str.isdigit, names)))
                gone = known.keys() - listed
                seen = dict(known)  # cold entries carry over; hot ones are replaced (or dropped) below
                for pid in gone:
                    del seen[pid]
                names = [str(pid) for pid in listed - (cold & known.keys())]
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            if not full and pid in cold and pid in known:
                seen[pid] = known[pid]  # its CPU time is in the node's busy share; nothing to read
                continue
            reads += 1
            try:
                comm, ppid, ticks, start = parse_stat_line(_read(f"{self.procfs}/{name}/stat"))
            except (OSError, ValueError, IndexError):
                if not os.path.exists(f"{self.procfs}/{name}"):
                    seen.pop(pid, None)
                    continue  # exited (a pid read from the table, not from the listing)
                self.races += 1
                old = self.procs.get(pid)
                if old is not None and self._misses.get(pid, 0) < RACE_GRACE_SCANS:
                    # keep it for a few scans: when it reads again, only the gap is its delta
                    self._misses[pid] = self._misses.get(pid, 0) + 1
                    seen[pid] = old
                else:
                    seen.pop(pid, None)
                continue
            self._misses.pop(pid, None)
            old = self.procs.get(pid)
            if old is not None and old.starttime == start:
                info = old
                if pid not in cold:
                    deltas[pid] = max(0, ticks - old.ticks) / CLK_TCK
                if (ticks, comm, ppid) != (old.ticks, old.comm, old.ppid):
                    # renamed workers (VLLM::EngineCore) change comm; never mutate a handed-out entry
                    info = ProcInfo(pid, ppid, comm, start, old.cmdline, old.cgroup, ticks, old.environ)
                    if comm != old.comm:  # an exec (sh -c "exec vllm serve …") keeps pid and start time
                        argv = self._cmdline(name)
                        if argv != old.cmdline:
                            info = ProcInfo(pid, ppid, comm, start, argv, old.cgroup, ticks,
                                            self._environ(name, argv))
                            new.append(pid)  # identify it again
            else:
                if pid in cold:  # the pid reused: identify it again
                    self._own_cold().discard(pid)
                argv = self._cmdline(name)
                info = ProcInfo(pid, ppid, comm, start, argv, self._cgroup(name), ticks,
                                self._environ(name, argv))
                # new since the last scan: all its CPU time falls in this interval
                deltas[pid] = ticks / CLK_TCK if self._scanned else 0.0
                new.append(pid)
            seen[pid] = info
        self.procs, self.new, self.reads = seen, new, reads
        if len(self._misses) > len(seen):
            self._misses = {pid: n for pid, n in self._misses.items() if pid in seen}
        if len(self._cold) > len(seen):
            self._cold, self._cold_shared = {pid for pid in self._cold if pid in seen}, False
        self._scanned = True
        return deltas

    def _full_needed(self, due: bool, last_pid: bytes) -> bool:
        """A full scan re-reads cold processes to catch a pid reused by a new process. Linux
        hands out pids in increasing order and reuses one only after the counter wraps at
        pid_max: while the newest pid has moved forward by less than a quarter of pid_max since
        the last full scan, no pid can have been reused, and a due full scan is put off (for at
        most MAX_FULL_SKIPS periods). Costs of a scan of 270 processes: ~4 ms, against ~1 ms."""
        try:
            newest = int(last_pid)
        except ValueError:
            return due
        if due and self._pid_at_full is not None and self._full_skips < MAX_FULL_SKIPS \
                and 0 <= newest - self._pid_at_full < self._pid_max // 4:
            self._full_skips += 1
            return False
        if due:
            self._full_skips, self._pid_at_full = 0, newest
        return due

    def _only_threads(self, before: bytes, now: bytes) -> bool:
        """Whether every pid allocated since the last scan (``before`` < pid ≤ ``now``, at most
        MAX_PROBED_PIDS of them) is a thread of a known process, or already gone: then no
        process was created and /proc need not be listed (~0.6 ms on a host of 500 processes,
        against one ``status`` read). A thread is not listed in /proc but can be looked up there;
        its ``Tgid`` is its process. Pids come in increasing order until the counter wraps,
        which this range test rejects. Anything unexpected (a new process, an unreadable
        ``status``): False, and the caller lists."""
        try:
            lo, hi = int(before), int(now)
        except ValueError:
            return False
        if not 0 < hi - lo <= MAX_PROBED_PIDS:
            return False
        for pid in range(lo + 1, hi + 1):
            try:
                text = _read(f"{self.procfs}/{pid}/status")
            except FileNotFoundError:
                if os.path.exists(f"{self.procfs}/{pid}"):
                    return False  # a process without a status file: not a proc mount we understand
                continue  # it came and went between two scans
            except OSError:
                return False
            at = text.find("\nTgid:")
            if at < 0:
                return False
            try:
                tgid = int(text[at + 6:text.find("\n", at + 6)])
            except ValueError:
                return False
            if tgid == pid or tgid not in self.procs:
                return False  # a new process (or a thread of one we do not know)
        return True

    def _newest_pid(self) -> bytes:
        try:
            text = self._loadavg.read() if self._loadavg is not None else _read(os.path.join(self.procfs, "loadavg"))
            return text.rsplit(maxsplit=1)[-1].encode()
        except (OSError, IndexError):
            return b""

    def _cmdline(self, name: str) -> tuple[str, ...]:
        try:
            raw = _read(f"{self.procfs}/{name}/cmdline")
        except OSError:
            return ()
        return tuple(a for a in raw.split("\0") if a) if "\0" in raw else tuple(raw.split())

    def _environ(self, name: str, argv: tuple[str, ...]) -> Mapping[str, str] | None:
        if self.environ_keys is None or not argv:
            return None
        wants, keys = self.environ_keys
        if not wants(argv):
            return None
        try:
            fd = os.open(f"{self.procfs}/{name}/environ", os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            self.environ_unreadable += 1
            return None
        except OSError:
            return None
        try:
            raw, size = [], 0
            while size < ENVIRON_MAX_BYTES and (chunk := os.read(fd, 65536)):
                raw.append(chunk)
                size += len(chunk)
        except PermissionError:  # EACCES at read time on some kernels (the ptrace check)
            self.environ_unreadable += 1
            return None
        except OSError:  # the process exited meanwhile: a race, not a degradation
            return None
        finally:
            os.close(fd)
        return parse_environ(b"".join(raw), keys)

    def read_process_file(self, pid: int, path: str, max_bytes: int = 64 * 1024) -> str | None:
        """A file a process names on its command line (a server's config file), as that process
        sees it, or None. An absolute path is resolved inside the process's root
        (``/proc/<pid>/root``, its container's files: a symlink in it cannot lead out), a relative
        one beneath its working directory (``/proc/<pid>/cwd``), with ``openat2(2)``'s
        RESOLVE_IN_ROOT / RESOLVE_BENEATH and no magic links, where the kernel has it (5.6+;
        older ones: the last component must not be a symlink). Only a regular file, opened without
        blocking on a FIFO, and at most ``min(st_size, max_bytes)`` bytes: a procfs file reports
        size 0, so ``/proc/kmsg`` and the like are never read (a read of them would consume them)."""
        import stat

        absolute = path.startswith("/")
        base = f"{self.procfs}/{pid}/" + ("root" if absolute else "cwd")
        fd = _open_confined(base, path.lstrip("/") if absolute else path, absolute)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            return os.read(fd, max(0, min(st.st_size, max_bytes))).decode("utf-8", "replace")
        except OSError:
            return None
        finally:
            os.close(fd)

    def _cgroup(self, name: str) -> str:
        try:
            return _read(f"{self.procfs}/{name}/cgroup")
        except OSError:
            return ""


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_RESOLVE_NO_MAGICLINKS, _RESOLVE_BENEATH, _RESOLVE_IN_ROOT = 0x02, 0x08, 0x10
_SYS_OPENAT2 = 437  # the same number on every Linux architecture (a syscall added after 5.1)
_openat2_missing = False


def _open_confined(base: str, rel: str, in_root: bool) -> int | None:
    """``rel`` under the directory ``base`` without leaving it (see read_process_file)."""
    global _openat2_missing
    if "\0" in rel or not rel:
        return None
    try:
        dirfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _openat2_missing:
            import ctypes

            class OpenHow(ctypes.Structure):
                _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

            libc = ctypes.CDLL(None, use_errno=True)
            how = OpenHow(_OPEN_FLAGS, 0, _RESOLVE_NO_MAGICLINKS | (_RESOLVE_IN_ROOT if in_root else _RESOLVE_BENEATH))
            fd = libc.syscall(_SYS_OPENAT2, dirfd, rel.encode(), ctypes.byref(how), ctypes.sizeof(how))
            if fd >= 0:
                return fd
            if ctypes.get_errno() != 38:  # not ENOSYS: refused (EPERM from a file system is a refusal)
                return None
            _openat2_missing = True  # an old kernel, or a seccomp filter answering ENOSYS
        try:  # no openat2: the last component at least must not be a symlink
            return os.open(rel, _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=dirfd)
        except OSError:
            return None
    finally:
        os.close(dirfd)


def _pid_max(procfs: str) -> int:
    try:
        return max(300, int(_read(os.path.join(procfs, "sys", "kernel", "pid_max")).strip()))
    except (OSError, ValueError):
        return 32768  # the kernel's default


def _shows_own_namespace(procfs: str) -> bool:
    """Whether ``procfs`` is a proc mount of this process's own pid namespace."""
    try:
        return os.readlink(os.path.join(procfs, "self")) == str(os.getpid())
    except OSError:
        return False
