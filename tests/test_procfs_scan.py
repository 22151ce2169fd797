"""What a procfs scan reads, and what it may skip without losing CPU time (exporter.sensors.procfs):
processes marked cold (the ``system`` remainder) are read only on full scans; listing /proc is
skipped while ``/proc/loadavg`` says no pid was allocated — only where procfs is our own pid
namespace, which a fixture tree can claim with a ``self`` link to our pid."""

from __future__ import annotations

import os
import shutil

import pytest

from exporter.identity.resolver import Resolver
from exporter.sensors.procfs import CLK_TCK, ProcessTable
from support import make_procfs

VLLM = ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m", "--port", "8001"]


def tree(tmp_path, procs, last_pid=None):
    root = make_procfs(tmp_path / "proc", procs, 1000, 1000)
    if last_pid is not None:
        (root / "loadavg").write_text(f"0.00 0.01 0.05 1/{len(procs)} {last_pid}\n")
        if not (root / "self").is_symlink():
            (root / "self").symlink_to(str(os.getpid()))
    return root


def test_cold_processes_are_read_only_on_full_scans(tmp_path):
    procs = {10: {"comm": "python3", "cmdline": VLLM, "ticks": 0}, 20: {"comm": "sshd", "cmdline": ["sshd"]}}
    tree(tmp_path, procs)
    t = ProcessTable(str(tmp_path / "proc"), full_scan_every=3)
    t.scan()
    resolver = Resolver()
    for pid in t.new:
        if not resolver.matters(pid, t.procs):
            t.mark_cold(pid)
    assert t.is_cold(20) and not t.is_cold(10)
    reads = []
    for i in range(6):
        procs[10]["ticks"] += 50
        procs[20]["ticks"] = procs[20].get("ticks", 0) + 50
        tree(tmp_path, procs)
        deltas = t.scan()
        reads.append(t.reads)
        assert deltas[10] == pytest.approx(50 / CLK_TCK)  # the endpoint's CPU time, every scan
        assert 20 not in deltas                              # the system process's: never needed
    assert reads == [1, 1, 2, 1, 1, 2]  # scans 3 and 6 are full
    assert set(t.procs) == {10, 20}


def test_a_reused_pid_is_identified_again_at_the_next_full_scan(tmp_path):
    procs = {20: {"comm": "sshd", "cmdline": ["sshd"], "start": 100}}
    tree(tmp_path, procs)
    t = ProcessTable(str(tmp_path / "proc"), full_scan_every=2)
    t.scan()
    t.mark_cold(20)
    procs[20] = {"comm": "python3", "cmdline": VLLM, "start": 999, "ticks": 10}
    shutil.rmtree(tmp_path / "proc" / "20")
    tree(tmp_path, procs)
    t.scan()                                # partial: still the old entry
    assert t.procs[20].starttime == 100
    t.scan()                                # full: a new process behind the same pid
    assert t.procs[20].starttime == 999 and t.procs[20].cmdline == tuple(VLLM)
    assert not t.is_cold(20) and 20 in t.new


def test_listing_is_skipped_while_no_pid_is_allocated(tmp_path, monkeypatch):
    procs = {10: {"comm": "python3", "cmdline": VLLM}, 11: {"comm": "worker", "cmdline": VLLM, "ppid": 10}}
    tree(tmp_path, procs, last_pid=11)
    t = ProcessTable(str(tmp_path / "proc"), full_scan_every=100)
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real(p))
    t.scan()
    t.scan()
    assert len(listed) == 1                   # the second scan read the known pids directly
    procs[12] = {"comm": "new", "cmdline": VLLM}
    tree(tmp_path, procs, last_pid=12)        # a fork: the newest pid moved
    t.scan()
    assert len(listed) == 2 and 12 in t.procs and t.new == [12]


