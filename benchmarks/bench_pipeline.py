"""Times generation, each stage and each ML stage, against this machine's floor, at several scales,
then an incremental run on top of the largest scale's lakehouse. Each scale runs in a process (and a
JVM) of its own, as each scheduled run does.

The floor is one Spark pass that just reads every raw CSV and writes it as Delta: what any
ingestion must pay at least. Two more passes show what the stages would cost without their checks:
the floor's tables read and written again as Delta (what silver reads and writes), and one K-means
and one ALS fit with their outputs written (what segment and recommend fit and write, without the
other fits, the evaluation and the checks), at the smallest scale only, where the ratio targets are
read: after every stage at scale 10, its ALS top 10 for every buyer ran out of the 1 GB heap. Peak
memory is the highest resident set size seen of the Python driver plus the JVM, sampled every 0.2 s.
Each table is delivered as a folder (`<raw>/<table>/part-000.csv`), so the incremental run can drop a new file beside it: 1% more
events (new ids, copies of existing rows otherwise), the table that grows every day in thelook.

    python benchmarks/bench_pipeline.py                 # scales 0.1 and 1, then +1% events at 1
    python benchmarks/bench_pipeline.py --scales 1 10 --incremental-at 1   # the table in docs/performance.md
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyspark

from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.generator import GeneratorOptions, generate
from ecom_lakehouse.ml import recommend, segmentation
from ecom_lakehouse.session import get_spark
from ecom_lakehouse.stages import run_stage

# (row label, stage): each runs through the stage registry, as the CLI runs it, so its checks raise here too
STAGES = (("bronze", "bronze"), ("silver", "silver"), ("gold", "gold"), ("segment (ML)", "segment"),
          ("recommend (ML)", "recommend"))


FLOOR, COPY = "floor: read CSV, write Delta", "read Delta, write Delta"
UNCHECKED_ML = "one K-means and one ALS fit, written (no checks)"


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
        spark.read.option("header", "true").csv(str(raw / table)).write.format("delta").mode("overwrite").save(str(out / table))


def copy_pass(spark, floor: Path, out: Path) -> None:
    """Read every table the floor wrote and write it again as Delta: the least a layer that reads
    the one before it and writes all of it (silver) can pay."""
    from ecom_lakehouse.schemas import TABLES

    for table in TABLES:
        spark.read.format("delta").load(str(floor / table)).write.format("delta").mode("overwrite").save(str(out / table))


def unchecked_ml(spark, lake: Lakehouse, out: Path) -> None:
    """segment + recommend at their least: one K-means fit (k=4) on the buyers' scaled features and
    one ALS fit on all purchases (the grid's first point), each output written as Delta; no other k
    or seed, no validation grid, no evaluation, baselines or checks, no MLflow."""
    features = segmentation.buyers(lake.table("gold", "customer_features").read(spark))
    prepared = segmentation.feature_pipeline().fit(features)
    scaled = prepared.transform(features).persist()
    assigned = segmentation.kmeans(4, segmentation.SEED).fit(scaled).transform(scaled)
    assigned.select("user_id", "segment_id").write.format("delta").mode("overwrite").save(str(out / "segments"))
    scaled.unpersist()
    events = recommend.purchases(lake.table("silver", "order_items").read(spark),
                                 lake.table("silver", "users").read(spark)).persist()
    model = recommend.fit_als(events, recommend.GRID[0])
    recs = recommend.als_recommendations(model, events.select("user_id").distinct(), events)
    recs.write.format("delta").mode("overwrite").save(str(out / "recommendations"))
    events.unpersist()


def as_folders(raw: Path) -> None:
    """`<raw>/<table>.csv` -> `<raw>/<table>/part-000.csv`: the layout new deliveries are added to."""
    for path in sorted(raw.glob("*.csv")):
        (raw / path.stem).mkdir()
        path.rename(raw / path.stem / "part-000.csv")


def deliver_more_events(raw: Path, fraction: float) -> int:
    """Write `events/part-001.csv`: the first `fraction` of the events, with ids after the largest one.
    Streams through the file (flat in memory)."""
    first = raw / "events" / "part-000.csv"
    with first.open(newline="") as f:
        reader = csv.reader(f)
        next(reader)
        n, max_id = 0, 0
        for row in reader:
            n, max_id = n + 1, max(max_id, int(row[0]))
    wanted = int(n * fraction)
    with first.open(newline="") as f, (raw / "events" / "part-001.csv").open("w", newline="") as out:
        reader, writer = csv.reader(f), csv.writer(out, lineterminator="\n")
        writer.writerow(next(reader))
        for i, row in zip(range(wanted), reader, strict=False):
            writer.writerow([str(max_id + 1 + i), *row[1:]])
    return wanted


def measure_scale(scale: float, work: Path, incremental: bool, unchecked: bool, rows_to: Path) -> None:
    """Generate, floor, every stage (and the +1% events run) at one scale, in this process's Spark.
    Rows (scale, step, seconds, input rows, peak memory) go to `rows_to` as each is measured: an
    out-of-memory error kills a local JVM, and what was measured before it still counts."""
    quiet = lambda *a, **k: None  # noqa: E731
    rows = []

    def record(step: str, sec: float, n: int, mem: int) -> None:
        rows.append((scale, step, sec, n, mem))
        rows_to.write_text(json.dumps(rows))
        print(f"[bench] scale {scale:g} {step}: {sec:.1f} s, peak {mem / 2**30:.1f} GiB", flush=True)  # progress

    raw, root = work / f"raw-{scale}", work / f"lakehouse-{scale}"
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    sec, mem, counts = timed(lambda: generate(raw, GeneratorOptions(scale=scale, seed=42)))
    as_folders(raw)
    n = sum(counts.values())
    record("generate", sec, n, mem)
    spark = get_spark("local", "ecom_lakehouse_bench")
    # A first Delta write loads and compiles Delta's classes (seconds): outside every timing, so the
    # floor, which runs first, is not charged with it.
    spark.range(1).write.format("delta").mode("overwrite").save(str(work / f"warm-up-{scale}"))
    sec, mem, _ = timed(lambda: floor_pass(spark, raw, work / f"floor-{scale}"))
    record(FLOOR, sec, n, mem)
    sec, mem, _ = timed(lambda: copy_pass(spark, work / f"floor-{scale}", work / f"copy-{scale}"))
    record(COPY, sec, n, mem)
    lake = Lakehouse(raw=str(raw), root=str(root))

    def run_stages(inputs: int, prefix: str = "") -> None:
        for name, stage in STAGES:
            sec, mem, result = timed(lambda stage=stage: run_stage(stage, spark, lake, echo=quiet))
            record(prefix + name, sec, inputs, mem)
            # the stages run quietly: keep what the recommender's checks decided at this scale
            for check in getattr(result, "checks", None) or []:
                print(f"[bench] scale {scale:g} {prefix}{name}: check {check.check} {check.verdict}: {check.detail}"
                      + (f" -> {check.consequence}" if check.consequence else ""), flush=True)

    run_stages(n)
    if incremental:
        run_stages(deliver_more_events(raw, 0.01), "+1% events: ")
    if unchecked:  # last: were it to run out of heap, every row before it is kept
        sec, mem, _ = timed(lambda: unchecked_ml(spark, lake, work / f"unchecked-ml-{scale}"))
        record(UNCHECKED_ML, sec, n, mem)
    spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--workdir", default=None, help="where data and tables go (default: a temp dir, removed)")
    parser.add_argument("--no-incremental", dest="incremental", action="store_false",
                        help="skip the run that adds 1%% more events to a lakehouse")
    parser.add_argument("--incremental-at", type=float, default=None, metavar="SCALE",
                        help="the scale whose lakehouse gets 1%% more events (default: the largest)")
    # One scale in this process, rows to a JSON file: how the main process runs each scale.
    parser.add_argument("--one-scale", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-unchecked-ml", dest="unchecked", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--rows-to", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    incremental_at = args.incremental_at if args.incremental_at is not None else max(args.scales)
    if args.incremental and incremental_at not in args.scales:
        parser.error(f"--incremental-at {incremental_at:g} is not one of --scales")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ecom-bench-"))
    if args.one_scale is not None:
        measure_scale(args.one_scale, work, args.incremental, args.unchecked, Path(args.rows_to))
        return

    # Each scale in a process of its own, as each scheduled run is: a JVM that ran scale 1 carries
    # its caches into scale 10 (that combined run ran out of heap in silver at scale 10).
    rows, stopped_at = [], []
    for scale in args.scales:
        out = work / f"rows-{scale}.json"
        out.unlink(missing_ok=True)  # a --workdir may hold an earlier run's
        command = [sys.executable, __file__, "--one-scale", str(scale), "--rows-to", str(out), "--workdir", str(work)]
        if not (args.incremental and scale == incremental_at):
            command.append("--no-incremental")
        if scale != min(args.scales):
            command.append("--no-unchecked-ml")
        failed = subprocess.run(command).returncode != 0
        measured = [tuple(r) for r in json.loads(out.read_text())] if out.exists() else []
        rows += measured
        if failed:
            stopped_at.append(f"scale {scale:g} stopped after {measured[-1][1] if measured else 'nothing'!r} "
                              "(its error is above)")
        if not args.workdir:  # a larger scale's data need not wait beside this one's
            shutil.rmtree(work / f"raw-{scale}", ignore_errors=True)

    floors = {r[0]: r[2] for r in rows if r[1] == FLOOR}
    print(f"\nmachine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"Spark {pyspark.__version__}, each scale in its own process; input rows = all 7 tables "
          "(the new events for +1% rows)\n")
    print("| scale | step | seconds | input rows/s | x floor | peak memory (driver+JVM) |")
    print("|---|---|---:|---:|---:|---:|")
    for scale, step, sec, n, mem in rows:
        times_floor = "" if step == "generate" or scale not in floors else f"{sec / floors[scale]:.1f}"
        print(f"| {scale:g} | {step} | {sec:.1f} | {n / sec:,.0f} | {times_floor} | {mem / 2**30:.1f} GiB |")
    print()
    names = [name for name, _ in STAGES]

    def seconds(scale: float, steps, prefix: str = "") -> float:
        return sum(r[2] for r in rows if r[0] == scale and r[1] in {prefix + x for x in steps})

    def measured(scale: float, step: str) -> bool:
        return any(r[0] == scale and r[1] == step for r in rows)

    def ratio(scale: float, steps) -> str:
        if not all(measured(scale, step) for step in steps):
            return "not measured"
        return f"{seconds(scale, steps) / floors[scale]:.1f}x"

    for scale in (s for s in args.scales if s in floors):
        full = seconds(scale, names)
        print(f"scale {scale:g}: bronze..gold {ratio(scale, ['bronze', 'silver', 'gold'])} floor "
              # bronze's and silver's reads and writes without their checks, and gold as it is
              f"(floor + Delta copy + gold, no checks: {ratio(scale, [FLOOR, COPY, 'gold'])}), "
              f"segment+recommend {ratio(scale, ['segment (ML)', 'recommend (ML)'])} floor "
              f"(one fit each, no checks: {ratio(scale, [UNCHECKED_ML])}), "
              f"end to end {full:.0f} s = {ratio(scale, names)} floor")
        incremental = seconds(scale, names, "+1% events: ")
        if incremental:
            print(f"scale {scale:g}: +1% events end to end {incremental:.0f} s = {100 * incremental / full:.0f}% of the full run")
    base = min(args.scales)
    for scale in (s for s in args.scales if s != base):
        if not all(measured(s, name) for s in (base, scale) for name in names):
            continue
        growth = ", ".join(f"{name} {seconds(scale, [name]) / seconds(base, [name]):.1f}x" for name in names)
        print(f"scale {scale:g} against {base:g} ({scale / base:g}x the data): end to end "
              f"{seconds(scale, names) / seconds(base, names):.1f}x; {growth}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if stopped_at:
        sys.exit("bench: " + "; ".join(stopped_at))


if __name__ == "__main__":
    main()
