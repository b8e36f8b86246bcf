"""tconv.torch.Conv2DTranspose: Keras' parameters and initialization, torch's conventions, training,
state_dict. The values are checked against torch's own ConvTranspose2d where Keras and torch agree
('valid' padding, no output_padding)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
import tconv.torch as tconv_torch  # noqa: E402


def test_parameters_have_keras_layout_and_keras_initialization():
    torch.manual_seed(0)
    layer = tconv_torch.Conv2DTranspose(8, 12, (3, 5), groups=4, dtype=torch.float64)
    assert layer.kernel.shape == (3, 5, 3, 8) and layer.kernel.dtype == torch.float64
    assert layer.bias.shape == (12,) and torch.count_nonzero(layer.bias) == 0
    # Keras' compute_fans on the (kh, kw, filters // groups, in_channels) kernel.
    fan_in, fan_out = 3 * 5 * 3, 3 * 5 * 8
    limit = math.sqrt(6 / (fan_in + fan_out))
    kernel = layer.kernel.detach().numpy()
    assert np.abs(kernel).max() <= limit
    # glorot_uniform's uniform law: the bulk reaches the limit, std = limit / sqrt(3).
    assert np.abs(kernel).max() > 0.9 * limit
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.15 * limit
    assert tconv_torch.Conv2DTranspose(8, 12, 3, use_bias=False).bias is None


@pytest.mark.parametrize("groups", [1, 2])
def test_forward_matches_torch_conv_transpose2d_where_they_agree(groups):
    torch.manual_seed(1)
    layer = tconv_torch.Conv2DTranspose(4, 6, (3, 2), strides=(2, 3), dilation_rate=(1, 2),
                                        groups=groups, dtype=torch.float64)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64)
    # torch's weight (in_channels, filters // groups, kh, kw) is Keras' kernel transposed.
    expected = torch.nn.functional.conv_transpose2d(
        x, layer.kernel.permute(3, 2, 0, 1), layer.bias, stride=(2, 3), dilation=(1, 2),
        groups=groups)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_module_trains_with_a_torch_optimizer():
    torch.manual_seed(2)
    layer = tconv_torch.Conv2DTranspose(3, 2, 3, strides=2, padding="same")
    x = torch.randn(4, 3, 4, 4)
    target = torch.randn(4, 2, 8, 8)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert layer.bias.grad is not None and torch.count_nonzero(layer.bias) > 0
    assert losses[-1] < 0.8 * losses[0]


def test_state_dict_round_trips():
    torch.manual_seed(3)
    source = tconv_torch.Conv2DTranspose(2, 4, 3, strides=2, output_padding=1,
                                         data_format="channels_last")
    assert set(source.state_dict()) == {"kernel", "bias"}
    restored = tconv_torch.Conv2DTranspose(2, 4, 3, strides=2, output_padding=1,
                                           data_format="channels_last")
    restored.load_state_dict(source.state_dict())
    x = torch.randn(1, 5, 5, 2)
    torch.testing.assert_close(restored(x), source(x), rtol=0, atol=0)
    assert restored(x).shape == (1, 12, 12, 4)


@pytest.mark.parametrize("arguments, error, match", [
    (dict(in_channels=0), ValueError, "in_channels"),
    (dict(filters=5, groups=2, in_channels=4), ValueError, "groups must divide filters"),
    (dict(groups=3), ValueError, "groups"),
    (dict(kernel_size=(2, 0)), ValueError, "kernel_size"),
    (dict(strides=2, output_padding=2), ValueError, "output_padding"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(data_format="NCHW"), ValueError, "data_format"),
])
def test_bad_arguments_raise_at_construction(arguments, error, match):
    options = dict(in_channels=4, filters=6, kernel_size=3) | arguments
    with pytest.raises(error, match=match):
        tconv_torch.Conv2DTranspose(**options)


def test_options_valid_for_some_input_construct():
    """'same' with output_padding=0 and kernel 4 > stride 2 has pixels from a 2x2 input on: the
    options are valid, whatever a one-pixel input would give."""
    torch.manual_seed(4)
    layer = tconv_torch.Conv2DTranspose(8, 8, 4, strides=2, padding="same", output_padding=0,
                                        dtype=torch.float64)
    x = torch.randn(1, 8, 2, 3, dtype=torch.float64)
    # Keras' crop here is 2 on each side, which torch's padding=2 also crops.
    expected = torch.nn.functional.conv_transpose2d(x, layer.kernel.permute(3, 2, 0, 1),
                                                    layer.bias, stride=2, padding=2)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert layer(x).shape == (1, 8, 2, 4)
