"""Times generation, each stage and each ML stage, against this machine's floor, at several scales.

The floor is one Spark pass that just reads every raw CSV and writes it as Delta: what any
ingestion must pay at least. Peak memory is the highest resident set size seen of the
Python driver plus the JVM, sampled every 0.2 s.

    python benchmarks/bench_pipeline.py                 # scales 0.1 and 1
    python benchmarks/bench_pipeline.py --scales 0.1 1 10
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil


class PeakMemory:
    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            rss = me.memory_info().rss
            for child in me.children(recursive=True):  # the JVM; short-lived helpers may vanish
                try:
                    rss += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, rss)
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def timed(fn):
    with PeakMemory() as mem:
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
    return seconds, mem.peak, result


def floor_pass(spark, raw: Path, out: Path) -> None:
    from ecom_lakehouse.schemas import TABLES

    for table in TABLES:
        spark.read.option("header", "true").csv(str(raw / f"{table}.csv")).write.format("delta").mode("overwrite").save(str(out / table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--workdir", default=None, help="where data and tables go (default: a temp dir, removed)")
    args = parser.parse_args()

    from ecom_lakehouse import bronze, gold, silver
    from ecom_lakehouse.ml import recommend, segmentation
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.generator import GeneratorOptions, generate
    from ecom_lakehouse.session import get_spark

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ecom-bench-"))
    spark = get_spark("local", "ecom_lakehouse_bench")
    quiet = lambda *a, **k: None  # noqa: E731
    rows = []
    for scale in args.scales:
        raw, root = work / f"raw-{scale}", work / f"lakehouse-{scale}"
        shutil.rmtree(raw, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        sec, mem, counts = timed(lambda: generate(raw, GeneratorOptions(scale=scale, seed=42)))
        n = sum(counts.values())
        rows.append((scale, "generate", sec, n, mem))
        floor_sec, mem, _ = timed(lambda: floor_pass(spark, raw, work / f"floor-{scale}"))
        rows.append((scale, "floor: read CSV, write Delta", floor_sec, n, mem))
        lake = Lakehouse(raw=str(raw), root=str(root))
        for name, stage in (("bronze", lambda: bronze.run(spark, lake, echo=quiet)),
                            ("silver", lambda: silver.run(spark, lake, echo=quiet)),
                            ("gold", lambda: gold.run(spark, lake, echo=quiet)),
                            ("segment (ML)", lambda: segmentation.run(spark, lake, echo=quiet)),
                            ("recommend (ML)", lambda: recommend.run(spark, lake, echo=quiet))):
            sec, mem, _ = timed(stage)
            rows.append((scale, name, sec, n, mem))
        if not args.workdir:
            shutil.rmtree(raw, ignore_errors=True)

    floors = {r[0]: r[2] for r in rows if r[1].startswith("floor")}
    print(f"\nmachine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"Spark {spark.version}; input rows = all 7 tables\n")
    print("| scale | step | seconds | input rows/s | x floor | peak memory (driver+JVM) |")
    print("|---|---|---:|---:|---:|---:|")
    for scale, step, sec, n, mem in rows:
        ratio = "" if step == "generate" else f"{sec / floors[scale]:.1f}"
        print(f"| {scale:g} | {step} | {sec:.1f} | {n / sec:,.0f} | {ratio} | {mem / 2**30:.1f} GiB |")
    spark.stop()
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
