"""CPU regression benchmarks (pytest-benchmark): the benchmark's cases (the 2-D set of issue 17,
the rank-1 and rank-3 set of issue 16), one group per case and pass, tconv on NumPy and torch CPU
inputs next to the peers (torch ``conv_transpose1d/2d/3d`` channels-first and channels-last,
TensorFlow ``tf.nn.conv_transpose`` when importable). The cases and the callables are the ones
``tconv bench`` times (:mod:`tconv.bench`). See benchmarks/README.md for the regression
command."""

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
    once = bench.timed_call(fn, None)   # the warm-up, which also times the call
    bench.settle(fn, None, bench.SETTLE_S, once)   # the previous test's library stops spinning
    # About half a second and at least 9 rounds: a millisecond case needs hundreds of rounds for
    # its fastest one to settle on this shared machine. But at most about 5 s and at least 3
    # rounds: a 3-D layer's calls take seconds each.
    rounds = min(300, max(int(0.5 / once), min(9, max(3, int(5 / once)))))
    benchmark.pedantic(fn, rounds=rounds, iterations=1)
    benchmark.extra_info["gflops_per_s_at_median"] = flops / benchmark.stats.stats.median / 1e9
