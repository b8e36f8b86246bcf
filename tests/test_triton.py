"""The Triton backend against the float64 reference and torch.

Without CUDA the kernels run in Triton's interpreter on CPU tensors. The interpreter is chosen
once, when triton is first imported (triton.language decorates its own helpers then), so
TRITON_INTERPRET is set here at collection time, before any test imports triton. The interpreter
runs one program at a time: shapes are tiny, and its fixed 32x16x16 tile makes them hang off every
tile edge. bfloat16, large shapes, 64-bit offsets and the autotune disk cache need a GPU.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import triton_device  # noqa: E402

DEVICE = triton_device()  # at collection: TRITON_INTERPRET set before triton is imported
torch = pytest.importorskip("torch", reason="torch is not installed")
triton = pytest.importorskip("triton", reason="triton is not installed")
CUDA = DEVICE == "cuda"

import reference  # noqa: E402  (tests/, on sys.path through conftest)

import tconv  # noqa: E402
from tconv import _cpu  # noqa: E402
from tconv.kernels import _autotune, _backward  # noqa: E402
from helpers import reference_options  # noqa: E402

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (the interpreter covers the "
                                "rest)")

# (x shape NHWC, kernel hw, filters, options)
CASES = {
    "s1-valid": ((2, 4, 5, 5), (3, 3), 3, dict()),
    "s2x3-d1x2-same": ((2, 5, 4, 6), (3, 2), 5, dict(strides=(2, 3), dilation_rate=(1, 2),
                                                     padding="same")),
    "s2-k4-same-even": ((1, 3, 4, 3), (4, 4), 4, dict(strides=2, padding="same")),
    "s3-k2-same-odd": ((1, 3, 3, 2), (2, 5), 3, dict(strides=3, padding="same")),
    "output-padding": ((2, 3, 4, 3), (3, 3), 2, dict(strides=2, output_padding=(1, 0))),
    "groups-d2-s2": ((1, 4, 3, 6), (3, 2), 4, dict(strides=2, dilation_rate=2, groups=2,
                                                   padding="same")),
    "channels-first": ((2, 3, 4, 5), (3, 3), 3, dict(strides=2, padding="same",
                                                     data_format="channels_first")),
    "multi-tile": ((3, 4, 4, 20), (2, 2), 18, dict(strides=2)),
    "k1-s3-empty-phases": ((1, 3, 2, 4), (1, 1), 3, dict(strides=3, output_padding=2)),
    "groups3-cf-op": ((1, 3, 3, 6), (3, 3), 6, dict(strides=(2, 3), groups=3, output_padding=1,
                                                    data_format="channels_first")),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16}
TOLERANCE = {torch.float16: 2e-3, torch.float32: 1e-5, torch.float64: 1e-12,
             torch.bfloat16: 1e-2}






def _make_inputs(case, dtype, seed=0):
    """float64 NumPy inputs (channels_last, already rounded to dtype) and the torch tensors."""
    x_shape, (kh, kw), filters, options = CASES[case]
    groups = options.get("groups", 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    kernel = rng.standard_normal((kh, kw, filters // groups, x_shape[-1]))
    bias = rng.standard_normal(filters)
    x, kernel, bias = (torch.asarray(a, dtype=dtype).double().numpy() for a in (x, kernel, bias))
    channels_first = options.get("data_format") == "channels_first"
    x_torch = torch.asarray(x.transpose(0, 3, 1, 2) if channels_first else x, dtype=dtype,
                            device=DEVICE)
    return (x, kernel, bias), (x_torch, torch.asarray(kernel, dtype=dtype, device=DEVICE),
                               torch.asarray(bias, dtype=dtype, device=DEVICE))


def _channels_last(array, options):
    array = array.detach().cpu().double().numpy()
    return array.transpose(0, 2, 3, 1) if options.get("data_format") == "channels_first" else array


def _assert_close(actual, expected, dtype, what):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype] * scale, err_msg=what)


def _check_forward(case, dtype):
    options = CASES[case][3]
    (x, kernel, bias), (x_t, kernel_t, bias_t) = _make_inputs(case, dtype)
    y = tconv.conv2d_transpose(x_t, kernel_t, bias_t, backend="triton", **options)
    assert y.dtype == dtype and y.device.type == DEVICE
    expected = reference.forward(x, kernel, bias, **reference_options(options))
    _assert_close(_channels_last(y, options), expected, dtype, f"forward {case}")


def _check_backward(case, dtype):
    options = CASES[case][3]
    (x, kernel, _), (x_t, kernel_t, _) = _make_inputs(case, dtype)
    ref_options = reference_options(options)
    y_shape = reference.forward(x, kernel, None, **ref_options).shape
    dy = torch.asarray(np.random.default_rng(1).standard_normal(y_shape), dtype=dtype)
    dy_np = dy.double().numpy()
    if options.get("data_format") == "channels_first":
        dy = dy.permute(0, 3, 1, 2).contiguous()
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(dy.to(DEVICE), x_t, kernel_t,
                                                         backend="triton", **options)
    assert {t.dtype for t in (dx, dkernel, dbias)} == {dtype}
    expected_dx, expected_dkernel, expected_dbias = reference.backward(dy_np, x, kernel,
                                                                       **ref_options)
    _assert_close(_channels_last(dx, options), expected_dx, dtype, f"dx {case}")
    _assert_close(dkernel.cpu().double().numpy(), expected_dkernel, dtype, f"dkernel {case}")
    _assert_close(dbias.cpu().double().numpy(), expected_dbias, dtype, f"dbias {case}")


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(case, dtype):
    _check_forward(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", CASES)
def test_backward_matches_reference(case, dtype):
    _check_backward(case, dtype)


@pytest.mark.parametrize("case", ["s2x3-d1x2-same", "groups3-cf-op"])
def test_float64_multiply_accumulate_path(case):
    _check_forward(case, torch.float64)
    _check_backward(case, torch.float64)


@pytest.mark.parametrize("groups, dilation", [(1, 1), (2, 2)])
def test_matches_torch_conv_transpose2d(groups, dilation):
    """'valid' without output_padding is torch's padding=0 when the dilated kernel is at least
    the stride: same numbers, torch's layouts."""
    rng = np.random.default_rng(2)
    x = torch.asarray(rng.standard_normal((2, 6, 5, 4)), dtype=torch.float32, device=DEVICE)
    kernel = torch.asarray(rng.standard_normal((3, 2, 3, 6)), dtype=torch.float32, device=DEVICE)
    bias = torch.asarray(rng.standard_normal(3 * groups), dtype=torch.float32, device=DEVICE)
    y = tconv.conv2d_transpose(x, kernel, bias, strides=(3, 2), dilation_rate=dilation,
                               groups=groups, data_format="channels_first", backend="triton")
    # torch's weight is (in_channels, filters // groups, kh, kw)
    expected = torch.nn.functional.conv_transpose2d(
        x, kernel.permute(3, 2, 0, 1), bias, stride=(3, 2), dilation=dilation, groups=groups)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_split_reductions_are_exact_and_deterministic(monkeypatch):
    """Split-K for wgrad and dbias (three slices, uneven), summed in a fixed order."""
    monkeypatch.setattr(_backward, "reduction_splits", lambda *args: 3)
    _check_backward("multi-tile", torch.float32)
    (_, _, _), (x_t, kernel_t, _) = _make_inputs("multi-tile", torch.float32)
    dy = torch.randn(3, 8, 8, 18, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    first = tconv.conv2d_transpose_backward(dy, x_t, kernel_t, strides=2, backend="triton")
    second = tconv.conv2d_transpose_backward(dy, x_t, kernel_t, strides=2, backend="triton")
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_triton_backend_never_falls_back_to_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("backend='triton' ran the CPU path")

    monkeypatch.setattr(_cpu, "conv2d_transpose", refuse)
    monkeypatch.setattr(_cpu, "conv2d_transpose_backward", refuse)
    _check_forward("s2x3-d1x2-same", torch.float32)
    _check_backward("s2x3-d1x2-same", torch.float32)
    (_, _, _), (x_t, kernel_t, bias_t) = _make_inputs("s1-valid", torch.float32)
    x_t.requires_grad_(True)
    tconv.conv2d_transpose(x_t, kernel_t, bias_t, backend="triton").sum().backward()
    assert x_t.grad is not None


def test_cpu_tensors_without_interpreter_are_refused_with_the_reason():
    script = textwrap.dedent("""
        import torch, tconv
        x, kernel = torch.ones(1, 2, 2, 1), torch.ones(1, 1, 1, 1)
        try:
            tconv.conv2d_transpose(x, kernel, backend="triton")
        except ValueError as error:
            print(error)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "needs CUDA tensors" in result.stdout, result.stdout + result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout and "backend='cpu'" in result.stdout


def test_non_torch_arrays_are_refused_by_the_triton_backend():
    with pytest.raises(TypeError, match="runs on torch tensors"):
        tconv.conv2d_transpose(np.ones((1, 2, 2, 1)), np.ones((1, 1, 1, 1)), backend="triton")


def test_auto_backend_keeps_cpu_tensors_on_the_cpu_path():
    from tconv import _backends

    assert _backends.select_backend("auto", torch.ones(1)) is _cpu
    if CUDA:
        from tconv import _triton

        assert _backends.select_backend("auto", torch.ones(1, device="cuda")) is _triton


def test_config_pruning_keeps_the_dtype_path_and_fitting_tiles():
    configs = _autotune.DOT_CONFIGS + _autotune.FMA_CONFIGS
    float16, float32, float64 = (torch.empty(0, dtype=d)
                                 for d in (torch.float16, torch.float32, torch.float64))

    def prune(operand, acc, gemm_m, gemm_n, gemm_k, precision=None, unfit=None):
        return _autotune.prune_gemm_configs(configs, {
            "x_ptr": operand, "ACC": acc, "GEMM_M": gemm_m, "GEMM_N": gemm_n, "GEMM_K": gemm_k,
            "INPUT_PRECISION": precision}, kernel="dgrad", unfit=unfit or {}, arch="sm_90a")

    kept = prune(float32, triton.language.float32, 40, 3, 5, "ieee")
    assert kept and all(c in _autotune.DOT_CONFIGS for c in kept)
    assert all(c.kwargs["BLOCK_N"] == 32 and c.kwargs["BLOCK_M"] <= 64 for c in kept)
    kept = prune(float64, triton.language.float64, 40, 3, 5)
    assert kept and all(c in _autotune.FMA_CONFIGS for c in kept)
    assert len(prune(float16, triton.language.float32, 8192, 256, 256)) == len(
        _autotune.DOT_CONFIGS)
    # fp32 128x128x64 tiles, 3 stages deep, need 192 KiB of shared memory
    assert len(prune(float32, triton.language.float32, 8192, 256, 256, "tf32")) == len(
        _autotune.DOT_CONFIGS) - 1
    # what the static report found unfit for this kernel, precision and arch (only) is never
    # kept, and the smallest tile left then stands in for tiny GEMMs
    dropped = {"32x32x32 s5 w2", "128x64x64 s3 w4"}
    unfit = {("dgrad", "float32-tf32", "sm_90a"): dropped,
             ("dgrad", "float32-tf32", "sm_80"): {"64x32x32 s5 w2"},
             ("dgrad", "float64", "sm_90a"): {_autotune.config_name(c)
                                              for c in _autotune.FMA_CONFIGS}}
    kept = {_autotune.config_name(c) for c in prune(float32, triton.language.float32, 8192, 256,
                                                    256, "tf32", unfit)}
    assert len(kept) == len(_autotune.DOT_CONFIGS) - 3 and not kept & dropped
    assert len(prune(float32, triton.language.float32, 8192, 256, 256, "ieee", unfit)) == len(
        _autotune.DOT_CONFIGS) - 1
    kept = prune(float32, triton.language.float32, 40, 3, 5, "tf32", unfit)
    assert [_autotune.config_name(c) for c in kept] == ["64x32x32 s5 w2"]
    # a path with every config unfit keeps its own configs (and the report test fails)
    kept = prune(float64, triton.language.float64, 40, 3, 5, None, unfit)
    assert kept and all(c in _autotune.FMA_CONFIGS for c in kept)


def test_64bit_index_is_chosen_by_the_offsets_a_tensor_reaches():
    """``INDEX_64`` where an offset reaches 2**31: contiguous tensors by their size, views by the
    span their strides reach (meta tensors: shapes and strides, no memory)."""
    from tconv.kernels._host import needs_64bit_index

    def meta(*shape):
        return torch.empty(shape, device="meta")

    assert not needs_64bit_index(meta(2**31 - 1), None)
    assert needs_64bit_index(meta(2, 2**30))
    assert not needs_64bit_index(meta(0, 2**31))
    narrow = meta(2**16, 2**15 + 1)[:, :1]   # 65536 elements, the last at 65535 * 32769 > 2**31
    assert not narrow.is_contiguous() and needs_64bit_index(narrow)
    assert not needs_64bit_index(meta(2**16, 2**15)[:, :1])


def test_strided_views_are_read_through_their_strides():
    """Non-contiguous NHWC views (unit channel stride) go to the kernels uncopied."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 9, 7, 5))
    x_np = base[:, ::2, 1:, :]
    kernel_np = rng.standard_normal((3, 3, 4, 5))
    x = torch.asarray(base, dtype=torch.float32, device=DEVICE)[:, ::2, 1:, :]
    kernel = torch.asarray(kernel_np, dtype=torch.float32, device=DEVICE)
    y = tconv.conv2d_transpose(x, kernel, strides=2, padding="same", backend="triton")
    expected = reference.forward(x_np, kernel_np, strides=(2, 2), padding="same")
    _assert_close(y.cpu().double().numpy(), expected, torch.float32, "forward of a view")
    dy_base = rng.standard_normal((2, 10, 12, 8))
    dy_np = dy_base[..., ::2]
    dy = torch.asarray(dy_base, dtype=torch.float32, device=DEVICE)[..., ::2]
    assert dy.stride()[3] != 1  # a channel-strided upstream gradient is made contiguous
    grads = tconv.conv2d_transpose_backward(dy, x, kernel, strides=2, padding="same",
                                            backend="triton")
    for actual, expected, name in zip(grads, reference.backward(
            dy_np, x_np, kernel_np, strides=(2, 2), padding="same"), ("dx", "dkernel", "dbias")):
        _assert_close(actual.cpu().double().numpy(), expected, torch.float32, name)


# ---- GPU only ------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("case", CASES)
def test_bfloat16_on_gpu(case):
    """The interpreter's bf16 tl.dot is wrong (triton 3.9), so bf16 is checked on a GPU only."""
    _check_forward(case, torch.bfloat16)
    _check_backward(case, torch.bfloat16)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_training_shapes_match_cudnn(dtype, data_format, monkeypatch):
    """A DCGAN-sized layer against torch's cuDNN transposed conv and its autograd."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(32, 256, 16, 16, device="cuda", generator=gen).to(dtype)
    kernel = (torch.randn(4, 4, 128, 256, device="cuda", generator=gen) / 64).to(dtype)
    dy = torch.randn(32, 128, 32, 32, device="cuda", generator=gen).to(dtype)
    x_ref = x.clone().requires_grad_(True)
    w_ref = kernel.permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    # Keras 'same' with k=4, s=2 is torch's padding=1
    y_ref = torch.nn.functional.conv_transpose2d(x_ref, w_ref, stride=2, padding=1)
    y_ref.backward(dy)
    to_layout = ((lambda t: t) if data_format == "channels_first"
                 else (lambda t: t.permute(0, 2, 3, 1).contiguous()))
    options = dict(strides=2, padding="same", data_format=data_format, backend="triton")
    y = tconv.conv2d_transpose(to_layout(x), kernel, **options)
    dx, dkernel, _ = tconv.conv2d_transpose_backward(to_layout(dy), to_layout(x), kernel,
                                                     **options)
    tolerance = dict(rtol=2e-2, atol=2e-2) if dtype != torch.float32 else dict(rtol=1e-4,
                                                                               atol=1e-4)
    torch.testing.assert_close(y.float(), to_layout(y_ref).float(), **tolerance)
    torch.testing.assert_close(dx.float(), to_layout(x_ref.grad).float(), **tolerance)
    torch.testing.assert_close(dkernel.float(), w_ref.grad.permute(2, 3, 1, 0).float(),
                               rtol=tolerance["rtol"], atol=tolerance["atol"] * 32)


@needs_cuda
def test_64bit_offsets_on_gpu():
    """x and y hold 2**31 elements: offsets past int32 must be computed in int64."""
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    x = torch.zeros(2, 1024, 1024, 1024, dtype=torch.float16, device="cuda")
    x[-1, -1, -1] = torch.arange(1024, device="cuda", dtype=torch.float16) / 1024
    kernel = torch.eye(1024, dtype=torch.float16, device="cuda")[None, None]
    y = tconv.conv2d_transpose(x, kernel, backend="triton")
    assert torch.equal(y[-1, -1, -1], x[-1, -1, -1])
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(y, x, kernel, backend="triton")
    assert torch.equal(dx[-1, -1, -1], x[-1, -1, -1])
    assert torch.allclose(dbias.float(), x[-1, -1, -1].float(), rtol=1e-3)


@needs_cuda
def test_autotune_results_are_cached_on_disk(tmp_path):
    """The tuning a process chose is stored under TRITON_CACHE_DIR for the next process."""
    if not _autotune.supports_disk_cache():
        pytest.skip(f"triton {triton.__version__}'s autotune has no cache_results")
    script = textwrap.dedent("""
        import torch, tconv
        x = torch.randn(8, 16, 16, 64, device="cuda", dtype=torch.float16)
        kernel = torch.randn(3, 3, 32, 64, device="cuda", dtype=torch.float16)
        tconv.conv2d_transpose(x, kernel, strides=2, backend="triton")
        torch.cuda.synchronize()
    """)
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path)}
    env.pop("TRITON_INTERPRET", None)
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)
    assert list(tmp_path.rglob("_forward_kernel.autotune.json"))
