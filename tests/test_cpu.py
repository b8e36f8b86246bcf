"""The CPU path against the float64 direct-definition reference, over random geometries, for every
installed namespace; and against torch autograd of ``conv_transpose2d``."""

import functools
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reference
import tconv
from tconv import _cpu
from tconv._cpu import _backward, _blas, _placement, _tuning

pair = st.tuples(st.integers(1, 3), st.integers(1, 3))


@st.composite
def geometries(draw):
    strides = draw(pair)
    output_padding = draw(st.one_of(
        st.none(), st.tuples(st.integers(0, strides[0] - 1), st.integers(0, strides[1] - 1))))
    groups = draw(st.integers(1, 3))
    geometry = dict(
        batch=draw(st.integers(1, 2)),
        size=(draw(st.integers(1, 5)), draw(st.integers(1, 5))),
        kernel_size=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        in_channels=groups * draw(st.integers(1, 3)),
        filters_per_group=draw(st.integers(1, 3)),
        groups=groups,
        strides=strides,
        dilation_rate=draw(pair),
        padding=draw(st.sampled_from(["valid", "same", "SAME"])),
        output_padding=output_padding,
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        use_bias=draw(st.booleans()),
    )
    out = [reference.output_length(n, k, s, d, geometry["padding"].lower(), o)
           for n, k, s, d, o in zip(geometry["size"], geometry["kernel_size"], strides,
                                    geometry["dilation_rate"], output_padding or (None, None))]
    assume(min(out) >= 1)
    return geometry


def _case(g, seed=0):
    """NHWC float64 inputs for geometry ``g``, plus the op's keyword options."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((g["batch"], *g["size"], g["in_channels"]))
    kernel = rng.standard_normal((*g["kernel_size"], g["filters_per_group"], g["in_channels"]))
    bias = rng.standard_normal(g["filters_per_group"] * g["groups"]) if g["use_bias"] else None
    options = {k: g[k] for k in ("strides", "padding", "output_padding", "dilation_rate",
                                 "groups", "data_format")}
    return x, kernel, bias, options


def _ref_options(options):
    return dict(strides=options["strides"], padding=options["padding"],
                output_padding=options["output_padding"], dilation=options["dilation_rate"],
                groups=options["groups"])


def _to_layout(a, data_format):
    return np.transpose(a, (0, 3, 1, 2)) if data_format == "channels_first" else a


def _from_layout(a, data_format):
    return np.transpose(a, (0, 2, 3, 1)) if data_format == "channels_first" else a


in_place_namespaces = pytest.mark.parametrize("xp", ["numpy", "array_api_strict", "torch"],
                                              indirect=True)
# JAX's eager ops compile once per new shape (a second or more a random geometry here), so JAX
# draws fewer geometries; its functional writes in every piece and placement are also checked
# below (test_functional_*), and the geometry rules on the other namespaces with every example.
functional_namespace = pytest.mark.parametrize("xp", ["jax.numpy"], indirect=True)
FUNCTIONAL_EXAMPLES = 10


@in_place_namespaces
@given(geometries())
def test_forward_matches_reference(xp, g):
    _check_forward(xp, g)


@functional_namespace
@settings(max_examples=FUNCTIONAL_EXAMPLES)
@given(geometries())
def test_functional_forward_matches_reference(xp, g):
    _check_forward(xp, g)


def _check_forward(xp, g):
    x, kernel, bias, options = _case(g)
    fmt = options["data_format"]
    y = tconv.conv2d_transpose(
        xp.asarray(_to_layout(x, fmt)), xp.asarray(kernel),
        None if bias is None else xp.asarray(bias), backend="cpu", **options)
    expected = reference.forward(x, kernel, bias, **_ref_options(options))
    assert y.dtype == xp.float64
    np.testing.assert_allclose(_from_layout(np.asarray(y), fmt), expected, rtol=1e-10, atol=1e-10)
    assert tuple(y.shape) == tconv.conv2d_transpose_output_shape(
        _to_layout(x, fmt).shape, g["kernel_size"], kernel.shape[2] * g["groups"],
        **{k: v for k, v in options.items() if k != "groups"})


@in_place_namespaces
@given(geometries())
def test_backward_matches_reference(xp, g):
    _check_backward(xp, g)


@functional_namespace
@settings(max_examples=FUNCTIONAL_EXAMPLES)
@given(geometries())
def test_functional_backward_matches_reference(xp, g):
    _check_backward(xp, g)


def _check_backward(xp, g):
    x, kernel, _, options = _case(g)
    fmt = options["data_format"]
    expected_y = reference.forward(x, kernel, **_ref_options(options))
    dy = np.random.default_rng(1).standard_normal(expected_y.shape)
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(
        xp.asarray(_to_layout(dy, fmt)), xp.asarray(_to_layout(x, fmt)), xp.asarray(kernel),
        backend="cpu", **options)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel, **_ref_options(options))
    np.testing.assert_allclose(_from_layout(np.asarray(dx), fmt), ref_dx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dkernel), ref_dkernel, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(dbias), ref_dbias, rtol=1e-10, atol=1e-10)


both_layouts = pytest.mark.parametrize("taps_outermost", [False, True],
                                       ids=["filters-innermost", "taps-outermost"])
row_or_image_pieces = pytest.mark.parametrize("piece", ["row", "image"])


@in_place_namespaces
@both_layouts
@row_or_image_pieces
@settings(max_examples=12)
@given(g=geometries())
def test_pieces_and_layouts_match_reference(xp, taps_outermost, piece, g):
    """Forward and backward go through the input in pieces (one row or one image at a time here,
    whatever the budgets would pick) and the forward places in either products layout."""
    _check_pieces_and_layout(xp, taps_outermost, piece, g)


@functional_namespace
@both_layouts
@row_or_image_pieces
@settings(max_examples=2)
@given(g=geometries())
def test_functional_pieces_match_reference(xp, taps_outermost, piece, g):
    """JAX adds and sets pieces functionally (``.at[]`` returns new arrays); its eager ops are
    slow enough that a few examples are all CI affords."""
    _check_pieces_and_layout(xp, taps_outermost, piece, g)


def _check_pieces_and_layout(xp, taps_outermost, piece, g):
    x, kernel, bias, options = _case(g)
    fmt = options["data_format"]
    x_, kernel_ = xp.asarray(_to_layout(x, fmt)), xp.asarray(kernel)
    spec = tconv.make_spec(x_.shape, kernel.shape, **options)
    rows, width = g["size"]
    tuning = _cpu.Tuning(piece_pixels=1 if piece == "row" else rows * width,
                         taps_outermost=taps_outermost)
    expected_y = reference.forward(x, kernel, bias, **_ref_options(options))
    dy = np.random.default_rng(1).standard_normal(expected_y.shape)
    y = _cpu.conv2d_transpose(x_, kernel_, None if bias is None else xp.asarray(bias), spec,
                              tuning=tuning)
    grads = _cpu.conv2d_transpose_backward(xp.asarray(_to_layout(dy, fmt)), x_, kernel_, spec,
                                           tuning=tuning)
    np.testing.assert_allclose(_from_layout(np.asarray(y), fmt), expected_y, rtol=1e-10, atol=1e-10)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel, **_ref_options(options))
    for got, ref in zip(grads, (_to_layout(ref_dx, fmt), ref_dkernel, ref_dbias)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10, atol=1e-10)


@in_place_namespaces
@pytest.mark.parametrize("filters", [3, _tuning.FEW_FILTERS, _tuning.FEW_FILTERS + 1])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_taps_outermost_copies_by_filter_or_whole(xp, filters, data_format):
    """Taps outermost, a few filters go one at a time (result copy, window gather, bias
    gradient), more in one pass: both against the reference, in pieces of one row and whole."""
    g = dict(batch=2, size=(5, 6), kernel_size=(3, 4), in_channels=5, filters_per_group=filters,
             groups=1, strides=(2, 2), dilation_rate=(1, 1), padding="same",
             output_padding=None, data_format=data_format, use_bias=True)
    for piece in ("row", "image"):
        _check_pieces_and_layout(xp, True, piece, g)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_outputs_are_contiguous_in_the_callers_layout(data_format):
    """Both layouts of the full output end as one C-contiguous array, as TF and torch return."""
    g = dict(batch=2, size=(6, 5), kernel_size=(3, 2), in_channels=4, filters_per_group=1,
             groups=1, strides=(2, 1), dilation_rate=(1, 1), padding="same",
             output_padding=None, data_format=data_format, use_bias=True)
    x, kernel, bias, options = _case(g)
    for filters in (1, 8):   # an image output (taps outermost) and a wider one
        k = np.repeat(kernel, filters, axis=2)
        b = np.repeat(bias, filters)
        y = tconv.conv2d_transpose(_to_layout(x, data_format), k, b, **options)
        assert y.flags["C_CONTIGUOUS"], (filters, y.strides)
        dx, dkernel, dbias = tconv.conv2d_transpose_backward(
            np.ones_like(y), _to_layout(x, data_format), k, **options)
        assert all(a.flags["C_CONTIGUOUS"] for a in (dx, dkernel, dbias))


@pytest.mark.parametrize("dtype_name, tol", [("float32", 1e-4), ("float16", 2e-2)])
def test_low_precision_accumulates_in_float32(xp, dtype_name, tol):
    if not hasattr(xp, dtype_name):
        pytest.skip(f"{xp.__name__} has no {dtype_name}")
    dtype = getattr(xp, dtype_name)
    g = dict(batch=2, size=(4, 5), kernel_size=(3, 3), in_channels=64, filters_per_group=3,
             groups=1, strides=(2, 2), dilation_rate=(1, 1), padding="same",
             output_padding=None, data_format="channels_last", use_bias=True)
    x, kernel, bias, options = _case(g)
    y = tconv.conv2d_transpose(xp.asarray(x, dtype=dtype), xp.asarray(kernel, dtype=dtype),
                               xp.asarray(bias, dtype=dtype), **options)
    assert y.dtype == dtype
    # The reference sees the same rounded inputs, so only accumulation error remains.
    rounded = [np.asarray(a, dtype=dtype_name).astype(np.float64) for a in (x, kernel, bias)]
    expected = reference.forward(*rounded, **_ref_options(options))
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(y).astype(np.float64), expected, atol=tol * scale)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_torch_backward_in_pieces_of_half_precision(data_format):
    """torch's pieces multiply straight into dx only where its rows lie contiguous in the compute
    dtype; a float16 dx, in either layout, takes each row through one reused float32 buffer."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((3, 3, 4, 6))
    spec = tconv.make_spec(_to_layout(x, data_format).shape, kernel.shape, strides=2,
                           padding="same", data_format=data_format)
    dy = rng.standard_normal((2, 8, 10, 4))
    half = [torch.tensor(_to_layout(a, data_format), dtype=torch.float16) for a in (dy, x)]
    grads = _cpu.conv2d_transpose_backward(*half, torch.tensor(kernel, dtype=torch.float16), spec,
                                           tuning=_cpu.Tuning(piece_pixels=1))
    rounded = [np.asarray(a, np.float16).astype(np.float64) for a in (dy, x, kernel)]
    expected = reference.backward(*rounded, strides=2, padding="same")
    for got, ref in zip(grads, (_to_layout(expected[0], data_format), *expected[1:])):
        assert got.dtype == torch.float16
        np.testing.assert_allclose(got.double().numpy(), ref, atol=2e-2 * np.abs(ref).max())


