"""Numeric padding (PyTorch's int or (ph, pw); TF's explicit ((top, bottom), (left, right))
crops) and ``output_shape=`` (``tf.nn.conv2d_transpose``'s), against the float64 reference, torch's
own op and JAX's; their errors. TF's own cases are the golden "tf_nn" kind (test_golden.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
import tconv


def _arrays(rng, x_shape, kernel_shape, groups=1):
    """x, kernel and a bias of (filters,) = (kernel_shape[2] * groups,)."""
    return (rng.standard_normal(x_shape), rng.standard_normal(kernel_shape),
            rng.standard_normal(kernel_shape[2] * groups))


def _assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-10, atol=1e-10)


# (padding as the caller spells it, the explicit crops it means)
FORMS = [
    (0, ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    ((1, 0), ((1, 1), (0, 0))),
    ([0, 2], ((0, 0), (2, 2))),
    (((1, 0), (2, 3)), ((1, 0), (2, 3))),
    ([[0, 3], [1, 1]], ((0, 3), (1, 1))),
]


@pytest.mark.parametrize("padding, crops", FORMS, ids=str)
def test_every_numeric_padding_form_crops_the_full_output(padding, crops):
    rng = np.random.default_rng(0)
    x, kernel, bias = _arrays(rng, (2, 3, 4, 3), (3, 2, 4, 3))
    options = dict(strides=(2, 1), dilation_rate=(1, 2))
    y = tconv.conv2d_transpose(x, kernel, bias, padding=padding, **options)
    expected = reference.forward(x, kernel, bias, (2, 1), crops, dilation=(1, 2))
    _assert_close(y, expected)
    dy = rng.standard_normal(expected.shape)
    gradients = tconv.conv2d_transpose_backward(dy, x, kernel, padding=padding, **options)
    for actual, wanted in zip(gradients, reference.backward(dy, x, kernel, (2, 1), crops,
                                                            dilation=(1, 2))):
        _assert_close(actual, wanted)
    assert tconv.conv2d_transpose_output_shape(x.shape, (3, 2), 4, padding=padding,
                                               **options) == expected.shape


@st.composite
def explicit_geometries(draw):
    """Any legal crop of the full scatter, output_padding up to max(stride, dilation) - 1."""
    size = st.integers(1, 3)
    strides, dilation, kernel = (draw(st.tuples(size, size)) for _ in range(3))
    in_hw = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    groups = draw(st.sampled_from([1, 2]))
    crops, output_padding = [], []
    for length, k, s, d in zip(in_hw, kernel, strides, dilation):
        full = (length - 1) * s + (k - 1) * d + 1
        extra = draw(st.integers(0, max(s, d) - 1))
        before = draw(st.integers(0, full - 1))
        after = draw(st.integers(0, full - 1 - before))
        crops.append((before, after))
        output_padding.append(extra)
    return dict(in_hw=in_hw, kernel=kernel, strides=strides, dilation=dilation, groups=groups,
                crops=tuple(crops), output_padding=tuple(output_padding),
                channels_first=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@given(explicit_geometries())
def test_explicit_crops_with_output_padding_match_the_reference(g):
    rng = np.random.default_rng(g["seed"])
    channels = 2 * g["groups"]
    x, kernel, bias = _arrays(rng, (2, *g["in_hw"], channels), (*g["kernel"], 3, channels),
                              g["groups"])
    geometry = dict(strides=g["strides"], padding=g["crops"], output_padding=g["output_padding"],
                    dilation=g["dilation"], groups=g["groups"])
    expected = reference.forward(x, kernel, bias, **geometry)
    dy = rng.standard_normal(expected.shape)
    expected_gradients = reference.backward(dy, x, kernel, **geometry)
    to_first = (0, 3, 1, 2)
    layout = (lambda a: np.transpose(a, to_first)) if g["channels_first"] else (lambda a: a)
    options = dict(strides=g["strides"], padding=g["crops"], output_padding=g["output_padding"],
                   dilation_rate=g["dilation"], groups=g["groups"],
                   data_format="channels_first" if g["channels_first"] else "channels_last")
    _assert_close(tconv.conv2d_transpose(layout(x), kernel, bias, **options), layout(expected))
    dx, dkernel, dbias = tconv.conv2d_transpose_backward(layout(dy), layout(x), kernel, **options)
    for actual, wanted in zip((dx, dkernel, dbias), (layout(expected_gradients[0]),
                                                     *expected_gradients[1:])):
        _assert_close(actual, wanted)


# (strides, dilation, padding, output_padding): output_padding up to max(stride, dilation) - 1,
# along axes where the dilation is the larger too.
TORCH_GEOMETRIES = [
    ((2, 2), (1, 1), 1, (1, 1)),
    ((3, 2), (1, 1), (2, 0), (2, 0)),
    ((1, 1), (3, 2), 1, (2, 1)),
    ((2, 1), (1, 3), (0, 2), (1, 2)),
    ((1, 2), (2, 2), 0, None),
]


@pytest.mark.parametrize("strides, dilation, padding, output_padding", TORCH_GEOMETRIES)
def test_numeric_padding_follows_torch_conv_transpose2d(strides, dilation, padding,
                                                        output_padding):
    """torch's own op in float64; output_padding rows and columns land at the bottom/right."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=generator)
    weight = torch.randn(4, 3, 3, 2, dtype=torch.float64, generator=generator)  # torch's layout
    bias = torch.randn(6, dtype=torch.float64, generator=generator)
    expected = torch.nn.functional.conv_transpose2d(
        x, weight, bias, stride=strides, padding=padding, dilation=dilation, groups=2,
        output_padding=0 if output_padding is None else output_padding)
    y = tconv.conv2d_transpose(x, weight.permute(2, 3, 1, 0), bias, strides=strides,
                               padding=padding, output_padding=output_padding,
                               dilation_rate=dilation, groups=2, data_format="channels_first")
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("jax_padding", [((2, 2), (4, 4)), ((1, 0), (3, 1)), ((0, 2), (1, 0))])
def test_jax_conv_transpose_padding_is_the_complementary_crop(jax_padding):
    """jax.lax.conv_transpose pads the stride-dilated input: (lo, hi) is the crop (k_eff - 1 - lo,
    k_eff - 1 - hi), as the README says."""
    jax = pytest.importorskip("jax", reason="jax is not installed")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(4)
    x, kernel, _ = _arrays(rng, (2, 3, 4, 2), (3, 3, 5, 2))
    strides, dilation = (2, 1), (1, 2)
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:2], dilation)]
    crops = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(k_eff, jax_padding))
    # transpose_kernel=True: the kernel is the forward convolution's (HWIO with I = filters),
    # which is tconv's (kh, kw, filters, in_channels).
    expected = jax.lax.conv_transpose(x, kernel, strides, jax_padding, rhs_dilation=dilation,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      transpose_kernel=True)
    y = tconv.conv2d_transpose(x, kernel, strides=strides, padding=crops, dilation_rate=dilation)
    _assert_close(y, np.asarray(expected))


