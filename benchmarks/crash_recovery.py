"""Kill the pipeline with SIGKILL at random moments, rerun it, and check that nothing was lost or
written twice.

First runs bronze -> silver -> gold uninterrupted, each stage as its own `ecom-lakehouse` process,
timing each process and keeping a copy of the lakehouse before each stage. Then, for each of
`--kills` trials: picks a stage and a moment within that stage's measured run time at random
(seeded), starts the stage on a copy of the lakehouse as it was before that stage, SIGKILLs the
whole process group (the Spark JVM included) at that moment, then reruns bronze, silver and gold to
the end in one process. Every Delta table of bronze, silver and gold (quarantines and the file log
included) must then hold exactly what the uninterrupted run holds: the same row count and the same
order-independent fingerprint of its rows (a sum of per-row xxhash64), leaving out only the per-run
columns `_ingested_at`, `_batch_id` and `_stream_id`. A few bad rows are appended to the generated
order items first, so that both quarantines have rows to lose or double.

    python benchmarks/crash_recovery.py --scale 0.01 --kills 20
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import raw_data
from pyspark.sql import functions as F

STAGES = ("bronze", "silver", "gold")
PER_RUN_COLUMNS = ("_ingested_at", "_batch_id", "_stream_id")
CLI = str(Path(sys.executable).with_name("ecom-lakehouse"))
# bronze -> silver -> gold in one process, through the CLI's own entry point.
RERUN = ("import sys\nfrom ecom_lakehouse.cli import main\n"
         "for stage in ('bronze', 'silver', 'gold'):\n"
         "    code = main([stage, '--raw', sys.argv[1], '--lakehouse', sys.argv[2]])\n"
         "    if code:\n        sys.exit(code)\n")


def add_bad_rows(raw: Path) -> int:
    """Appends order items that bronze must quarantine (field count, timestamp, number) and one
    whose order does not exist (silver quarantines it). Returns how many."""
    path = raw / "order_items.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, last = rows[0], rows[-1]
    next_id = int(last[header.index("id")]) + 1

    def variant(offset: int, **values: str) -> list[str]:
        row = dict(zip(header, last, strict=True), id=str(next_id + offset), **values)
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


def reference_run(raw: Path, work: Path, log) -> dict[str, float]:
    """bronze, silver, gold uninterrupted in work/reference; keeps work/before-<stage> copies.
    Returns each stage process's seconds."""
    lake, seconds = work / "reference", {}
    for stage in STAGES:
        if lake.exists():
            shutil.copytree(lake, work / f"before-{stage}")
        started = time.time()
        subprocess.run(stage_command(stage, raw, lake), stdout=log, stderr=subprocess.STDOUT, check=True)
        seconds[stage] = time.time() - started
    return seconds


def kill_at(raw: Path, lake: Path, stage: str, delay: float, log) -> bool:
    """Runs `stage` and SIGKILLs its process group `delay` seconds after the start.
    False when the stage finished first (no kill happened)."""
    proc = subprocess.Popen(stage_command(stage, raw, lake), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the JVM dies with it
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def delta_tables(lake: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(lake)) for layer in STAGES for p in (lake / layer).glob("*/_delta_log"))


def fingerprint(spark, path: Path) -> tuple[int, int]:
    df = spark.read.format("delta").load(str(path))
    columns = [c for c in df.columns if c not in PER_RUN_COLUMNS]
    row_hash = F.xxhash64(*[F.col(f"`{c}`") for c in columns]).cast("decimal(38,0)")
    count, total = df.agg(F.count("*"), F.sum(row_hash)).first()
    return int(count), int(total or 0)