def test_listing_is_skipped_when_the_new_pids_are_threads_or_gone(tmp_path, monkeypatch):
    """A thread (CodeCarbon's timer makes one a second) takes a pid but is not listed in /proc:
    its status names its process (Tgid). A pid that came and went leaves nothing to read."""
    procs = {10: {"comm": "python3", "cmdline": VLLM}}
    root = tree(tmp_path, procs, last_pid=10)
    t = ProcessTable(str(root), full_scan_every=100)
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real(p))
    t.scan()
    (root / "11").mkdir()
    (root / "11" / "status").write_text("Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t10\nPid:\t11\n")
    tree(tmp_path, procs, last_pid=13)        # 11: a thread of 10; 12 and 13: already gone
    t.scan()
    assert len(listed) == 1 and set(t.procs) == {10} and t.new == []
    (root / "14" / "status").parent.mkdir()
    (root / "14" / "status").write_text("Name:\tother\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t99\nPid:\t14\n")
    tree(tmp_path, procs, last_pid=14)        # a thread of a process we do not know: list
    t.scan()
    assert len(listed) == 2


def test_an_exit_is_seen_without_listing_and_is_not_a_race(tmp_path):
    procs = {10: {"comm": "python3", "cmdline": VLLM}, 11: {"comm": "worker", "cmdline": VLLM}}
    tree(tmp_path, procs, last_pid=11)
    t = ProcessTable(str(tmp_path / "proc"), full_scan_every=100)
    t.scan()
    shutil.rmtree(tmp_path / "proc" / "11")
    t.scan()
    assert set(t.procs) == {10} and t.races == 0


def test_a_foreign_pid_namespace_always_lists(tmp_path, monkeypatch):
    procs = {10: {"comm": "python3", "cmdline": VLLM}}
    root = tree(tmp_path, procs)
    (root / "loadavg").write_text("0 0 0 1/1 10\n")
    (root / "self").symlink_to("4242424")     # /host/proc without hostPID: not our namespace
    t = ProcessTable(str(root))
    listed = []
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: listed.append(p) or real(p))
    t.scan()
    t.scan()
    assert len(listed) == 2


def test_checkpoint_restores_the_table_after_a_failed_sample(tmp_path):
    procs = {10: {"comm": "python3", "cmdline": VLLM, "ticks": 0}}
    tree(tmp_path, procs)
    t = ProcessTable(str(tmp_path / "proc"))
    t.scan()
    cp = t.checkpoint()
    procs[10]["ticks"] = 100
    tree(tmp_path, procs)
    assert t.scan()[10] == pytest.approx(100 / CLK_TCK)
    t.restore(cp)                             # the sample failed: the next scan covers the interval
    assert t.scan()[10] == pytest.approx(100 / CLK_TCK)


def test_a_due_full_scan_waits_while_no_pid_can_have_been_reused(tmp_path):
    """Linux reuses a pid only after the pid counter wraps at pid_max: while the newest pid
    (/proc/loadavg) has moved forward by less than pid_max / 4 since the last full scan, a due
    full scan (~4 ms for 270 processes) is put off, at most MAX_FULL_SKIPS times in a row. Once
    the counter has wrapped, the full scan runs and a reused pid is identified again."""
    from exporter.sensors.procfs import MAX_FULL_SKIPS

    procs = {20: {"comm": "sshd", "cmdline": ["sshd"], "start": 100, "ticks": 5}}
    root = tree(tmp_path, procs, last_pid=1000)
    (root / "sys" / "kernel").mkdir(parents=True)
    (root / "sys" / "kernel" / "pid_max").write_text("32768\n")
    t = ProcessTable(str(root), full_scan_every=2)
    t.scan()  # full: the baseline
    t.mark_cold(20)
    reads = []
    for i in range(6):  # pids allocated (by others), far from a wrap
        tree(tmp_path, procs, last_pid=1001 + i)
        t.scan()
        reads.append(t.reads)
    assert reads == [0] * 6  # due full scans at 2 and 4 put off: the cold sshd never read
    procs[20] = {"comm": "python3", "cmdline": VLLM, "start": 999, "ticks": 10}  # pid 20 reused …
    shutil.rmtree(root / "20")
    tree(tmp_path, procs, last_pid=400)  # … after the counter wrapped
    for _ in range(2):
        t.scan()
    assert t.procs[20].starttime == 999 and t.procs[20].cmdline == tuple(VLLM)
    # and never more than MAX_FULL_SKIPS in a row, whatever the counter does
    t2 = ProcessTable(str(root), full_scan_every=1)
    t2.scan()
    t2.mark_cold(20)
    full = 0
    for i in range(3 * (MAX_FULL_SKIPS + 1)):
        tree(tmp_path, procs, last_pid=401 + i)
        t2.scan()
        full += t2.reads == 1  # the cold process read: a full scan
    assert full == 3