@given(geometries())
def test_backward_matches_torch_autograd(g):
    _check_against_torch_autograd(g)


def _check_against_torch_autograd(g):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    x, kernel, _, options = _case(g)
    fmt = options["data_format"]
    spec = tconv.make_spec(_to_layout(x, fmt).shape, kernel.shape, **options)
    xt = torch.tensor(x, requires_grad=True)
    # torch's (Cin, F/groups, kh, kw) kernel: the Keras layout transposed.
    kt = torch.tensor(kernel, requires_grad=True)
    full = torch.nn.functional.conv_transpose2d(
        xt.permute(0, 3, 1, 2), kt.permute(3, 2, 0, 1).contiguous(), stride=spec.strides,
        dilation=spec.dilation_rate, groups=spec.groups)
    # torch yields every landing row; Keras keeps [pad_top, pad_top + out) of them, zero-extended.
    extra_h = max(0, spec.pad_top + spec.out_height - full.shape[2])
    extra_w = max(0, spec.pad_left + spec.out_width - full.shape[3])
    full = torch.nn.functional.pad(full, (0, extra_w, 0, extra_h))
    y = full[:, :, spec.pad_top:spec.pad_top + spec.out_height,
             spec.pad_left:spec.pad_left + spec.out_width].permute(0, 2, 3, 1)
    dy = np.random.default_rng(1).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(dy))
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(
        _to_layout(dy, fmt), _to_layout(x, fmt), kernel, **options)
    np.testing.assert_allclose(_from_layout(dx, fmt), xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dkernel, kt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dbias, dy.sum(axis=(0, 1, 2)), rtol=1e-10, atol=1e-10)


def test_empty_batch_returns_empty_output(xp):
    x = xp.zeros((0, 3, 4, 2), dtype=xp.float64)
    kernel = xp.ones((3, 3, 5, 2), dtype=xp.float64)
    y = tconv.conv2d_transpose(x, kernel, strides=2, padding="same")
    assert tuple(y.shape) == (0, 6, 8, 5)
    dy = xp.zeros((0, 6, 8, 5), dtype=xp.float64)
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(dy, x, kernel, strides=2, padding="same")
    assert tuple(dx.shape) == (0, 3, 4, 2)
    np.testing.assert_array_equal(np.asarray(dkernel), np.zeros((3, 3, 5, 2)))
    np.testing.assert_array_equal(np.asarray(dbias), np.zeros(5))


@pytest.mark.parametrize("x_shape, kernel_shape, strides, rule", [
    ((2, 4, 6, 3), (2, 3, 4, 3), (2, 1), "by_cells"),
    ((1, 1024, 2), (4, 3, 2), (2,), "by_phase"),
])
def test_a_non_finite_tap_takes_the_placements(x_shape, kernel_shape, strides, rule):
    """The forwards by cells and by phase multiply taps by their windows' zeros (outside the
    input); on shapes the rules send there, a kernel with NaN and Inf goes to the placements and
    reaches exactly the outputs the definition says."""
    from tconv._cpu import _tuning

    rng = np.random.default_rng(4)
    x, kernel = rng.standard_normal(x_shape), rng.standard_normal(kernel_shape)
    spec = tconv.make_spec(x.shape, kernel.shape, strides=strides, padding="same")
    assert getattr(_tuning, rule)(np, spec, _cpu.Tuning())
    kernel[(0,) * len(kernel_shape)] = np.nan
    kernel[(-1,) * len(kernel_shape)] = np.inf
    y = tconv.conv_transpose(x, kernel, strides=strides, padding="same")
    expected = reference.forward(x, kernel, None, strides=strides, padding="same")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)