def test_output_padding_rows_are_appended_at_the_bottom_right():
    rng = np.random.default_rng(2)
    x, kernel, bias = _arrays(rng, (1, 3, 3, 2), (3, 3, 2, 2))
    plain = tconv.conv2d_transpose(x, kernel, bias, strides=3, padding=1)
    padded = tconv.conv2d_transpose(x, kernel, bias, strides=3, padding=1, output_padding=(2, 1))
    assert padded.shape == (1, plain.shape[1] + 2, plain.shape[2] + 1, 2)
    _assert_close(padded[:, :plain.shape[1], :plain.shape[2]], plain)


# --- output_shape= -----------------------------------------------------------------------------

def test_output_shape_picks_among_the_admitted_sizes():
    """TF's rule: the sizes whose forward convolution gives back the input's size ('same':
    ceil(H / s) == input), placed as TF places them; for input 3 x 4, kernel 3, strides (3, 2)."""
    rng = np.random.default_rng(3)
    x, kernel, bias = _arrays(rng, (1, 3, 4, 2), (3, 3, 2, 2))
    for padding, heights, width in [("same", range(7, 10), 8), ("valid", range(9, 12), 10),
                                    (((1, 0), (0, 2)), range(8, 11), 7)]:
        for height in heights:
            output_shape = (height, width)
            y = tconv.conv2d_transpose(x, kernel, bias, strides=(3, 2), padding=padding,
                                       output_shape=output_shape)
            expected = reference.forward(x, kernel, bias, (3, 2), padding,
                                         output_shape=output_shape)
            _assert_close(y, expected)
            assert tconv.conv2d_transpose_output_shape(
                (None, 3, 4, 2), 3, 2, strides=(3, 2), padding=padding,
                output_shape=output_shape) == (None, *output_shape, 2)


