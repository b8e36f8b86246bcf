"""``tconv bench`` / ``python -m tconv``: the command runs a case end to end (table, JSON, chart),
refuses unknown cases, and its ratios compare against the right peers (:mod:`tconv.bench`)."""

import functools
import json
import math
import subprocess
import sys
import time

import pytest

from tconv import bench, cli

pytest.importorskip("matplotlib", reason="matplotlib (extra 'bench') is not installed")
pytest.importorskip("tqdm", reason="tqdm is not installed")


def test_bench_runs_a_case_and_writes_table_json_and_chart(tmp_path, capsys):
    assert cli.main(["bench", "cvae_d1", "--quick", "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "cvae_d1" in table and "geomean" in table and "sgemm" in table
    result = json.loads((tmp_path / "bench.json").read_text())
    (row,) = result["cases"]
    assert row["case"] == "cvae_d1"
    assert row["flops_forward"] == 2 * 32 * 7 * 7 * 32 * 64 * 3 * 3
    for pass_name in bench.PASSES:
        assert row["times_ms"][pass_name]["tconv numpy"] > 0
        if "torch channels_first" in row["peers"]:   # torch is timed in both its layouts
            assert {"torch channels_first", "torch channels_last"} <= set(
                row["times_ms"][pass_name])
    assert result["sgemm_gflops"] > 0
    # The H100 floor of each pass: FLOPs, fewest bytes (x, kernel, bias, y once each, float32).
    forward = row["roofline_h100"]["forward"]
    assert forward["flops"] == row["flops_forward"]
    assert forward["bytes"] == 4 * (32 * 7 * 7 * 32 + 3 * 3 * 64 * 32 + 64 + 32 * 14 * 14 * 64)
    assert forward["tf32_ms"] == pytest.approx(max(forward["flops"] / 494e9,
                                                   forward["bytes"] / 3.35e9))
    assert "roofline of the same layers on an H100 SXM" in table
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "geomean 2-D" in table and "geomean ranks 1, 3" not in table   # only sets with rows
    assert set(result["geomean_ratio"]) == {"2-D"}
    assert result["geomean_ratio"]["2-D"]["forward"]["tconv numpy"] > 0
    if "max_abs_error" in row:  # torch installed: each float32 result is as close as torch's
        errors = row["max_abs_error"]
        assert set(errors) == set(row["times_ms"]["forward"])
        assert errors["tconv numpy"] <= 10 * errors["torch channels_first"] + 1e-5
        assert "torch channels_last" in row["peers"] and "tconv torch" not in row["peers"]


def test_unknown_case_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "no_such_layer"])
    assert "no_such_layer" in capsys.readouterr().err