def test_views_read_only_and_non_finite_inputs_are_not_mutated():
    """NaN/Inf propagate exactly as the definition says: a non-finite kernel tap reaches only the
    outputs that tap reaches from a real input pixel (TF and torch scatter; zero padding must never
    multiply it), and nothing the caller passed is written to."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((2, 8, 6, 3))
    x = base[:, ::2, ::-1, :]                                    # non-contiguous, negative strides
    x.setflags(write=False)
    kernel = np.asfortranarray(rng.standard_normal((2, 3, 4, 3)))
    kernel[0, 0, 0, 0] = np.nan
    kernel.setflags(write=False)
    bias = np.array([1.0, np.inf, -1.0, 0.0])
    before = (x.copy(), kernel.copy(), bias.copy())
    y = tconv.conv2d_transpose(x, kernel, bias, strides=(2, 1), padding="same")
    expected = reference.forward(x, kernel, bias, strides=(2, 1), padding="same")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(y[finite], expected[finite], rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    tconv.conv2d_transpose_backward(dy, x, kernel, strides=(2, 1), padding="same")
    for after, original in zip((x, kernel, bias), before):
        np.testing.assert_array_equal(after, original)


def test_keras_json_sets_the_default_data_format(tmp_path, monkeypatch):
    (tmp_path / "keras.json").write_text('{"image_data_format": "channels_first"}')
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    x = np.ones((1, 2, 3, 3))                                    # N, C, H, W
    assert tconv.conv2d_transpose(x, np.ones((2, 2, 4, 2))).shape == (1, 4, 4, 4)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "missing"))
    assert tconv.conv2d_transpose(np.ones((1, 3, 3, 2)), np.ones((2, 2, 4, 2))).shape == (
        1, 4, 4, 4)


def _thread_case():
    """A layer whose GEMMs are large enough for BLAS and torch to split them across threads."""
    g = dict(batch=4, size=(32, 32), kernel_size=(3, 3), in_channels=64, filters_per_group=32,
             groups=1, strides=(2, 2), dilation_rate=(1, 1), padding="same",
             output_padding=None, data_format="channels_last", use_bias=True)
    x, kernel, bias, options = _case(g)
    x, kernel, bias = (a.astype(np.float32) for a in (x, kernel, bias))
    dy = np.random.default_rng(1).standard_normal(
        tconv.make_spec(x.shape, kernel.shape, **options).output_shape, dtype=np.float32)
    return x, kernel, bias, dy, options


def _run(xp, x, kernel, bias, dy, options):
    x, kernel, bias, dy = (xp.asarray(a) for a in (x, kernel, bias, dy))
    y = tconv.conv2d_transpose(x, kernel, bias, backend="cpu", **options)
    return [np.asarray(a) for a in (y, *tconv.conv2d_transpose_backward(dy, x, kernel,
                                                                        backend="cpu", **options))]


def _limited(namespace: str, threads: int):
    """The caller's own thread limit for the library tconv computes through."""
    if namespace == "torch":
        torch = pytest.importorskip("torch", reason="torch is not installed")
        return _torch_threads(torch, threads)
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    return threadpoolctl.threadpool_limits(limits=threads)


class _torch_threads:
    def __init__(self, torch, threads):
        self.torch, self.threads = torch, threads

    def __enter__(self):
        self.before = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.before)


# OpenBLAS (0.3.31, Haswell kernels) rounds a float32 GEMM differently on 2 threads than on 1
# once it splits it: on this case's forward and dx, bits differed before NumPy's GEMMs went in
# fixed blocks (_cpu/_blas.py). torch's are identical.
@pytest.mark.parametrize("xp, path", [
    ("numpy", "measured"), ("torch", "measured"), ("numpy", "cells forward"),
    ("torch", "cells forward"), ("numpy", "cells backward"), ("torch", "cells backward"),
    ("numpy", "phases"), ("numpy", "bands"), ("torch", "bands")], indirect=["xp"])
def test_results_are_bitwise_identical_whatever_the_thread_count(xp, path, monkeypatch):
    """The measured paths, the forward by cells or by phase or the backward by cells forced on
    the same layer (in pieces of 64 pixels or cells: NumPy computes them on both threads), and
    the forward and backward in bands of two rows (the forward's placed in two turns of bands
    whose outputs do not meet)."""
    monkeypatch.setattr(_backward, "backward_by_cells", lambda *args: path == "cells backward")
    namespace = "torch" if "torch" in xp.__name__ else "numpy"
    case = _thread_case()
    run = {"cells forward": functools.partial(_run_tuned, _cpu.Tuning(by_cells=True,
                                                                      piece_pixels=64)),
           "phases": functools.partial(_run_tuned, _cpu.Tuning(by_phase=True, piece_pixels=64)),
           "cells backward": functools.partial(_run_tuned, _cpu.Tuning(piece_pixels=64)),
           "bands": functools.partial(_run_tuned, _cpu.Tuning(piece_pixels=64))}.get(path, _run)
    with _limited(namespace, 1):
        one = run(xp, *case)
    for threads in (2, 4):      # 4: NumPy's two pieces each share their GEMM over two threads
        with _limited(namespace, threads):
            more = run(xp, *case)
        for a, b in zip(one, more):
            np.testing.assert_array_equal(a, b)


def test_work_handed_out_shares_its_own_over_the_threads_left():
    """Two pieces on four threads: each piece's nested work (its GEMM's blocks) goes over two
    threads, so all four compute; on two threads each piece's work stays on its thread."""
    import threading

    def run(threads):
        seen, lock = {}, threading.Lock()

        def piece(number):
            def block(_):
                with lock:
                    seen.setdefault(number, set()).add(threading.get_ident())
                time.sleep(0.01)            # long enough that no thread takes every block
            _blas.share(block, range(8))

        _blas._local.threads = threads
        try:
            _blas.share(piece, range(2))
        finally:
            _blas._local.threads = None
        return seen

    assert sorted(map(len, run(4).values())) == [2, 2]
    assert len(set().union(*run(4).values())) == 4
    assert sorted(map(len, run(2).values())) == [1, 1]


# (a, b) shapes that _blas cuts by rows, by columns, by runs of the reduction, and stacks by
# matrices (with a stack or one matrix on the right).
BLAS_SHAPES = [((3000, 64), (64, 64)), ((48, 128), (128, 16384)), ((48, 40000), (40000, 24)),
               ((3, 700, 64), (3, 64, 300)), ((5, 7, 33, 40), (40, 96))]


