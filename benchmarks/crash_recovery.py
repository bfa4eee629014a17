"""Kill the pipeline with SIGKILL in the middle of a stage, rerun it, and check that nothing was
lost or written twice.

First builds a reference lakehouse from the raw files with bronze -> silver -> gold, uninterrupted.
Then, for each kill point, on a fresh lakehouse: runs the same stages as separate `ecom-lakehouse`
processes, SIGKILLs the running one (its Spark JVM included) the moment a given Delta table gets its
first commit, so the kill lands between that commit and the next write (the quarantine, the
streaming checkpoint, the next table), then reruns all three stages to the end. Every Delta table of
bronze, silver and gold must then hold exactly what the reference holds:
the same row count and the same order-independent fingerprint of its rows (a sum of per-row
xxhash64), leaving out only the per-run `_ingested_at` and `_batch_id` columns. A few bad rows are
appended to the generated order items first, so that both quarantines have rows to lose or double.

    python benchmarks/crash_recovery.py --scale 0.05
"""
from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

import raw_data

STAGES = ("bronze", "silver", "gold")
# (stage being killed, table whose first commit triggers the kill)
KILL_POINTS = (("bronze", "bronze/inventory_items"), ("silver", "silver/inventory_items"),
               ("gold", "gold/product_performance"))
CLI = str(Path(sys.executable).with_name("ecom-lakehouse"))


def add_bad_rows(raw: Path) -> int:
    """Appends order items that bronze must quarantine (field count, timestamp, number) and one
    whose order does not exist (silver quarantines it). Returns how many."""
    path = raw / "order_items.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, last = rows[0], rows[-1]
    next_id = int(last[header.index("id")]) + 1

    def variant(offset: int, **values: str) -> list[str]:
        row = dict(zip(header, last), id=str(next_id + offset), **values)
        return [row[c] for c in header]

    bad = [last[:3],
           variant(0, created_at="22/04/2021 12.16.45"),
           variant(1, sale_price="13,92499997"),
           variant(2, order_id="999999999")]
    with open(path, "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(bad)
    return len(bad)


def stage_command(stage: str, raw: Path, lake: Path) -> list[str]:
    return [CLI, stage, "--raw", str(raw), "--lakehouse", str(lake)]


def run_stages(raw: Path, lake: Path, log) -> float:
    started = time.time()
    for stage in STAGES:
        subprocess.run(stage_command(stage, raw, lake), stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - started


def run_until_killed(raw: Path, lake: Path, stage: str, trigger: Path, log) -> float:
    """Runs the stages up to `stage` and SIGKILLs that one when `trigger` (a commit file) exists.
    Returns how long after the commit the process group died."""
    for earlier in STAGES[:STAGES.index(stage)]:
        subprocess.run(stage_command(earlier, raw, lake), stdout=log, stderr=subprocess.STDOUT, check=True)
    proc = subprocess.Popen(stage_command(stage, raw, lake), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the JVM dies with it
    while not trigger.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{stage} finished before {trigger} appeared: pick a later kill point")
        time.sleep(0.05)
    seen = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.time() - seen


def delta_tables(lake: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(lake)) for layer in STAGES for p in (lake / layer).glob("*/_delta_log"))


def fingerprint(spark, path: Path) -> tuple[int, int]:
    df = spark.read.format("delta").load(str(path))
    columns = [c for c in df.columns if c not in ("_ingested_at", "_batch_id")]
    row_hash = F.xxhash64(*[F.col(f"`{c}`") for c in columns]).cast("decimal(38,0)")
    count, total = df.agg(F.count("*"), F.sum(row_hash)).first()
    return int(count), int(total or 0)


def compare(spark, reference: Path, lake: Path) -> list[str]:
    """Differences between two lakehouses, one line each (empty: identical)."""
    problems = []
    expected, actual = delta_tables(reference), delta_tables(lake)
    problems += [f"{t}: missing" for t in expected if t not in actual]
    problems += [f"{t}: not in the reference" for t in actual if t not in expected]
    for table in (t for t in expected if t in actual):
        want, got = fingerprint(spark, reference / table), fingerprint(spark, lake / table)
        if want != got:
            problems.append(f"{table}: {got[0]:,} rows vs {want[0]:,} in the reference, fingerprints "
                            f"{'equal' if want[1] == got[1] else 'differ'}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.05, help="generator scale (default %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default %(default)s)")
    parser.add_argument("--keep", help="keep the lakehouses and stage logs in this folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="ecom-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = raw_data.generated(work / "raw", args.scale, args.seed, taste=False)
    print(f"appended {add_bad_rows(raw)} bad order items to {raw / 'order_items.csv'}", flush=True)
    with open(work / "stages.log", "w") as log:
        clean_seconds = run_stages(raw, work / "reference", log)
        print(f"reference: bronze -> silver -> gold uninterrupted in {clean_seconds:.0f}s", flush=True)
        outcomes = []
        for stage, table in KILL_POINTS:
            lake = work / f"killed-in-{stage}"
            delay = run_until_killed(raw, lake, stage, lake / table / "_delta_log" / f"{0:020d}.json", log)
            resume_seconds = run_stages(raw, lake, log)
            outcomes.append((stage, table, delay, resume_seconds, lake))
            print(f"killed in {stage} {delay:.2f}s after the first commit of {table}; rerun finished in "
                  f"{resume_seconds:.0f}s", flush=True)

    from ecom_lakehouse.session import get_spark

    spark = get_spark("local", "ecom_lakehouse_crash_recovery")
    tables = delta_tables(work / "reference")
    quarantined = {layer: fingerprint(spark, work / "reference" / layer / "_quarantine")[0] for layer in ("bronze", "silver")}
    print(f"\nscale {args.scale}, seed {args.seed}; {len(tables)} Delta tables compared with the uninterrupted run "
          f"(its quarantines: bronze {quarantined['bronze']}, silver {quarantined['silver']} rows)\n")
    print("| killed in | right after the first commit of | rerun (bronze→gold) | tables identical to the reference |")
    print("|---|---|---:|---|")
    failed = False
    for stage, table, _, resume_seconds, lake in outcomes:
        problems = compare(spark, work / "reference", lake)
        failed |= bool(problems)
        print(f"| {stage} | `{table}` | {resume_seconds:.0f}s | "
              f"{'all ' + str(len(tables)) if not problems else '; '.join(problems)} |")
    spark.stop()
    if not args.keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
