"""Ranks 1 and 3 on the Triton backend against the float64 reference and torch, forward and
gradients.

The kernels compute every rank natively over (depth, height, width): rank 3 walks its depth
axis (phases ``s_d * s_h * s_w``, taps ``k_d * k_h * k_w``), rank 1 runs on a unit depth and
height view (``tconv._ranks`` is not on the path). Without CUDA the kernels run in Triton's
interpreter on CPU tensors, chosen here at collection before triton is imported, as
tests/test_triton.py does; the shapes are tiny for it.
"""


import numpy as np
import pytest

from helpers import triton_device

DEVICE = triton_device()  # at collection: TRITON_INTERPRET set before triton is imported
torch = pytest.importorskip("torch", reason="torch is not installed")
triton = pytest.importorskip("triton", reason="triton is not installed")
CUDA = DEVICE == "cuda"

import reference  # noqa: E402  (tests/, on sys.path through conftest)

import tconv  # noqa: E402

# (x shape channels-last, kernel size, filters, options)
CASES = {
    "1d-s2-same-cf": ((2, 5, 3), (4,), 3, dict(strides=2, padding="same",
                                               data_format="channels_first")),
    "1d-d2-op-g2": ((1, 4, 4), (3,), 2, dict(dilation_rate=2, output_padding=0, groups=2)),
    "1d-s8-k16-same": ((1, 3, 2), (16,), 3, dict(strides=8, padding="same")),
    "1d-s3-k2-numeric-op": ((2, 4, 3), (2,), 2, dict(strides=3, padding=((1, 2),),
                                                     output_padding=1)),
    "3d-s2-k2": ((1, 2, 3, 2, 3), (2, 2, 2), 4, dict(strides=2)),
    "3d-s212-same-op-cf": ((2, 3, 2, 2, 2), (3, 2, 3), 3, dict(
        strides=(2, 1, 2), padding="same", output_padding=(1, 0, 1),
        data_format="channels_first")),
    "3d-stride-over-kernel": ((1, 2, 2, 3, 2), (2, 3, 1), 3, dict(strides=(3, 1, 2))),
    "3d-d212-g2-same": ((1, 3, 2, 2, 4), (2, 2, 2), 4, dict(
        dilation_rate=(2, 1, 2), groups=2, padding="same")),
    "3d-k3-s2-numeric-op-cf": ((1, 3, 2, 2, 2), (3, 3, 3), 2, dict(
        strides=2, padding=((1, 0), (0, 1), (1, 1)), output_padding=(1, 0, 0),
        data_format="channels_first")),
    "3d-unit-depth": ((2, 1, 3, 3, 2), (1, 2, 2), 3, dict(strides=(1, 2, 2))),
    "3d-depth1-kernel3-same": ((1, 1, 2, 2, 2), (3, 2, 2), 2, dict(strides=(2, 1, 1),
                                                                  padding="same")),
    # depth 1 in and out (output_shape) at depth stride 2: still s_d phases on the grid
    "3d-depth-stride-output-shape": ((1, 1, 2, 2, 2), (1, 2, 2), 2, dict(
        strides=(2, 2, 1), padding="same", output_shape=(1, 3, 2))),
}
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
# float64 runs the kernels' multiply-accumulate path, float32 their tl.dot path: the index math is
# the same, so float32 runs on a few cases only (the interpreter is slow).
FLOAT32_CASES = ("1d-s2-same-cf", "3d-s212-same-op-cf", "3d-stride-over-kernel",
                 "3d-d212-g2-same")
ITEMS = [(case, torch.float64) for case in CASES] + [(case, torch.float32)
                                                    for case in FLOAT32_CASES]


def _reference_options(options):
    return dict(strides=options.get("strides", 1), padding=options.get("padding", "valid"),
                output_padding=options.get("output_padding"),
                dilation=options.get("dilation_rate", 1), groups=options.get("groups", 1),
                output_shape=options.get("output_shape"))


def _native_backend(x):
    """The backend a call on ``x`` reaches: the Triton module itself, not the ``_ranks``
    lowering."""
    from tconv import _backends, _triton

    assert _backends.select_backend("triton", x) is _triton


def _in_format(a, options):
    return np.moveaxis(a, -1, 1) if options.get("data_format") == "channels_first" else a


def _channels_last(t, options):
    a = t.detach().cpu().double().numpy()
    return np.moveaxis(a, 1, -1) if options.get("data_format") == "channels_first" else a


def _assert_close(actual, expected, dtype, what):
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tolerance,
                               atol=tolerance * max(1.0, float(np.abs(expected).max())),
                               err_msg=what)