@pytest.mark.parametrize("a_shape, b_shape", BLAS_SHAPES)
def test_numpy_gemms_have_the_same_bits_on_any_thread_count(a_shape, b_shape):
    """Every shape here goes in more than one block, on 1, 2 or 3 threads, with the product's
    value (float64 reference) and with the caller's limit set back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(shape, dtype=np.float32) for shape in (a_shape, b_shape))
    results = []
    for threads in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
            with _blas.one_blas_thread(np):
                results.append(_blas.matmul(np, a, b))
            assert _blas_threads(threadpoolctl) == threads
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    np.testing.assert_allclose(results[0], np.matmul(a.astype(np.float64), b), rtol=1e-4,
                               atol=1e-3 * np.sqrt(a_shape[-1]))
    out_shape = (*a_shape[:-1], b_shape[-1])
    assert len(_blas._blocks(out_shape, a_shape[-1])) > 1 or a_shape[-1] > _blas.MIN_DEPTH


@pytest.mark.parametrize("a_shape, b_shape", [((0, 5), (5, 3)), ((4, 0), (0, 3)),
                                              ((4, 5), (5, 0)), ((2, 0, 5), (2, 5, 3))])
def test_numpy_gemms_of_empty_shapes(a_shape, b_shape):
    a, b = np.ones(a_shape, dtype=np.float32), np.ones(b_shape, dtype=np.float32)
    with _blas.one_blas_thread(np):
        got = _blas.matmul(np, a, b)
    np.testing.assert_array_equal(got, np.matmul(a, b))
    assert got.shape == np.matmul(a, b).shape


def _blas_threads(threadpoolctl) -> int:
    return min(info["num_threads"] for info in threadpoolctl.threadpool_info()
               if info["user_api"] == "blas")


def test_the_callers_blas_limit_is_set_back_after_errors_and_concurrent_calls():
    """tconv limits BLAS to one thread only while it computes: an error inside, or calls from
    several threads at once (they take turns), leave the caller's limit as it was, and a thread
    calling while another holds a threadpoolctl limit of one gets the same bits."""
    import threading

    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is not installed")
    x, kernel, bias, dy, options = _thread_case()
    before = _blas_threads(threadpoolctl)
    with pytest.raises(RuntimeError, match="inside"):
        with _blas.one_blas_thread(np):
            assert _blas_threads(threadpoolctl) == 1
            raise RuntimeError("inside")
    assert _blas_threads(threadpoolctl) == before
    expected = _run(np, x, kernel, bias, dy, options)
    results = []

    def in_threads(count):
        callers = [threading.Thread(target=lambda: results.append(
            _run(np, x, kernel, bias, dy, options))) for _ in range(count)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()

    in_threads(3)
    assert _blas_threads(threadpoolctl) == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):   # held by this thread
        in_threads(1)
        assert _blas_threads(threadpoolctl) == 1
    assert _blas_threads(threadpoolctl) == before
    assert len(results) == 4
    for result in results:
        for a, b in zip(result, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("namespace", ["numpy", "torch"])
def test_the_backward_by_shifts_is_bitwise_identical_whatever_the_thread_count(namespace,
                                                                              monkeypatch):
    """The rank-1 backward by shifts where the rule takes it (NumPy and torch, long input): GEMMs
    large enough for BLAS and torch to split them across threads."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    by_shifts, ran = _backward._backward_by_shifts, []
    monkeypatch.setattr(_backward, "_backward_by_shifts",
                        lambda *args: ran.append(args) or by_shifts(*args))
    rng = np.random.default_rng(3)
    x, kernel = (rng.standard_normal(shape, dtype=np.float32)
                 for shape in ((4, 1024, 64), (4, 32, 64)))
    spec = tconv.make_spec(x.shape, kernel.shape, strides=2, padding="same",
                           data_format="channels_last")
    assert _tuning.backward_by_shifts(torch if namespace == "torch" else np, spec, _cpu.Tuning())
    dy = rng.standard_normal(spec.output_shape, dtype=np.float32)
    convert = torch.from_numpy if namespace == "torch" else np.asarray
    grads = {}
    for threads in (1, 2):
        with _limited(namespace, threads):
            grads[threads] = tconv.conv_transpose_backward(
                *(convert(a) for a in (dy, x, kernel)), strides=2, padding="same")
    assert len(ran) == 2
    for one, two in zip(grads[1], grads[2]):
        np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


def _run_tuned(tuning, xp, x, kernel, bias, dy, options):
    spec = tconv.make_spec(x.shape, kernel.shape, **options)
    x, kernel, bias, dy = (xp.asarray(a) for a in (x, kernel, bias, dy))
    return [np.asarray(a) for a in (
        _cpu.conv2d_transpose(x, kernel, bias, spec, tuning=tuning),
        *_cpu.conv2d_transpose_backward(dy, x, kernel, spec, tuning=tuning))]


@pytest.mark.parametrize("kernel_size, stride, dilation", [
    (3, 2, 1), (4, 2, 1), (5, 2, 1), (16, 8, 1), (3, 1, 1), (3, 2, 3), (2, 3, 1), (7, 1, 2)])
@pytest.mark.parametrize("band", [1, 2, 3, 5])
def test_pieces_placed_in_one_turn_write_apart(kernel_size, stride, dilation, band):
    """The forward's turns hold every piece once, and within a turn no two pieces reach the
    same output row (input row i reaches rows i*s .. i*s + (k-1)*d of the uncropped output)."""
    spec = tconv.make_spec((2, 11, 4, 3), (kernel_size, 1, 5, 3), strides=(stride, 1),
                           dilation_rate=(dilation, 1))
    chosen = _tuning.input_pieces(spec, band * 4)
    turns = _tuning.disjoint_turns(spec, chosen)
    assert sorted(piece for turn in turns for piece in turn) == sorted(chosen)
    for turn in turns:
        reached = set()
        for n0, n1, r0, r1 in turn:
            rows = {(n, row) for n in range(n0, n1)
                    for row in range(r0 * stride, (r1 - 1) * stride
                                     + (kernel_size - 1) * dilation + 1)}
            assert not rows & reached
            reached |= rows


_FORK_AFTER_A_CALL = """
import multiprocessing, sys
import numpy as np
import tconv

x = np.random.default_rng(0).standard_normal((4, 32, 32, 64), dtype=np.float32)
kernel = np.random.default_rng(1).standard_normal((3, 3, 32, 64), dtype=np.float32)
expected = tconv.conv2d_transpose(x, kernel, strides=2, padding="same", backend="cpu")

def child(queue):
    queue.put(tconv.conv2d_transpose(x, kernel, strides=2, padding="same", backend="cpu"))

context = multiprocessing.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(queue,))
process.start()
got = queue.get(timeout=60)
process.join()
sys.exit(0 if np.array_equal(got, expected) else 1)
"""


