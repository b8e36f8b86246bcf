"""GPU benchmarks (pytest-benchmark): tconv's Triton kernels against torch's cuDNN transposed conv.

The cases (tutorial layers at training batch; forward, dgrad, wgrad; float16, bfloat16, float32
with TF32 on and off) are ``gpu_cases.py``'s, which ``tools/gpu_job.py`` also times for its
report. ``extra_info`` carries the pass's FLOPs, TFLOP/s at the median and the share of the H100
roofline (``tconv._roofline``). Skips without CUDA.

    pytest benchmarks/test_bench_triton.py --benchmark-only --benchmark-group-by=group
"""

import os
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("triton", reason="triton is not installed")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import gpu_cases  # noqa: E402

from tconv._roofline import roofline  # noqa: E402


@pytest.mark.parametrize("pass_name", gpu_cases.PASSES)
@pytest.mark.parametrize("implementation", gpu_cases.IMPLEMENTATIONS)
@pytest.mark.parametrize("precision", gpu_cases.PRECISIONS)
@pytest.mark.parametrize("layer", gpu_cases.LAYERS)
def test_bench_gpu(benchmark, layer, precision, implementation, pass_name):
    with gpu_cases.torch_settings(precision):
        case = gpu_cases.inputs(gpu_cases.LAYERS[layer], precision, "cuda")
        run = gpu_cases.pass_callable(implementation, pass_name, case)

        def timed():
            run()
            torch.cuda.synchronize()

        timed()  # autotuning / cuDNN algorithm search happen here, untimed
        limit = roofline(case[0], precision, pass_name)
        benchmark.group = f"{layer} {precision} {pass_name}"
        benchmark.extra_info.update(device=torch.cuda.get_device_name(), flops=limit.flops,
                                    roofline_s=limit.seconds)
        benchmark.pedantic(timed, warmup_rounds=3, rounds=20, iterations=1)
    median_s = benchmark.stats.stats.median
    benchmark.extra_info["tflops_per_s_at_median"] = limit.flops / median_s / 1e12
    benchmark.extra_info["roofline_share_at_median"] = limit.seconds / median_s
