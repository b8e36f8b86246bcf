"""``tconv bench``: tconv against the peers on the benchmark's layers (the seed tutorials' 2-D ones,
HiFi-GAN's 1-D and a 3-D U-Net's upsampling layers), as a table, a JSON and a PNG bar chart;
``tconv bench --scaling``: how the time per FLOP moves as batch and image grow (2-D).

The cases, columns and timing are :mod:`tconv.bench`'s; this module holds the command, the table
and the charts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import bench as harness
from .bench import PASSES, geomean, pass_flops, ratio


def case_sets(rows: list[dict]) -> dict:
    """set name (:data:`tconv.bench.CASE_SETS`) -> its rows, for the sets the run has rows of."""
    sets = {name: [r for r in rows if r["case"] in members]
            for name, members in harness.CASE_SETS.items()}
    return {name: chosen for name, chosen in sets.items() if chosen}


def geomean_ratios(rows: list[dict]) -> dict:
    """set name -> pass -> tconv column -> geomean of its ratios over the set's rows."""
    return {set_name: {p: {n: geomean(ratio(r, p, n) for r in chosen)
                           for n in chosen[0]["times_ms"].get(p, {}) if n.startswith("tconv")}
                       for p in PASSES}
            for set_name, chosen in case_sets(rows).items()}


def format_table(rows: list[dict], sgemm: float) -> str:
    names = []
    for row in rows:
        for times in row["times_ms"].values():
            names += [n for n in times if n not in names]
    mine = [n for n in names if n.startswith("tconv")]
    header = (["case", "pass"] + [f"{n} ms" for n in names] + ["tconv numpy GFLOP/s", "% sgemm"]
              + [f"ratio {n.removeprefix('tconv ')}" for n in mine])
    lines = [header]
    for pass_name in PASSES:
        for set_name, chosen in case_sets(rows).items():
            for row in chosen:
                times = row["times_ms"].get(pass_name, {})
                gflops = pass_flops(row, pass_name) / times["tconv numpy"] / 1e6
                lines.append([row["case"], pass_name]
                             + [f"{times[n]:.2f}" if n in times else "-" for n in names]
                             + [f"{gflops:.1f}", f"{100 * gflops / sgemm:.0f}%"]
                             + [_fmt_ratio(ratio(row, pass_name, n)) for n in mine])
            lines.append([f"geomean {set_name}", pass_name] + [""] * (len(names) + 2)
                         + [_fmt_ratio(geomean(ratio(r, pass_name, n) for r in chosen))
                            for n in mine])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    errors = [f"  {row['case']}: " + ", ".join(f"{name} {error:.2e}" for name, error
                                               in row["max_abs_error"].items())
              for row in rows if "max_abs_error" in row]
    if errors:
        text += ["", "max abs error of each column's float32 forward vs torch in float64:"]
        text += errors
    for row in rows:
        text += [f"  {row['case']}: {name} skipped ({why})" for name, why in row["errors"].items()]
    text += ["", "roofline of the same layers on an H100 SXM, float32 (tconv._roofline): GFLOP, "
             "fewest MB moved, lower-bound ms with TF32 / IEEE products"]
    for row in rows:
        floors = row["roofline_h100"]
        text.append(f"  {row['case']}: " + "; ".join(
            f"{name} {f['flops'] / 1e9:.2f} GFLOP {f['bytes'] / 1e6:.1f} MB "
            f"{f['tf32_ms']:.3f} / {f['ieee_ms']:.3f} ms" for name, f in floors.items()))
    text.append(f"\nsgemm (NumPy BLAS, 2048^3): {sgemm:.1f} GFLOP/s; ratio = fastest peer's median "
                "time / tconv's (> 1: tconv faster); geomean per set: "
                + "; ".join(f"{name} = {', '.join(members)}"
                            for name, members in harness.CASE_SETS.items()))
    return "\n".join(text)


def _fmt_ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_chart(rows: list[dict], path: Path) -> None:
    """Grouped bars of GFLOP/s per case: a row of panels per pass, a panel per case set."""
    plt = _pyplot()
    sets = case_sets(rows)
    widths = [max(2, len(chosen)) for chosen in sets.values()]   # a lone case keeps its title
    figure, axes = plt.subplots(len(PASSES), len(sets), figsize=(3 + 1.1 * sum(widths), 8),
                                squeeze=False, constrained_layout=True, width_ratios=widths)
    for axes_of_pass, pass_name in zip(axes, PASSES):
        names = []   # the same colour for a column in every panel
        for row in rows:
            names += [n for n in row["times_ms"].get(pass_name, {}) if n not in names]
        for axis, (set_name, chosen) in zip(axes_of_pass, sets.items()):
            width = 0.8 / max(1, len(names))
            for i, name in enumerate(names):
                heights = [pass_flops(r, pass_name) / r["times_ms"][pass_name][name] / 1e6
                           if name in r["times_ms"].get(pass_name, {}) else 0 for r in chosen]
                axis.bar([c + i * width for c in range(len(chosen))], heights, width, label=name)
            axis.set_xticks([c + width * (len(names) - 1) / 2 for c in range(len(chosen))],
                            [r["case"] for r in chosen], rotation=20)
            axis.set_ylabel("GFLOP/s")
            axis.set_title(f"{pass_name}, float32, {set_name}", fontsize="medium")
        axes_of_pass[0].legend(fontsize="x-small")
    figure.savefig(path, dpi=110)
    plt.close(figure)


