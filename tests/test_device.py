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
    for t in range(1, 20):                    # sustained quiet: learned once a bucket of settled readings votes
        a.update(None, 90_000, float(t))
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


def _quiet_run(a, watts, t0, seconds, table=None, limit=None, quiet_=True):
    for i in range(seconds):
        a.update(None, int(watts(i) * 1000) if callable(watts) else int(watts * 1000), t0 + i)
        a.learn_idle(quiet_, table, limit)
    return t0 + seconds


def test_idle_baseline_is_not_poisoned_by_the_reading_after_a_process_exits():
    """NVML power on Hopper is a 1-s average: the first quiet reading after an exit mixes busy
    and idle power. Old: the baseline became 340 W (true 100 W) and kept it."""
    a = GpuAccount()
    t = _quiet_run(a, 600.0, 0.0, 5, quiet_=False)          # busy
    t = _quiet_run(a, lambda i: 340.0 if i == 0 else 100.0, t, 30, table=None, limit=700.0)
    assert a.idle_baseline(None, None) == (100.0, "learned")


def test_idle_baseline_refuses_a_zero_reading():
    """Old: one 0 mW reading set the baseline to 0 W, so reserved GPUs carried no idle energy."""
    a = GpuAccount()
    t = _quiet_run(a, lambda i: 0.0 if i == 7 else 100.0, 0.0, 30, table=70.0, limit=700.0)
    assert a.idle_baseline(None, 70.0) == (100.0, "learned")
    b = GpuAccount()
    _quiet_run(b, 0.0, 0.0, 30, table=70.0)                   # a sensor that says 0 W all along
    assert b.idle_baseline(None, 70.0) == (70.0, "table")


def test_idle_baseline_is_robust_to_spikes_in_a_quiet_window():
    a = GpuAccount()
    _quiet_run(a, lambda i: 450.0 if i % 4 == 0 else 95.0, 0.0, 60, limit=700.0)
    assert a.idle_baseline(None, None)[0] == pytest.approx(95.0)


def test_idle_baseline_moves_up_as_well_as_down():
    a = GpuAccount()
    t = _quiet_run(a, 70.0, 0.0, 200, limit=700.0)
    assert a.idle_baseline(None, None) == (70.0, "learned")
    t = _quiet_run(a, 110.0, t, 600, limit=700.0)             # a new persistence mode / memory clock
    assert a.idle_baseline(None, None) == (110.0, "learned")
    _quiet_run(a, 60.0, t, 600, limit=700.0)
    assert a.idle_baseline(None, None) == (60.0, "learned")


def test_idle_baseline_is_bounded_by_the_power_limit_and_the_table():
    a = GpuAccount()
    _quiet_run(a, 400.0, 0.0, 60, limit=700.0)                # "quiet" at 400 W: more than half the limit
    assert a.idle_baseline(None, None) == (0.0, "unknown")
    b = GpuAccount()
    _quiet_run(b, 15.0, 0.0, 60, table=100.0)                 # below 0.3 × the table's idle
    assert b.idle_baseline(None, 100.0) == (100.0, "table")


def test_idle_baseline_shows_its_age():
    a = GpuAccount()
    t = _quiet_run(a, 90.0, 0.0, 20)
    assert a.idle_baseline(None, None) == (90.0, "learned")
    voted = a.learned_t
    _quiet_run(a, 300.0, t, 100, quiet_=False)                # busy since: no new evidence
    assert a.idle_age_s(False) == pytest.approx(a.last_t - voted)
    assert a.idle_age_s(True) == pytest.approx(a.last_t)      # configured: in use since the first read


def test_a_counter_jump_no_gpu_could_make_is_booked_from_power_and_flagged():
    """A corrupt energy read (NVML on a flaky bus, a misread 32-bit wrap): 1 MJ in 1 s on a 700 W
    GPU is not energy. The interval is booked from the power readings, then counting goes on."""
    a = GpuAccount()
    a.update(5_000_000, 300_000, 0.0, limit_w=700.0)
    d = a.update(1_005_000_000, 300_000, 1.0, limit_w=700.0)
    assert d.implausible and not d.counter_reset and d.joules == pytest.approx(300.0)
    d = a.update(1_005_400_000, 400_000, 2.0, limit_w=700.0)  # the new value is the baseline
    assert d.joules == pytest.approx(400.0) and not d.implausible
    # no limit known: MAX_DEVICE_W bounds it; a real 5 s gap at full power is not a glitch
    b = GpuAccount()
    b.update(0, 700_000, 0.0)
    d = b.update(3_500_000, 700_000, 5.0)
    assert d.joules == pytest.approx(3500.0) and not d.implausible
    d = b.update(3_500_000 + 10**12, 700_000, 6.0)
    assert d.implausible and d.joules == pytest.approx(700.0)


def test_short_intervals_at_full_power_are_not_called_implausible():
    """The counter steps every ~20-100 ms: a 50 ms interval can carry a whole step at the limit."""
    a = GpuAccount()
    a.update(0, 700_000, 0.0, limit_w=700.0)
    d = a.update(140_000, 700_000, 0.05, limit_w=700.0)  # 140 J in 50 ms: one step of 200 ms at 700 W
    assert d.joules == pytest.approx(140.0) and not d.implausible


def test_a_stalled_counter_catching_up_is_bounded_over_its_stall_not_one_interval():
    """A counter that stood still for 10 s and then hands on what it missed (a backend's
    catch-up after a stall) is judged over the 11 s since it last moved: energy, not a glitch."""
    a = GpuAccount()
    a.update(1_000_000, 500_000, 0.0, limit_w=750.0)
    for t in range(1, 11):
        assert a.update(1_000_000, 500_000, float(t), limit_w=750.0).joules == 0.0
    d = a.update(1_000_000 + 5_500_000, 500_000, 11.0, limit_w=750.0)
    assert d.joules == pytest.approx(5500.0) and not d.implausible
