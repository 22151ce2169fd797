"""One GPU's accounting state (exporter.pipeline.device.GpuAccount): pure, fed readings by hand."""

from __future__ import annotations

import pytest

from exporter.pipeline.device import GpuAccount, quiet


def test_counter_deltas_cover_gaps_and_the_first_read_primes():
    a = GpuAccount()
    assert a.update(1_000_000, 100_000, 10.0).joules is None  # priming read
    d = a.update(1_300_000, 300_000, 11.0)
    assert d.joules == pytest.approx(300.0) and d.dt_s == 1.0 and not d.counter_reset
    d = a.update(2_300_000, 300_000, 16.0)  # a 5 s gap: the counter carries it all
    assert d.joules == pytest.approx(1000.0) and d.dt_s == 5.0


def test_counter_going_backwards_is_a_reset_bridged_by_power():
    a = GpuAccount()
    a.update(5_000_000, 200_000, 0.0)
    d = a.update(1_000, 400_000, 2.0)
    assert d.counter_reset and d.joules == pytest.approx((200 + 400) / 2 * 2)
    assert a.update(101_000, 400_000, 3.0).joules == pytest.approx(100.0)  # counted from the new value


def test_power_only_devices_integrate_the_trapezoid():
    a = GpuAccount()
    assert a.update(None, 100_000, 0.0).joules is None
    assert a.update(None, 300_000, 2.0).joules == pytest.approx(400.0)


def test_idle_baseline_sources_in_order():
    a = GpuAccount()
    a.update(None, 250_000, 0.0)
    a.learn_idle(quiet=False)
    assert a.idle_baseline(None, 70.0) == (70.0, "table")
    assert a.idle_baseline(None, None) == (250.0, "learned")
    assert a.idle_baseline(55.0, 70.0) == (55.0, "configured")
    a.update(None, 90_000, 1.0)
    a.learn_idle(quiet=True)
    assert a.idle_baseline(None, 70.0) == (90.0, "learned")


def test_copy_is_a_checkpoint():
    a = GpuAccount()
    a.update(1_000, 1_000, 0.0)
    cp = a.copy()
    a.update(9_000, 1_000, 1.0)
    assert cp.last_mj == 1_000 and a.last_mj == 9_000


def test_quiet_means_no_process_or_every_sample_zero():
    assert quiet({}, {})
    assert quiet({1: 10}, {1: 0.0})
    assert not quiet({1: 10}, {})          # no new sample is not quiet
    assert not quiet({1: 10}, {1: 0.0, 2: 5.0})