@pytest.mark.parametrize("case, dtype", ITEMS, ids=str)
def test_forward_and_gradients_match_reference(case, dtype):
    x_shape, kernel_size, filters, options = CASES[case]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    kernel = rng.standard_normal((*kernel_size, filters // options.get("groups", 1),
                                  x_shape[-1]))
    bias = rng.standard_normal(filters)
    x, kernel, bias = (torch.asarray(a, dtype=dtype).double().numpy() for a in (x, kernel, bias))

    def on_device(a):
        return torch.asarray(a, dtype=dtype, device=DEVICE)

    _native_backend(on_device(x))
    y = tconv.conv_transpose(on_device(_in_format(x, options)), on_device(kernel),
                             on_device(bias), backend="triton", **options)
    assert y.dtype == dtype and y.device.type == DEVICE
    expected = reference.forward(x, kernel, bias, **_reference_options(options))
    _assert_close(_channels_last(y, options), expected, dtype, "y")
    dy = torch.asarray(rng.standard_normal(expected.shape), dtype=dtype).double().numpy()
    dx, dkernel, dbias = tconv.conv_transpose_backward(
        on_device(_in_format(dy, options)), on_device(_in_format(x, options)),
        on_device(kernel), backend="triton", **options)
    assert {t.dtype for t in (dx, dkernel, dbias)} == {dtype}
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel,
                                                        **_reference_options(options))
    _assert_close(_channels_last(dx, options), ref_dx, dtype, "dx")
    _assert_close(dkernel.cpu().double().numpy(), ref_dkernel, dtype, "dkernel")
    _assert_close(dbias.cpu().double().numpy(), ref_dbias, dtype, "dbias")


def _torch_weight(kernel, rank):
    """Keras' (*k, filters // groups, in_channels) kernel as torch's (in, filters // groups, *k)."""
    return kernel.permute(rank + 1, rank, *range(rank))


@pytest.mark.parametrize("rank", [1, 3])
def test_non_contiguous_channels_first_input_matches_torch(rank):
    """A strided view (every other sample along the last axis) in channels_first, float64,
    against torch's conv_transpose1d/3d and its autograd: torch's padding and output_padding,
    groups, dilation and unequal strides."""
    gen = torch.Generator().manual_seed(0)
    spatial = (3,) if rank == 1 else (2, 3, 2)
    strides, dilation = ((3,), (2,)) if rank == 1 else ((2, 1, 3), (1, 2, 1))
    kernel_size = (3,) if rank == 1 else (2, 2, 3)
    padding, output_padding = ((1,), (1,)) if rank == 1 else ((1, 0, 1), (1, 0, 2))
    wide = torch.randn(1, 4, *spatial[:-1], 2 * spatial[-1], dtype=torch.float64, generator=gen)
    x = wide[..., ::2]
    assert not x.is_contiguous()
    kernel = torch.randn(*kernel_size, 3, 4, dtype=torch.float64, generator=gen)
    bias = torch.randn(6, dtype=torch.float64, generator=gen)
    options = dict(strides=strides, dilation_rate=dilation, padding=padding,
                   output_padding=output_padding, groups=2, data_format="channels_first")
    conv = torch.nn.functional.conv_transpose1d if rank == 1 else (
        torch.nn.functional.conv_transpose3d)
    x_ref = x.clone().requires_grad_(True)
    w_ref = _torch_weight(kernel, rank).contiguous().requires_grad_(True)
    b_ref = bias.clone().requires_grad_(True)
    y_ref = conv(x_ref, w_ref, b_ref, stride=strides, padding=padding,
                 output_padding=output_padding, groups=2, dilation=dilation)
    dy = torch.randn(y_ref.shape, dtype=torch.float64, generator=gen)
    y_ref.backward(dy)
    before = wide.clone()

    def on_device(t):
        return t.to(DEVICE)

    y = tconv.conv_transpose(on_device(x), on_device(kernel), on_device(bias), backend="triton",
                             **options)
    dx, dkernel, dbias = tconv.conv_transpose_backward(on_device(dy), on_device(x),
                                                       on_device(kernel), backend="triton",
                                                       **options)
    assert torch.equal(wide, before)  # the input is not written
    tolerance = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.cpu(), y_ref.detach(), **tolerance)
    torch.testing.assert_close(dx.cpu(), x_ref.grad, **tolerance)
    torch.testing.assert_close(_torch_weight(dkernel.cpu(), rank), w_ref.grad, **tolerance)
    torch.testing.assert_close(dbias.cpu(), b_ref.grad, **tolerance)