def test_module_entry_point_prints_usage_without_a_command():
    done = subprocess.run([sys.executable, "-m", "tconv"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "tconv bench" in done.stderr


def test_ratio_is_against_the_fastest_peer_on_the_same_kind_of_device():
    row = {"peers": ["torch channels_first", "torch channels_last", "tensorflow", "torch (GPU)"],
           "times_ms": {"forward": {"tconv numpy": 2.0, "torch channels_first": 4.0,
                                    "torch channels_last": 3.0, "tensorflow": 5.0,
                                    "tconv triton (GPU)": 0.5, "torch (GPU)": 0.25}}}
    assert bench.ratio(row, "forward", "tconv numpy") == pytest.approx(1.5)
    assert bench.ratio(row, "forward", "tconv triton (GPU)") == pytest.approx(0.5)
    assert bench.ratio(row, "forward+backward", "tconv numpy") is None
    assert bench.geomean([2.0, 0.5, None]) == pytest.approx(1.0)


def test_case_table_is_the_issue_set():
    shapes = {case.name: case.spec.output_shape for case in bench.CASES}
    assert shapes == {
        "dcgan_g2": (256, 14, 14, 64), "dcgan_g3": (256, 28, 28, 1), "cvae_d1": (32, 14, 14, 64),
        "pix2pix_u6": (1, 128, 128, 64), "pix2pix_out": (1, 256, 256, 3),
        "unet_up1": (4, 56, 56, 512), "seg_up4": (16, 128, 128, 32), "fcn_x8": (1, 256, 256, 21),
        # HiFi-GAN's upsampling to 8192 samples, NWC; a 3-D U-Net's 64^3 -> 128^3, NDHWC
        "hifigan_up1": (16, 256, 256), "hifigan_up2": (16, 2048, 128),
        "hifigan_up3": (16, 4096, 64), "hifigan_up4": (16, 8192, 32),
        "unet3d_k2": (2, 128, 128, 128, 32), "unet3d_k3": (2, 128, 128, 128, 32)}
    # HiFi-GAN pads (k - s) // 2 on each side in torch: Keras' 'same' crops the same rows
    for name in ("hifigan_up1", "hifigan_up2", "hifigan_up3", "hifigan_up4"):
        spec = {case.name: case for case in bench.CASES}[name].spec
        (k,), (s,) = spec.kernel_size, spec.strides
        assert spec.pad_before == ((k - s) // 2,)
    sets = bench.CASE_SETS
    assert sets["2-D"] == tuple(c.name for c in bench.CASES if c.rank == 2)
    assert sets["ranks 1, 3"] == tuple(c.name for c in bench.CASES if c.rank != 2)


def test_columns_are_timed_in_turn_and_a_failing_one_is_reported():
    order = []

    def column(name, seconds=0.0):
        def call():
            order.append(name)
            time.sleep(seconds)
        return call

    def broken():
        raise RuntimeError("no such kernel here")

    errors = {}
    # A turn's share of the budget is 0.2 s / ROUNDS: "b" times its 2 calls a turn, "slow" (one
    # call outlasts the share) one.
    times = bench.interleaved_median_ms(
        {"b": (column("b"), None), "slow": (column("slow", 0.1), None), "c": (broken, None)},
        errors, min_repeats=2 * bench.ROUNDS, budget_s=0.2, settle_s=0.0)
    assert set(times) == {"b", "slow"} and times["slow"] >= 100
    assert errors == {"c": "RuntimeError: no such kernel here"}
    # warm-ups, then rounds of turns: "b" fills its share up to 50 / ROUNDS calls
    assert order == ["b", "slow"] + (["b"] * (50 // bench.ROUNDS) + ["slow"]) * bench.ROUNDS


def test_a_long_call_settles_idle_a_short_one_by_running():
    calls = []
    bench.settle(lambda: calls.append(1), None, 0.01, call_s=0.02)
    assert calls == []
    bench.settle(lambda: calls.append(1), None, 0.01, call_s=0.001)
    assert len(calls) >= 1


# Tiny layers of each rank through the harness: 'same' crops before and after the stride grid,
# one size per axis or one for all.
TINY_CASES = (
    bench.Case("tiny_1d_k16s8", 2, 5, 3, 4, 16, 8, "same", rank=1),
    bench.Case("tiny_1d_k4s2", 2, 7, 3, 2, 4, 2, "same", rank=1),
    bench.CASES[2],
    bench.Case("tiny_3d_k3s2", 2, (3, 4, 2), 3, 2, 3, 2, "same", rank=3),
    bench.Case("tiny_3d_k2s2", 2, 3, 2, 3, 2, 2, "valid", rank=3),
)


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda case: case.name)
def test_torch_peer_layouts_compute_the_same_crop(case):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    inputs = bench.case_inputs(case)
    channels_first, channels_last = (bench.CPU_COLUMNS[name][0](case, *inputs)["forward"]()
                                     for name in ("torch channels_first", "torch channels_last"))
    assert channels_first.stride()[-1] == 1
    if case.rank > 1:   # channels innermost: torch's channels-last memory formats
        assert channels_last.stride()[1] == 1
    expected = bench.tconv_numpy(case, *inputs)["forward"]()
    assert expected.shape == case.spec.output_shape
    for y in (channels_first, channels_last):
        assert float((y.movedim(1, -1) - torch.from_numpy(expected)).abs().max()) < 1e-4


@pytest.mark.parametrize("case", [TINY_CASES[0], TINY_CASES[3]], ids=lambda case: case.name)
def test_harness_times_and_checks_every_column_of_a_rank_1_and_3_case(case, monkeypatch):
    pytest.importorskip("torch", reason="torch is not installed")
    monkeypatch.setattr(bench, "interleaved_median_ms",
                        functools.partial(bench.interleaved_median_ms, settle_s=0.0))
    row = bench.run_case(case, min_repeats=1, budget_s=0.0)
    assert row["flops_forward"] == case.spec.flops and not row["errors"]
    for pass_name in bench.PASSES:
        assert set(row["times_ms"][pass_name]) == set(bench.implementations())
    # every column's forward, tconv's and the peers' crops, against torch in float64
    assert set(row["max_abs_error"]) == set(bench.implementations())
    assert max(row["max_abs_error"].values()) < 1e-5
    # the backward pass (pytest-benchmark's), which records its graph on the first call only
    inputs = bench.case_inputs(case)
    for name, (build, _, _) in bench.implementations().items():
        backward = build(case, *inputs)["backward"]
        first, again = backward(), backward()
        assert len(first) == len(again) == 3, name   # dx, dkernel, dbias
        dx = first[0]
        assert math.prod(dx.shape) == math.prod(case.spec.input_shape), name


def test_scaling_sweeps_batch_and_image_and_charts_time_per_flop(tmp_path):
    points = list(cli.scaling_cases())
    for layer in cli.SCALING_LAYERS:
        batches = [c.batch for name, sweep, c in points if name == layer and sweep == "batch"]
        sides = [c.size for name, sweep, c in points if name == layer and sweep == "image"]
        assert (batches[0], batches[-1], sides[0], sides[-1]) == (1, 256, 8, 256)
    fake = [{"layer": layer, "sweep": sweep, "flops_forward": case.spec.flops,
             "times_ms": {"forward": {"tconv numpy": case.spec.flops * 1e-8,
                                      "torch channels_first": case.spec.flops * 2e-8}}}
            for layer, sweep, case in points]
    cli.write_scaling_chart(fake, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
