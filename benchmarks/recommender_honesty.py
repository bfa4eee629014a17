"""ALS against the baselines on faithful and on --taste data, side by side.

Generates both kinds of data at one scale, reads the purchases straight from the CSVs and runs
the recommender's evaluation (time split, validation grid, exact metrics, bootstrap intervals).

    python benchmarks/recommender_honesty.py --scale 0.1
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import raw_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from ecom_lakehouse.ml import recommend
    from ecom_lakehouse.session import get_spark

    spark = get_spark("local", "ecom_lakehouse_reco_bench")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for mode in ("faithful", "taste"):
            raw = raw_data.generated(Path(work) / mode, args.scale, args.seed, taste=mode == "taste")
            started = time.time()
            events, products = recommend.from_export(spark, str(raw))
            results[mode] = (recommend.evaluate(events.persist(), products, echo=lambda *_: None),
                             time.time() - started)
    print(f"\nscale {args.scale}, seed {args.seed}; warm test users; hit rate@10 / NDCG@10 / MAP\n")
    print("| model | " + " | ".join(f"{m} data" for m in results) + " |")
    print("|---|" + "---:|" * len(results))
    for model in recommend.MODELS:
        cells = [f"{r.metrics[model]['hit_rate@10']:.4f} / {r.metrics[model]['ndcg@10']:.4f} / {r.metrics[model]['map']:.4f}"
                 for r, _ in results.values()]
        print(f"| {model} | " + " | ".join(cells) + " |")
    print("| cold users: popularity within gender | " + " | ".join(
        f"{r.cold['hit_rate@10']:.4f} / {r.cold['ndcg@10']:.4f} / {r.cold['map']:.4f}" for r, _ in results.values()) + " |")
    print("| warm / cold test users | " + " | ".join(
        f"{int(r.metrics['als']['users']):,} / {int(r.cold['users']):,}" for r, _ in results.values()) + " |")
    for mode, (r, seconds) in results.items():
        ok, verdict = r.verdict(mode)
        print(f"\n{mode}: {'PASS' if ok else 'FAIL'}: {verdict}; ALS coverage {r.coverage:.1%}, "
              f"cross-category {r.cross_category:.1%}, params {r.best_params}; evaluation {seconds:.0f}s")
    spark.stop()


if __name__ == "__main__":
    main()