def test_a_child_forked_after_a_call_computes_the_same():
    """The threads tconv shares NumPy's work over do not survive a fork (a DataLoader's workers,
    multiprocessing): a child forked after a call computes, and gets the same bits. In a fresh
    interpreter, which holds no other library's threads (JAX's) when it forks."""
    import multiprocessing
    import subprocess
    import sys

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    done = subprocess.run([sys.executable, "-c", _FORK_AFTER_A_CALL], timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _cpu_ticks_by_thread() -> dict:
    """utime + stime per thread of this process, in clock ticks (Linux /proc)."""
    import os

    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


@pytest.mark.parametrize("xp", ["numpy", "torch"], indirect=True)
def test_a_callers_one_thread_limit_keeps_the_work_on_the_calling_thread(xp):
    """tconv computes through the library's own thread pool (OpenBLAS for NumPy, torch's for
    torch) and starts none of its own: under the caller's limit of one thread (threadpoolctl,
    torch.set_num_threads) no other thread of the process does any of the work."""
    import os
    import threading
    import time

    if not os.path.exists("/proc/self/task"):
        pytest.skip("per-thread CPU time is read from Linux /proc")
    namespace = "torch" if "torch" in xp.__name__ else "numpy"
    case = _thread_case()
    with _limited(namespace, 1):
        _run(xp, *case)                 # pools exist and have stopped spinning before we count
        time.sleep(0.3)
        before = _cpu_ticks_by_thread()
        for _ in range(5):
            _run(xp, *case)
        after = _cpu_ticks_by_thread()
    me = threading.get_native_id()
    mine = after[me] - before[me]
    others = sum(after[t] - before.get(t, 0) for t in after if t != me)
    assert mine >= 5, "too little work to tell"
    assert others <= 1 + mine // 20, (mine, others)


# (geometry, the placement it takes on NumPy with filters innermost, whether it sets each cell
# once): each forward mode on a small shape, with and without bias, in whole images and in rows.
PLACEMENTS = [
    (dict(kernel_size=(3, 3), strides=(2, 2), padding="same"), "IntoOutput", False),  # on grid
    (dict(kernel_size=(5, 5), strides=(2, 2), padding="same"), "IntoOutput", False),  # off grid
    (dict(kernel_size=(4, 4), strides=(2, 2), padding="same"), "IntoUncropped", False),
    (dict(kernel_size=(2, 3), strides=(2, 2), padding="valid"), "IntoUncropped", False),
    (dict(kernel_size=(2, 2), strides=(2, 2), padding="valid"), "IntoOutput", True),
    (dict(kernel_size=(2, 2), strides=(2, 2), padding="valid", data_format="channels_first"),
     "IntoUncropped", True),
    (dict(kernel_size=(3, 2), strides=(3, 2), padding="valid", output_padding=(1, 1)),
     "IntoUncropped", False),                                    # the crop reaches past landings
]


@in_place_namespaces
@pytest.mark.parametrize("geometry, placement, set_once", PLACEMENTS,
                         ids=[f"{p}-{i}" for i, (_, p, _) in enumerate(PLACEMENTS)])
@pytest.mark.parametrize("use_bias", [True, False])
@row_or_image_pieces
def test_each_placement_matches_reference(xp, geometry, placement, set_once, use_bias, piece):
    """Forward by each placement, and the backward on the same shapes."""
    g = dict(batch=2, size=(4, 5), in_channels=3, filters_per_group=2, groups=1,
             dilation_rate=(1, 1), output_padding=None, data_format="channels_last",
             use_bias=use_bias)
    g.update(geometry)
    x, kernel, bias, options = _case(g)
    fmt = options["data_format"]
    spec = tconv.make_spec(_to_layout(x, fmt).shape, kernel.shape, **options)
    tuning = _cpu.Tuning(piece_pixels=1 if piece == "row" else 4 * 5, taps_outermost=False)
    chosen = _placement.make_placement(np, spec, tuning, None, np.float64, np.float64, "cpu")
    assert (type(chosen).__name__, chosen.set_once) == (placement, set_once)
    y = _cpu.conv2d_transpose(xp.asarray(_to_layout(x, fmt)), xp.asarray(kernel),
                              None if bias is None else xp.asarray(bias), spec, tuning=tuning)
    expected = reference.forward(x, kernel, bias, **_ref_options(options))
    np.testing.assert_allclose(_from_layout(np.asarray(y), fmt), expected, rtol=1e-10, atol=1e-10)
    dy = np.random.default_rng(1).standard_normal(expected.shape)   # k == s 'valid': dy unpadded
    grads = _cpu.conv2d_transpose_backward(xp.asarray(_to_layout(dy, fmt)),
                                           xp.asarray(_to_layout(x, fmt)), xp.asarray(kernel),
                                           spec, tuning=tuning)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel, **_ref_options(options))
    for got, ref in zip(grads, (_to_layout(ref_dx, fmt), ref_dkernel, ref_dbias)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10, atol=1e-10)


# (rank, geometry, the placement it takes on NumPy with filters innermost, whether it sets each
# cell once): the same modes over 1 and 3 spatial axes, one code path.
RANK_PLACEMENTS = [
    (1, dict(kernel_size=(3,), strides=(2,), padding="same"), "IntoOutput", False),
    (1, dict(kernel_size=(16,), strides=(8,), padding="same"), "IntoUncropped", False),  # hifigan
    (1, dict(kernel_size=(2,), strides=(2,), padding="valid"), "IntoOutput", True),
    (3, dict(kernel_size=(3, 3, 3), strides=(2, 2, 2), padding="same"), "IntoOutput", False),
    (3, dict(kernel_size=(2, 2, 2), strides=(2, 2, 2), padding="valid"), "IntoOutput", True),
    (3, dict(kernel_size=(2, 2, 2), strides=(2, 2, 2), padding="valid",
             data_format="channels_first"), "IntoUncropped", True),
    (3, dict(kernel_size=(3, 2, 4), strides=(2, 1, 2), padding="same", dilation_rate=(1, 2, 1)),
     "IntoUncropped", False),
    (3, dict(kernel_size=(2, 3, 2), strides=(2, 3, 2), padding="valid", output_padding=(1, 1, 1)),
     "IntoUncropped", False),                                    # the crop reaches past landings
]


rank_placements = pytest.mark.parametrize(
    "rank, geometry, placement, set_once", RANK_PLACEMENTS,
    ids=[f"rank{r}-{p}-{i}" for i, (r, _, p, _) in enumerate(RANK_PLACEMENTS)])


@in_place_namespaces
@rank_placements
@both_layouts
@pytest.mark.parametrize("piece", ["row", "band", "image"])
def test_each_placement_at_ranks_1_and_3_matches_reference(xp, rank, geometry, placement, set_once,
                                                           taps_outermost, piece):
    """Forward by each placement and products layout over 1 and 3 spatial axes, in pieces of one
    row (one index of the first spatial axis), bands of two, or whole images; the backward in the
    same pieces."""
    _check_rank_placement(xp, rank, geometry, placement, set_once, taps_outermost, piece)


@functional_namespace
@pytest.mark.parametrize("rank, geometry, placement, set_once",
                         [RANK_PLACEMENTS[i] for i in (1, 3, 4)],
                         ids=[f"rank{RANK_PLACEMENTS[i][0]}-{i}" for i in (1, 3, 4)])
@both_layouts
def test_functional_placements_at_ranks_1_and_3_match_reference(xp, rank, geometry, placement,
                                                                set_once, taps_outermost):
    """JAX writes the same pieces functionally (``.at[]``): bands of two rows, a few geometries
    (its eager ops are slow)."""
    _check_rank_placement(xp, rank, geometry, placement, set_once, taps_outermost, "band")


def _check_rank_placement(xp, rank, geometry, placement, set_once, taps_outermost, piece):
    size = (5,) if rank == 1 else (3, 2, 3)
    g = dict(batch=2, size=size, in_channels=3, filters_per_group=2, groups=1,
             dilation_rate=(1,) * rank, output_padding=None, data_format="channels_last",
             use_bias=True)
    g.update(geometry)
    fmt = g["data_format"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3))
    kernel = rng.standard_normal((*g["kernel_size"], 2, 3))
    bias = rng.standard_normal(2)
    options = {k: g[k] for k in ("strides", "padding", "output_padding", "dilation_rate",
                                 "data_format")}
    x_layout = np.moveaxis(x, -1, 1) if fmt == "channels_first" else x
    spec = tconv.make_spec(x_layout.shape, kernel.shape, **options)
    row_pixels = int(np.prod(size[1:]))
    tuning = _cpu.Tuning(piece_pixels={"row": 1, "band": 2 * row_pixels,
                                       "image": int(np.prod(size))}[piece],
                         taps_outermost=taps_outermost)
    if not taps_outermost:
        chosen = _placement.make_placement(np, spec, tuning, None, np.float64, np.float64, "cpu")
        assert (type(chosen).__name__, chosen.set_once) == (placement, set_once)
    ref_options = dict(strides=g["strides"], padding=g["padding"],
                       output_padding=g["output_padding"], dilation=g["dilation_rate"])
    y = _cpu.conv2d_transpose(xp.asarray(x_layout), xp.asarray(kernel), xp.asarray(bias), spec,
                              tuning=tuning)
    expected = reference.forward(x, kernel, bias, **ref_options)
    y = np.asarray(y)
    assert y.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.moveaxis(y, 1, -1) if fmt == "channels_first" else y, expected,
                               rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(expected.shape)
    grads = _cpu.conv2d_transpose_backward(
        xp.asarray(np.moveaxis(dy, -1, 1) if fmt == "channels_first" else dy),
        xp.asarray(x_layout), xp.asarray(kernel), spec, tuning=tuning)
    ref_dx, ref_dkernel, ref_dbias = reference.backward(dy, x, kernel, **ref_options)
    dx = np.asarray(grads[0])
    np.testing.assert_allclose(np.moveaxis(dx, 1, -1) if fmt == "channels_first" else dx, ref_dx,
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grads[1]), ref_dkernel, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(grads[2]), ref_dbias, rtol=1e-10, atol=1e-10)