X = np.zeros((2, 4, 4, 3), np.float32)
K = np.zeros((3, 3, 5, 3), np.float32)

BAD = [
    # (exception, words the message must contain, options)
    (ValueError, ["padding", ">= 0"], dict(padding=-1)),
    (ValueError, ["padding", ">= 0"], dict(padding=(1, -2))),
    (ValueError, ["padding", ">= 0"], dict(padding=((0, 0), (-1, 0)))),
    (ValueError, ["padding", "2"], dict(padding=(1, 2, 3))),
    (ValueError, ["padding", "2"], dict(padding=((1, 2), (3,)))),
    (ValueError, ["padding", "2"], dict(padding=((1, 2),))),
    (TypeError, ["padding"], dict(padding=1.5)),
    (TypeError, ["padding"], dict(padding=True)),
    (TypeError, ["padding"], dict(padding=None)),
    (TypeError, ["padding"], dict(padding=("1", 2))),
    (TypeError, ["padding"], dict(padding=((1.0, 0), (0, 0)))),
    (ValueError, ["padding", "full output"], dict(padding=3)),              # full output is 6
    (ValueError, ["padding", "full output"], dict(padding=((6, 0), (0, 0)))),
    (ValueError, ["padding", "full output"], dict(padding=((0, 0), (2, 5)))),
    (ValueError, ["output_padding", "max(strides, dilation_rate)"],
     dict(padding=1, strides=2, output_padding=2)),
    (ValueError, ["output_padding", "max(strides, dilation_rate)"],
     dict(padding=1, dilation_rate=(1, 2), output_padding=(0, 2))),
    (ValueError, ["output_padding", "lower than strides"],
     dict(padding="same", dilation_rate=2, output_padding=1)),
    (ValueError, ["output_shape", "between 7 and 8"], dict(strides=2, padding=1,
                                                            output_shape=(6, 7))),
    (ValueError, ["output_shape", "between 7 and 8"], dict(strides=2, padding=1,
                                                            output_shape=(7, 9))),
    (ValueError, ["output_shape", "between 7 and 8"], dict(strides=2, padding="same",
                                                            output_shape=(9, 8))),
    (ValueError, ["output_shape", "output_padding"], dict(strides=2, output_padding=1,
                                                          output_shape=(9, 9))),
    (ValueError, ["output_shape", "2"], dict(output_shape=(2, 6, 6, 5))),
    (TypeError, ["output_shape"], dict(output_shape=6)),
    (TypeError, ["output_shape"], dict(output_shape=(6.0, 6))),
]


@pytest.mark.parametrize("error, words, options", BAD,
                         ids=[f"{e.__name__}-{o}" for e, _, o in BAD])
def test_bad_padding_and_output_shape_are_refused_naming_the_argument(no_compute, error, words,
                                                                      options):
    calls = [lambda: tconv.conv2d_transpose(X, K, **options),
             lambda: tconv.conv2d_transpose_backward(np.zeros((2, 6, 6, 5), np.float32), X, K,
                                                     **options),
             lambda: tconv.conv2d_transpose_output_shape(X.shape, 3, 5, **options)]
    for call in calls:
        with pytest.raises(error) as caught:
            call()
        for word in words:
            assert word in str(caught.value), (word, str(caught.value))


def test_torch_custom_ops_carry_numeric_padding_and_output_shape():
    """Custom ops take no nested lists: crops travel flat; schema, fake and autograd agree."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    from tconv import _torch_op

    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    # input 3 x 4, kernel 3, strides (2, 1), crops ((1, 0), (0, 1)): heights 6-7, width 5
    x, kernel, bias = tensor(2, 3, 4, 2), tensor(3, 3, 2, 2), tensor(2)
    options = ([2, 1], "explicit", None, "channels_last", [1, 1], 1, "auto", [7, 5],
               [1, 0, 0, 1])
    torch.library.opcheck(_torch_op.conv2d_transpose_op, (x, kernel, bias, *options))
    torch.library.opcheck(_torch_op.conv2d_transpose_backward_op,
                          (tensor(2, 7, 5, 2), x, kernel, *options))