def compare(spark, reference: dict[str, tuple[int, int]], lake: Path) -> list[str]:
    """Differences between a lakehouse and the reference fingerprints, one line each (empty: identical)."""
    actual = delta_tables(lake)
    problems = [f"{t}: missing" for t in reference if t not in actual]
    problems += [f"{t}: not in the reference" for t in actual if t not in reference]
    for table in (t for t in reference if t in actual):
        want, got = reference[table], fingerprint(spark, lake / table)
        if want != got:
            problems.append(f"{table}: {got[0]:,} rows vs {want[0]:,} in the reference, fingerprints "
                            f"{'equal' if want[1] == got[1] else 'differ'}")
    # Delta keeps every table's log in a driver-side cache: 20 trials x 24 tables fill a default heap.
    spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.01, help="generator scale (default %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="generator and kill-schedule seed (default %(default)s)")
    parser.add_argument("--kills", type=int, default=20, help="random kills (default %(default)s)")
    parser.add_argument("--keep", help="keep the lakehouses and stage logs in this folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="ecom-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    raw = raw_data.generated(work / "raw", args.scale, args.seed, taste=False)
    print(f"appended {add_bad_rows(raw)} bad order items to {raw / 'order_items.csv'}", flush=True)

    from ecom_lakehouse.session import get_spark

    rng = random.Random(args.seed)
    outcomes = []
    with open(work / "stages.log", "w") as log:
        seconds = reference_run(raw, work, log)
        print("reference: " + ", ".join(f"{s} {t:.0f}s" for s, t in seconds.items()) + " (one process each)", flush=True)
        spark = get_spark("local", "ecom_lakehouse_crash_recovery")
        tables = delta_tables(work / "reference")
        reference = {t: fingerprint(spark, work / "reference" / t) for t in tables}
        for trial in range(1, args.kills + 1):
            stage = rng.choice(STAGES)
            delay = rng.uniform(0, seconds[stage])
            lake = work / f"trial-{trial}"
            if (work / f"before-{stage}").exists():
                shutil.copytree(work / f"before-{stage}", lake)
            killed = kill_at(raw, lake, stage, delay, log)
            started = time.time()
            rerun = subprocess.run([sys.executable, "-c", RERUN, str(raw), str(lake)], stdout=log, stderr=subprocess.STDOUT)
            problems = compare(spark, reference, lake) if rerun.returncode == 0 else [f"rerun exited {rerun.returncode}"]
            outcomes.append((trial, stage, delay, killed, time.time() - started, problems))
            print(f"trial {trial:>2}: {'killed' if killed else 'NOT killed (finished first)'} {stage} at {delay:5.1f}s; "
                  f"rerun {time.time() - started:4.0f}s; "
                  f"{'all ' + str(len(tables)) + ' tables equal' if not problems else '; '.join(problems)}", flush=True)
            if not args.keep:
                shutil.rmtree(lake, ignore_errors=True)

    quarantined = {layer: reference[f"{layer}/_quarantine"][0] for layer in ("bronze", "silver")}
    spark.stop()
    print(f"\nscale {args.scale}, seed {args.seed}; {len(tables)} Delta tables compared with the uninterrupted run "
          f"(its quarantines: bronze {quarantined['bronze']}, silver {quarantined['silver']} rows)\n")
    print("| stage killed | kills | moments (s after the stage's start) | tables equal after the rerun |")
    print("|---|---:|---|---|")
    failed = any(problems for *_, problems in outcomes)
    for stage in STAGES:
        mine = sorted((o for o in outcomes if o[1] == stage and o[3]), key=lambda o: o[2])
        if mine:
            differ = [f"trial {o[0]}: {'; '.join(o[5])}" for o in mine if o[5]]
            print(f"| {stage} (of {seconds[stage]:.0f}s) | {len(mine)} | {', '.join(f'{o[2]:.1f}' for o in mine)} | "
                  f"{len(mine) - len(differ)} of {len(mine)}: all {len(tables)} tables equal |"
                  + (" " + " / ".join(differ) if differ else ""))
    not_killed = sum(1 for o in outcomes if not o[3])
    if not_killed:
        print(f"\n{not_killed} trial(s) finished before their kill moment (no kill).")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
