"""The clock probe (measure/clock.py) and the theoretical peak's clock where cpufreq does not give one."""

from __future__ import annotations

import platform

import pytest

from enginebench.measure import clock, native
from enginebench.measure.cpu_features import cpuinfo_text, parse_cpuinfo
from enginebench.measure.peak import parse_peak

CPUINFO = ("processor\t: 0\nmodel name\t: Test CPU\nphysical id\t: 0\nsiblings\t: 2\ncore id\t\t: 0\ncpu cores\t: 2\n"
           "cpu MHz\t\t: 2450.000\nflags\t\t: fpu sse2 avx fma avx2\n\n"
           "processor\t: 1\nmodel name\t: Test CPU\nphysical id\t: 0\nsiblings\t: 2\ncore id\t\t: 1\ncpu cores\t: 2\n"
           "cpu MHz\t\t: 2450.000\nflags\t\t: fpu sse2 avx fma avx2\n\n")
PROBE = (3.1, "measured: dependent adds on one core, best of 7")


def test_a_measured_clock_stands_in_for_cpufreq_only_where_it_is_faster_than_cpu_mhz():
    peak = parse_peak(CPUINFO, None, usable_cpus=2, measured_clock=PROBE)
    assert peak.clock_ghz == 3.1 and peak.clock_source.startswith("measured")
    assert "'cpu MHz' 2.45 GHz" in peak.clock_source
    assert peak.gflops("fp32", 2) == pytest.approx(2 * 32 * 3.1)
    assert parse_peak(CPUINFO, "3500000", usable_cpus=2, measured_clock=PROBE).clock_ghz == 3.5  # cpufreq's
    slower = parse_peak(CPUINFO, None, usable_cpus=2, measured_clock=(2.0, "measured"))
    assert slower.clock_ghz == pytest.approx(2.45) and "cpu MHz" in slower.clock_source
    no_mhz = parse_peak(CPUINFO.replace("cpu MHz\t\t: 2450.000\n", ""), None, usable_cpus=2, measured_clock=PROBE)
    assert no_mhz.clock_ghz == 3.1 and "cpu MHz" not in no_mhz.clock_source
    unknown = parse_peak(CPUINFO.replace("cpu MHz\t\t: 2450.000\n", ""), None, usable_cpus=2,
                         measured_clock=(None, "no compiler"))
    assert unknown.clock_ghz is None and unknown.gflops("fp32", 1) is None


@pytest.mark.serial  # times a core: alone, after the parallel pass
def test_the_add_chain_runs_at_a_clock_this_cpu_can_have():
    if platform.machine() not in ("x86_64", "AMD64") or not native.compiler():
        pytest.skip("the clock probe needs an x86-64 CPU and a C compiler")
    clock.measured_clock_ghz.cache_clear()
    ghz, how = clock.measured_clock_ghz()
    assert ghz is not None, how
    # the chain ran, and ran dependent: a compiled-away or parallel chain would read many times any real clock
    assert 0.5 < ghz < 7.0, ghz
    first, _, _ = parse_cpuinfo(cpuinfo_text())
    if first.get("cpu MHz"):  # the nominal clock: a core does not run at under half of it when it runs alone
        assert ghz > 0.5 * float(first["cpu MHz"]) / 1e3, (ghz, first["cpu MHz"])
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            assert ghz < 1.1 * int(f.read()) / 1e6  # never above the maximum the system states
    except OSError:
        pass