# (rank, geometry): the forward by stride phase over every rank: crops on and off the stride
# grid, output_padding, kernels shorter than the stride (residues no tap reaches), dilation
# (window positions without a tap), groups (block-diagonal phase kernels), channels_first.
PHASE_GEOMETRIES = [
    (1, dict(kernel_size=(4,), strides=(2,), padding="same")),                       # hifigan
    (1, dict(kernel_size=(5,), strides=(3,), padding="valid", output_padding=(2,), groups=3)),
    (1, dict(kernel_size=(3,), strides=(2,), padding="same", dilation_rate=(2,),
             data_format="channels_first")),
    (2, dict(kernel_size=(4, 5), strides=(2, 2), padding="same")),
    (2, dict(kernel_size=(1, 2), strides=(2, 3), padding="valid", groups=3)),
    (2, dict(kernel_size=(3, 2), strides=(2, 1), padding="same", dilation_rate=(2, 3),
             output_padding=(1, 0))),
    (3, dict(kernel_size=(3, 3, 3), strides=(2, 2, 2), padding="same")),             # unet3d
    (3, dict(kernel_size=(2, 3, 1), strides=(3, 2, 2), padding="valid", output_padding=(1, 1, 1),
             dilation_rate=(1, 2, 1), groups=3, data_format="channels_first")),
]


# (size, kernel_size, strides, explicit crops (before, after) per axis): rows of the input whose
# every landing is cropped off, or lands partly past either end of the output, so a piece's slab
# of dy lies wholly or partly outside dy.
SLAB_EDGES = [
    ((4, 3), (3, 2), (1, 2), ((4, 0), (1, 2))),
    ((3, 2, 3), (2, 3, 2), (2, 1, 2), ((3, 2), (1, 1), (0, 2))),
]


# The forwards that read input windows: by stride phase (one GEMM per phase into the output's
# view) and by cells (one GEMM for every residue, interleaved into the output with the crop).
by_windows = pytest.mark.parametrize("mode", ["phase", "cells"])


@in_place_namespaces
@by_windows
@pytest.mark.parametrize("rank, geometry", PHASE_GEOMETRIES,
                         ids=[f"rank{r}-{i}" for i, (r, _) in enumerate(PHASE_GEOMETRIES)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("piece", ["row", "image"])
def test_forward_by_windows_matches_reference(xp, mode, rank, geometry, use_bias, piece):
    """Forward by stride phase or by cells, in pieces of one window row or the budget's (whole
    images here)."""
    _check_forward_by_windows(xp, mode, rank, geometry, use_bias, piece)


@pytest.mark.parametrize("xp", ["jax.numpy"], indirect=True)
@by_windows
@pytest.mark.parametrize("rank, geometry", [PHASE_GEOMETRIES[i] for i in (1, 7)],
                         ids=[f"rank{PHASE_GEOMETRIES[i][0]}-{i}" for i in (1, 7)])
def test_functional_forward_by_windows_matches_reference(xp, mode, rank, geometry):
    """JAX sets the windows and the products functionally (``.at[]``), in one piece, under
    ``jax.jit``: two geometries with groups, dilation and output_padding (its eager ops are
    slow)."""
    _check_forward_by_windows(xp, mode, rank, geometry, True, "image", jit=True)


def _check_forward_by_windows(xp, mode, rank, geometry, use_bias, piece, jit=False):
    size = {1: (7,), 2: (3, 4), 3: (3, 2, 3)}[rank]
    g = dict(batch=2, size=size, in_channels=3, filters_per_group=2, groups=1,
             dilation_rate=(1,) * rank, output_padding=None, data_format="channels_last",
             use_bias=use_bias)
    g.update(geometry)
    g["filters_per_group"] = 2 if g["groups"] == 1 else 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3))
    kernel = rng.standard_normal((*g["kernel_size"], g["filters_per_group"], 3))
    filters = g["filters_per_group"] * g["groups"]
    bias = rng.standard_normal(filters) if use_bias else None
    fmt = g["data_format"]
    x_layout = np.moveaxis(x, -1, 1) if fmt == "channels_first" else x
    options = {k: g[k] for k in ("strides", "padding", "output_padding", "dilation_rate",
                                 "groups", "data_format")}
    spec = tconv.make_spec(x_layout.shape, kernel.shape, **options)
    tuning = _cpu.Tuning(by_phase=mode == "phase", by_cells=mode == "cells",
                         piece_pixels=1 if piece == "row" else None)

    def forward(x, kernel, bias):
        return _cpu.conv2d_transpose(x, kernel, bias, spec, tuning=tuning)

    if jit:
        import jax

        forward = jax.jit(forward)
    y = forward(xp.asarray(x_layout), xp.asarray(kernel),
                None if bias is None else xp.asarray(bias))
    expected = reference.forward(x, kernel, bias, strides=g["strides"], padding=g["padding"],
                                 output_padding=g["output_padding"], dilation=g["dilation_rate"],
                                 groups=g["groups"])
    y = np.asarray(y)
    assert y.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.moveaxis(y, 1, -1) if fmt == "channels_first" else y, expected,
                               rtol=1e-10, atol=1e-10)


def test_long_rank1_inputs_go_by_phase():
    """The measured rule: HiFi-GAN's long k4 s2 layers by phase, short inputs and 2-D by
    placement (see ``_tuning.by_phase``)."""
    from tconv._cpu import _tuning

    def chosen(xp, shape, kernel_shape, **options):
        return _tuning.by_phase(xp, tconv.make_spec(shape, kernel_shape, **options), _cpu.Tuning())

    torch = pytest.importorskip("torch")
    long_1d = ((16, 2048, 128), (4, 64, 128))
    assert chosen(np, *long_1d, strides=2, padding="same")
    assert chosen(torch, *long_1d, strides=2, padding="same")
    assert not chosen(np, (16, 32, 512), (16, 256, 512), strides=8, padding="same")
    assert not chosen(np, (1, 64, 64, 256), (4, 4, 64, 256), strides=2, padding="same")
    assert not chosen(np, *long_1d, strides=2, padding="same", groups=2)


def test_the_forward_goes_by_cells_where_it_moves_less_than_the_adds():
    """The measured rule (see ``_tuning.by_cells``): fcn_x8 by cells, HiFi-GAN's up2 on NumPy
    (torch adds faster); not up1 (its large kernel gathered for few cells), pix2pix_u6, up3 (by
    phase), a kernel off the stride grid, groups, dilation, JAX."""
    from tconv._cpu import _tuning

    def chosen(xp, shape, kernel_shape, **options):
        return _tuning.by_cells(xp, tconv.make_spec(shape, kernel_shape, **options), _cpu.Tuning())

    torch = pytest.importorskip("torch")
    fcn_x8 = ((1, 32, 32, 32), (16, 16, 21, 32))
    hifigan_up2 = ((16, 256, 256), (16, 128, 256))
    for xp in (np, torch):
        assert chosen(xp, *fcn_x8, strides=8, padding="same")
    assert chosen(np, *hifigan_up2, strides=8, padding="same")
    assert not chosen(torch, *hifigan_up2, strides=8, padding="same")
    assert not chosen(np, (16, 32, 512), (16, 256, 512), strides=8, padding="same")
    assert not chosen(np, (1, 64, 64, 256), (4, 4, 64, 256), strides=2, padding="same")
    assert not chosen(np, (16, 2048, 128), (4, 64, 128), strides=2, padding="same")
    assert not chosen(np, (1, 32, 32, 32), (12, 12, 21, 32), strides=8, padding="same")
    assert not chosen(np, *hifigan_up2, strides=8, padding="same", groups=2)
    assert not chosen(np, *hifigan_up2, strides=8, padding="same", dilation_rate=2)
    jnp = pytest.importorskip("jax.numpy")
    assert not chosen(jnp, *fcn_x8, strides=8, padding="same")


