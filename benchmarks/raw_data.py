"""Generated raw CSVs for the benchmarks, written to a folder of their own."""
from __future__ import annotations

from pathlib import Path


def generated(out: Path, scale: float, seed: int, taste: bool, strength: float = 1.0) -> Path:
    from ecom_lakehouse.generator import GeneratorOptions, generate

    generate(out, GeneratorOptions(scale=scale, seed=seed, taste=taste, taste_strength=strength))
    return out
