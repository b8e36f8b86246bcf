"""The golden-output data that ``tools/make_golden.py`` generates from TensorFlow/Keras.

``tests/golden/manifest.json`` lists every case (name, kind, JSON params, array shapes) and the
geometries TensorFlow refused; ``tests/golden/<kind>.npz`` holds the arrays as ``<name>/<array>``.
Never edit these files by hand: regenerate them with the script.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@dataclass(frozen=True)
class GoldenCase:
    name: str
    kind: str
    params: dict
    arrays: dict

    def __str__(self) -> str:  # pytest ids
        return self.name


@functools.cache
def manifest() -> dict:
    return json.loads((GOLDEN_DIR / "manifest.json").read_text())


@functools.cache
def _load_kind(kind: str) -> tuple[GoldenCase, ...]:
    cases = [case for case in manifest()["cases"] if case["kind"] == kind]
    if not cases:
        raise ValueError(f"kind must be one of {sorted(manifest()['files'])}, got {kind!r}")
    with np.load(GOLDEN_DIR / manifest()["files"][kind]) as stored:
        return tuple(
            GoldenCase(case["name"], kind, case["params"],
                       {key: stored[f"{case['name']}/{key}"] for key in case["arrays"]})
            for case in cases)


def load_cases(kind: str) -> list[GoldenCase]:
    """Every case of one kind ("op", "tutorial", "layer"), arrays loaded, in manifest order."""
    return list(_load_kind(kind))
