"""Peak memory of each column of ``tconv bench`` on each case, each in a process of its own.

    python tools/bench_rss.py [COLUMN ...]     # default: every column

For every case, a process builds the column's callables and inputs, then runs the forward and the
forward+backward once; the table reports how far the process's peak RSS rose above the RSS
after the imports and the inputs (the workspace the implementation took on top of its inputs),
in MB. One process per column and case, since peak RSS only grows; the columns come from
``tconv.bench.CPU_COLUMNS``, which names them without importing the frameworks, so torch and
TensorFlow stay out of the NumPy column's peak.
"""

import resource
import subprocess
import sys

from tconv import bench


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(column: str, case_name: str) -> float:
    case = {c.name: c for c in bench.CASES}[case_name]
    passes = bench.CPU_COLUMNS[column][0](case, *bench.case_inputs(case))
    before = _peak_mb()
    for pass_name in bench.PASSES:
        passes[pass_name]()
    return _peak_mb() - before


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--one":
        print(f"{_measure(argv[1], argv[2]):.0f}", flush=True)
        return 0
    columns = argv or list(bench.CPU_COLUMNS)
    unknown = [c for c in columns if c not in bench.CPU_COLUMNS]
    if unknown:
        print(f"unknown column(s) {unknown}; columns: {', '.join(bench.CPU_COLUMNS)}",
              file=sys.stderr)
        return 2
    print("MB above inputs and imports, forward + forward+backward once".ljust(28))
    print(f"{'case':12s}" + "".join(f"{c:>22s}" for c in columns), flush=True)
    for case in bench.CASES:
        cells = []
        for column in columns:
            done = subprocess.run([sys.executable, __file__, "--one", column, case.name],
                                  capture_output=True, text=True)
            cells.append(done.stdout.strip() if done.returncode == 0
                         else done.stderr.strip().splitlines()[-1].split(":")[0])
        print(f"{case.name:12s}" + "".join(f"{cell:>22s}" for cell in cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