# (size, kernel == stride, output_padding, data_format): the backward reorders each piece's cells
# of dy into its windows; output_padding leaves dy rows no window meets (they reach dbias only).
DISJOINT_WINDOWS = [
    ((5,), (3,), (2,), "channels_last"),
    ((3, 4), (2, 3), (1, 0), "channels_first"),
    ((2, 3, 2), (2, 2, 2), None, "channels_first"),
]


@in_place_namespaces
@pytest.mark.parametrize("size, kernel_size, output_padding, data_format", DISJOINT_WINDOWS,
                         ids=[f"rank{len(case[0])}" for case in DISJOINT_WINDOWS])
@pytest.mark.parametrize("piece_pixels", [1, None])
def test_backward_with_kernel_equal_stride_reorders_cells(xp, size, kernel_size, output_padding,
                                                          data_format, piece_pixels):
    """Kernel == stride: the windows are dy's cells reordered, in pieces of one row or whole."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3))
    kernel = rng.standard_normal((*kernel_size, 2, 3))
    x_layout = np.moveaxis(x, -1, 1) if data_format == "channels_first" else x
    spec = tconv.make_spec(x_layout.shape, kernel.shape, strides=kernel_size,
                           output_padding=output_padding, data_format=data_format)
    expected_y = reference.forward(x, kernel, strides=kernel_size, output_padding=output_padding)
    dy = rng.standard_normal(expected_y.shape)
    dy_layout = np.moveaxis(dy, -1, 1) if data_format == "channels_first" else dy
    grads = _cpu.conv2d_transpose_backward(xp.asarray(dy_layout), xp.asarray(x_layout),
                                           xp.asarray(kernel), spec,
                                           tuning=_cpu.Tuning(piece_pixels=piece_pixels))
    dx = np.asarray(grads[0])
    expected = reference.backward(dy, x, kernel, strides=kernel_size, output_padding=output_padding)
    np.testing.assert_allclose(np.moveaxis(dx, 1, -1) if data_format == "channels_first" else dx,
                               expected[0], rtol=1e-10, atol=1e-10)
    for got, ref in zip(grads[1:], expected[1:]):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10, atol=1e-10)


@in_place_namespaces
@pytest.mark.parametrize("size, kernel_size, strides, crops", SLAB_EDGES,
                         ids=[f"rank{len(e[0])}" for e in SLAB_EDGES])
def test_backward_in_rows_pads_each_slab_of_dy(xp, size, kernel_size, strides, crops):
    """The backward in pieces of one row gathers each row's windows from its own zero-padded
    slab of dy, against the reference where crops reach past a row's every landing."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3))
    kernel = rng.standard_normal((*kernel_size, 2, 3))
    spec = tconv.make_spec(x.shape, kernel.shape, strides=strides, padding=crops,
                           data_format="channels_last")
    dy = rng.standard_normal(spec.output_shape)
    grads = _cpu.conv2d_transpose_backward(xp.asarray(dy), xp.asarray(x), xp.asarray(kernel),
                                           spec, tuning=_cpu.Tuning(piece_pixels=1))
    for got, ref in zip(grads, reference.backward(dy, x, kernel, strides, crops)):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10, atol=1e-10)


# (size, kernel_size, strides, dilation_rate, padding, output_padding, groups, data_format): the
# backward over cells of dy, forced on tiny shapes at ranks 1-3: crops, output_padding (dy rows
# past every cell a pixel reads), dilation (taps on a cell's residues apart, shifts no tap
# reaches), kernels not a multiple of the stride (residues no tap lands on), groups, both layouts.
CELL_GEOMETRIES = [
    ((5,), (4,), (2,), (1,), "same", None, 1, "channels_last"),
    ((6,), (5,), (3,), (2,), "valid", (1,), 2, "channels_first"),
    ((3, 4), (4, 3), (2, 3), (1, 1), "same", (1, 2), 1, "channels_first"),
    ((4, 3), (3, 2), (2, 1), (2, 3), "valid", None, 2, "channels_last"),
    ((2, 3, 2), (3, 2, 2), (2, 2, 1), (1, 1, 2), "same", None, 1, "channels_last"),
    ((2, 2, 3), (2, 4, 2), (2, 2, 2), (1, 1, 1), "same", (0, 1, 1), 2, "channels_first"),
]


def _cell_case(size, kernel_size, strides, dilation_rate, padding, output_padding, groups,
               data_format):
    return dict(batch=2, size=size, kernel_size=kernel_size, in_channels=2 * groups,
                filters_per_group=2, groups=groups, strides=strides, dilation_rate=dilation_rate,
                padding=padding, output_padding=output_padding, data_format=data_format,
                use_bias=False)


def _check_gradients(xp, grads, expected, to_layout, passed, copies):
    """The gradients against the reference's ``expected``, ``dx`` in the caller's layout
    (``to_layout``) and C-contiguous, all float64; nothing the caller ``passed`` written to."""
    np.testing.assert_allclose(np.asarray(grads[0]), to_layout(expected[0]), rtol=1e-10,
                               atol=1e-10)
    for got, ref in zip(grads[1:], expected[1:]):
        np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-10, atol=1e-10)
    assert all(a.dtype == xp.float64 for a in grads)
    assert np.asarray(grads[0]).flags.c_contiguous and grads[0].ndim == expected[0].ndim
    for a, before in zip(passed, copies):
        np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("xp", ["numpy", "array_api_strict", "torch", "jax.numpy"],
                         indirect=True)
@pytest.mark.parametrize("geometry", CELL_GEOMETRIES,
                         ids=[f"rank{len(g[0])}-{i}" for i, g in enumerate(CELL_GEOMETRIES)])
@pytest.mark.parametrize("piece_pixels", [1, None], ids=["rows", "whole"])
def test_backward_by_cells_matches_reference(xp, geometry, piece_pixels):
    """Forced, in pieces of one row (each carrying its span - 1 rows of cells) or whole; the
    caller's layout and dtype back, nothing it passed written to."""
    g = _cell_case(*geometry)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *g["size"], g["in_channels"]))
    kernel = rng.standard_normal((*g["kernel_size"], 2, g["in_channels"]))
    fmt = g["data_format"]
    to_layout = (lambda a: np.moveaxis(a, -1, 1)) if fmt == "channels_first" else (lambda a: a)
    ref_options = dict(strides=g["strides"], padding=g["padding"],
                       output_padding=g["output_padding"], dilation=g["dilation_rate"],
                       groups=g["groups"])
    dy = rng.standard_normal(reference.forward(x, kernel, **ref_options).shape)
    spec = tconv.make_spec(to_layout(x).shape, kernel.shape, strides=g["strides"],
                           padding=g["padding"], output_padding=g["output_padding"],
                           dilation_rate=g["dilation_rate"], groups=g["groups"],
                           data_format=fmt)
    passed = [to_layout(dy), to_layout(x), kernel]        # NumPy and torch share their memory
    copies = [a.copy() for a in passed]
    grads = _cpu.conv2d_transpose_backward(
        *(xp.asarray(a) for a in passed), spec,
        tuning=_cpu.Tuning(backward_by_cells=True, piece_pixels=piece_pixels))
    _check_gradients(xp, grads, reference.backward(dy, x, kernel, **ref_options), to_layout,
                     passed, copies)


