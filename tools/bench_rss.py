"""Peak memory of each column of ``tconv bench``, each in a process of its own.

    python tools/bench_rss.py [COLUMN ...]     # default: every column

A column runs every case's forward and forward+backward once; the line reports the process's
peak RSS and how far it rose above the RSS after the imports and the inputs (the workspace the
implementation took on top of its inputs). One process per column, since peak RSS only grows;
the columns come from ``tconv.bench.CPU_COLUMNS``, which names them without importing the
frameworks, so torch and TensorFlow stay out of the NumPy column's peak.
"""

import resource
import subprocess
import sys

from tconv import bench


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(column: str) -> str:
    build = bench.CPU_COLUMNS[column][0]
    prepared = [build(case, *bench.case_inputs(case)) for case in bench.CASES]
    before = _peak_mb()
    for case_passes in prepared:
        for pass_name in bench.PASSES:
            case_passes[pass_name]()
    peak = _peak_mb()
    return f"{column:20s} peak RSS {peak:7.0f} MB, {peak - before:6.0f} MB above inputs and imports"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--one":
        print(_measure(argv[1]), flush=True)
        return 0
    for column in argv or bench.CPU_COLUMNS:
        if column not in bench.CPU_COLUMNS:
            print(f"unknown column {column!r}; columns: {', '.join(bench.CPU_COLUMNS)}",
                  file=sys.stderr)
            return 2
        done = subprocess.run([sys.executable, __file__, "--one", column],
                              capture_output=True, text=True)
        print(done.stdout.strip() if done.returncode == 0
              else f"{column:20s} not run here: {done.stderr.strip().splitlines()[-1]}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