# Two tutorial layers, each swept over the batch at its own image size and over the image side at
# batch 1 (forward only): from a few MFLOP, where per-call overhead rules, to tens of GFLOP.
SCALING_LAYERS = ("cvae_d1", "dcgan_g2")
SCALING_BATCHES = (1, 4, 16, 64, 256)
SCALING_SIZES = (8, 16, 32, 64, 128, 256)
SCALING_COLUMNS = ("tconv numpy", "tconv torch", "torch channels_first", "torch channels_last",
                   "tensorflow")


def scaling_cases():
    """(layer, sweep, case) for every point of the sweep."""
    known = {c.name: c for c in harness.CASES}
    for name in SCALING_LAYERS:
        layer = known[name]
        for batch in SCALING_BATCHES:
            yield name, "batch", layer.scaled(batch=batch, size=layer.size)
        for size in SCALING_SIZES:
            yield name, "image", layer.scaled(batch=1, size=size)


def write_scaling_chart(points: list[dict], path: Path) -> None:
    """Time per FLOP against FLOPs, log-log, one panel per layer, a line per column and sweep."""
    plt = _pyplot()
    layers = list(dict.fromkeys(p["layer"] for p in points))
    figure, axes = plt.subplots(1, len(layers), figsize=(6 * len(layers), 5), squeeze=False,
                                constrained_layout=True)
    for axis, layer in zip(axes[0], layers):
        for sweep, style in (("batch", "-o"), ("image", "--s")):
            mine = [p for p in points if p["layer"] == layer and p["sweep"] == sweep]
            names = list(dict.fromkeys(n for p in mine for n in p["times_ms"]["forward"]))
            for i, name in enumerate(names):
                got = [(p["flops_forward"], p["times_ms"]["forward"][name] * 1e6
                        / p["flops_forward"]) for p in mine if name in p["times_ms"]["forward"]]
                axis.loglog(*zip(*got), style, color=f"C{i}", label=f"{name} ({sweep})",
                            markersize=4)
        axis.set_xlabel("FLOPs per forward call")
        axis.set_ylabel("ns per FLOP (lower is faster)")
        axis.set_title(layer)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="x-small")
    figure.suptitle(f"forward, float32: batch {SCALING_BATCHES[0]}..{SCALING_BATCHES[-1]} "
                    f"(solid), image side {SCALING_SIZES[0]}..{SCALING_SIZES[-1]} at batch 1 "
                    "(dashed)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _scaling(out: Path, progress) -> None:
    points = []
    for layer, sweep, case in progress(list(scaling_cases())):
        row = harness.run_case(case, min_repeats=3, budget_s=0.3, passes=("forward",),
                               columns=SCALING_COLUMNS)
        points.append({"layer": layer, "sweep": sweep, "batch": case.batch, "size": case.size,
                       **row})
        times = row["times_ms"]["forward"]
        print(f"{case.name:24s} {case.spec.flops / 1e9:8.3f} GFLOP  "
              + "  ".join(f"{n} {ms:8.2f} ms" for n, ms in times.items()), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps({"machine": harness.machine(), "points": points},
                                                 indent=2))
    write_scaling_chart(points, out / "scaling.png")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


def bench(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tconv bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help="cases to run (default: all): "
                             f"{', '.join(c.name for c in harness.CASES)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"the small cases only ({', '.join(harness.QUICK)}), fewer repeats")
    parser.add_argument("--scaling", action="store_true",
                        help=f"sweep batch {SCALING_BATCHES[0]}..{SCALING_BATCHES[-1]} and image "
                             f"side {SCALING_SIZES[0]}..{SCALING_SIZES[-1]} on "
                             f"{' and '.join(SCALING_LAYERS)} (forward): scaling.json/.png")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for the JSON and PNG (default: ./bench-results)")
    args = parser.parse_args(argv)
    known = {c.name: c for c in harness.CASES}
    unknown = [name for name in args.cases if name not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(known)}")

    from tqdm import tqdm

    def progress(items):
        return tqdm(items, unit="case", file=sys.stderr)

    if args.scaling:
        _scaling(args.out, progress)
        return 0
    chosen = [known[n] for n in (args.cases or (harness.QUICK if args.quick else known))]
    min_repeats, budget_s = (3, 0.2) if args.quick else (5, 1.0)
    # The ceiling: the faster of a reading before the cases and one after (a single reading
    # after the 3-D layers' large buffers once read 88 GFLOP/s on a machine that gives 149).
    sgemm = harness.sgemm_gflops()
    rows = []
    for case in progress(chosen):
        rows.append(harness.run_case(case, min_repeats=min_repeats, budget_s=budget_s))
    sgemm = max(sgemm, harness.sgemm_gflops())
    print(format_table(rows, sgemm))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": harness.machine(), "sgemm_gflops": sgemm, "cases": rows,
              "geomean_ratio": geomean_ratios(rows)}
    (args.out / "bench.json").write_text(json.dumps(result, indent=2))
    write_chart(rows, args.out / "bench.png")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] != "bench":
        print("usage: tconv bench [CASE ...] [--quick] [--scaling] [--out DIR]\n\n" + __doc__ +
              "\n" + harness.__doc__, file=sys.stderr)
        return 2
    return bench(argv[1:])
