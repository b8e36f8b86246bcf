"""CPU regression benchmarks (pytest-benchmark): the performance issue's case set, one group per
case and pass, tconv on NumPy and torch CPU inputs next to the peers (torch ``conv_transpose2d``
in NCHW and in channels_last, TensorFlow ``conv2d_transpose`` when importable). The cases and the
callables are the ones ``tconv bench`` times (:mod:`tconv.bench`). See benchmarks/README.md for
the regression command."""

import time

import pytest

from tconv import bench

BACKWARD_FLOPS_IN_FORWARDS = {"forward": 1, "backward": 2, "forward+backward": 3}


@pytest.fixture(scope="module", params=bench.CASES, ids=lambda case: case.name)
def case(request):
    return request.param, bench.case_inputs(request.param)


@pytest.mark.parametrize("pass_name", list(BACKWARD_FLOPS_IN_FORWARDS))
@pytest.mark.parametrize("column", list(bench.CPU_COLUMNS),
                         ids=lambda name: name.replace(" ", "_"))
def test_bench(benchmark, case, column, pass_name):
    build, _, requires = bench.CPU_COLUMNS[column]
    if requires is not None:
        pytest.importorskip(requires, reason=f"{requires} is not installed")
    spec_case, inputs = case
    benchmark.group = f"{spec_case.name} {pass_name}"
    flops = spec_case.spec.flops * BACKWARD_FLOPS_IN_FORWARDS[pass_name]
    benchmark.extra_info["flops"] = flops
    fn = build(spec_case, *inputs)[pass_name]
    bench.run_for(fn, None, bench.SETTLE_S)   # the previous test's library stops spinning first
    started = time.perf_counter()
    fn()
    once = time.perf_counter() - started
    # At least 9 rounds and about half a second: a millisecond case needs hundreds of rounds for
    # its fastest one to settle on this shared machine.
    benchmark.pedantic(fn, rounds=min(300, max(9, int(0.5 / once))), iterations=1)
    benchmark.extra_info["gflops_per_s_at_median"] = flops / benchmark.stats.stats.median / 1e9