@pytest.mark.parametrize("geometry", [CELL_GEOMETRIES[2], CELL_GEOMETRIES[3]],
                         ids=["crop-output_padding", "dilation-groups"])
def test_backward_by_cells_matches_torch_autograd(geometry, monkeypatch):
    """From the user's call, the cells forced, against torch's own gradients in float64."""
    asked = []
    monkeypatch.setattr(_backward, "backward_by_cells", lambda *args: asked.append(args) or True)
    _check_against_torch_autograd(_cell_case(*geometry))
    assert asked


def test_the_backward_goes_by_cells_where_it_was_measured_to_win():
    import torch

    def chosen(xp, shape, kernel_shape, **options):
        spec = tconv.make_spec(shape, kernel_shape, data_format="channels_last", **options)
        return _tuning.backward_by_cells(xp, spec, _cpu.Tuning())

    fcn_x8 = ((1, 32, 32, 32), (16, 16, 21, 32))
    assert chosen(np, *fcn_x8, strides=8, padding="same")
    assert chosen(torch, *fcn_x8, strides=8, padding="same")
    assert not chosen(np, *fcn_x8, strides=8, padding="same", dilation_rate=2)
    assert not chosen(np, (1, 32, 32, 32), (16, 16, 21, 32), strides=8, padding="same",
                      groups=2)
    assert not chosen(np, (16, 256, 256), (16, 128, 256), strides=8, padding="same")
    assert not chosen(np, (1, 8, 8, 4), (4, 4, 2, 4), strides=4)
    assert not chosen(np, (1, 64, 64, 256), (4, 4, 64, 256), strides=2, padding="same")
    assert not chosen(np, (16, 64, 64, 64), (3, 3, 32, 64), strides=2, padding="same")


# (length, kernel, stride, padding, output_padding, data_format): the rank-1 backward by cell
# shifts, forced. 'same' keeps dy's images length*s long, so runs of images are one flat run of
# cells (pixels between them read across an image's edge: taken back); 'valid', crops and
# output_padding make them longer (one image a piece); a kernel of one shift (k == s); pixels
# with no window inside dy at all.
SHIFT_GEOMETRIES = [
    (7, 4, 2, "same", None, "channels_last"),
    (6, 16, 8, "same", None, "channels_first"),
    (5, 6, 3, "valid", None, "channels_last"),
    (5, 4, 2, ((3, 0),), 1, "channels_first"),
    (4, 2, 2, ((1, 0),), None, "channels_last"),
    (1, 4, 1, "same", None, "channels_last"),
]


@in_place_namespaces
@pytest.mark.parametrize("geometry", SHIFT_GEOMETRIES,
                         ids=[f"k{g[1]}s{g[2]}-{i}" for i, g in enumerate(SHIFT_GEOMETRIES)])
@pytest.mark.parametrize("piece", ["rows", "images", "whole"])
def test_backward_by_shifts_matches_reference(xp, geometry, piece, monkeypatch):
    """Forced, in pieces of one row, of two images (of three) or whole; the caller's layout and
    dtype back, nothing it passed written to."""
    length, k, s, padding, output_padding, fmt = geometry
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal((3, length, 2)), rng.standard_normal((k, 3, 2))
    ref_options = dict(strides=s, padding=padding,
                       output_padding=None if output_padding is None else (output_padding,))
    dy = rng.standard_normal(reference.forward(x, kernel, **ref_options).shape)
    to_layout = (lambda a: np.moveaxis(a, -1, 1)) if fmt == "channels_first" else (lambda a: a)
    spec = tconv.make_spec(to_layout(x).shape, kernel.shape, strides=s, padding=padding,
                           output_padding=output_padding, data_format=fmt)
    by_shifts, ran = _backward._backward_by_shifts, []
    monkeypatch.setattr(_backward, "_backward_by_shifts",
                        lambda *args: ran.append(args) or by_shifts(*args))
    passed = [to_layout(dy), to_layout(x), kernel]        # NumPy and torch share their memory
    copies = [a.copy() for a in passed]
    pixels = {"rows": 1, "images": 2 * length, "whole": None}[piece]
    grads = _cpu.conv2d_transpose_backward(
        *(xp.asarray(a) for a in passed), spec,
        tuning=_cpu.Tuning(backward_by_shifts=True, piece_pixels=pixels))
    assert ran
    _check_gradients(xp, grads, reference.backward(dy, x, kernel, **ref_options), to_layout,
                     passed, copies)


def test_a_non_finite_dkernel_by_shifts_takes_the_windows():
    """The shifts take back the shares of pixels that read across an image's edge; an Inf there
    gives Inf - Inf. On a shape the rule sends to the shifts, such a dkernel is recomputed by
    the windows: the same Inf and NaN as the windows, where the forced shifts give NaN."""
    import torch

    rng = np.random.default_rng(2)
    x, kernel = rng.standard_normal((2, 1024, 2)), rng.standard_normal((4, 3, 2))
    spec = tconv.make_spec(x.shape, kernel.shape, strides=2, padding="same",
                           data_format="channels_last")
    assert _tuning.backward_by_shifts(torch, spec, _cpu.Tuning())
    dy = rng.standard_normal(spec.output_shape)
    dy[1, 0, 0] = np.inf          # read across the edge by image 0's last pixel

    def backward(by_shifts):
        grads = _cpu.conv2d_transpose_backward(
            *(torch.from_numpy(a) for a in (dy, x, kernel)), spec,
            tuning=_cpu.Tuning(backward_by_shifts=by_shifts))
        return [g.numpy() for g in grads]

    chosen, windows, forced = backward(None), backward(False), backward(True)
    for got, want in zip(chosen, windows):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-12)
    assert np.isinf(windows[1]).any() and np.isnan(forced[1]).any()


def test_the_backward_goes_by_shifts_where_it_was_measured_to_win():
    import torch

    def chosen(xp, shape, kernel_shape, tuning=_cpu.Tuning(), **options):
        spec = tconv.make_spec(shape, kernel_shape, data_format="channels_last", **options)
        return _tuning.backward_by_shifts(xp, spec, tuning)

    up3, up4 = ((16, 2048, 128), (4, 64, 128)), ((16, 4096, 64), (4, 32, 64))
    for x_shape, kernel_shape in (up3, up4):
        assert chosen(torch, x_shape, kernel_shape, strides=2, padding="same")
        assert chosen(np, x_shape, kernel_shape, strides=2, padding="same")
    assert not chosen(torch, (16, 256, 256), (16, 128, 256), strides=8, padding="same")  # up2
    assert not chosen(torch, (16, 32, 512), (16, 256, 512), strides=8, padding="same")   # up1
    assert not chosen(torch, *up3, strides=2, padding="same", dilation_rate=2)
    assert not chosen(torch, up3[0], (4, 32, 128), strides=2, padding="same", groups=2)
    assert not chosen(torch, up3[0], (3, 64, 128), strides=2, padding="same")          # k % s
    assert not chosen(torch, up3[0], (2, 64, 128), strides=2)                          # k == s
    jnp = pytest.importorskip("jax.numpy")
    assert not chosen(jnp, *up3, strides=2, padding="same")
    # Asked for, it goes where it applies only.
    forced = _cpu.Tuning(backward_by_shifts=True)
    assert chosen(np, (1, 3, 2), (8, 2, 2), forced, strides=8)
    assert not chosen(np, (1, 3, 3, 2), (4, 4, 2, 2), forced, strides=2)
    assert not chosen(np, (1, 3, 2), (3, 2, 2), forced, strides=2)
