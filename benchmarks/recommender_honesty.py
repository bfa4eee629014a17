"""ALS against the baselines on faithful and on --taste data, the checks' verdicts, and the
negative control (a planted leak) on the faithful data.

Generates both kinds of data, reads the purchases straight from the CSVs and runs the
recommender's evaluation (time split, validation grid, exact metrics, exact checks). The leakage
check needs a few expected chance hits to say anything, so the faithful data gets its own,
larger scale (scale 1 expects about 5).

    python benchmarks/recommender_honesty.py --scale 0.1 --faithful-scale 1
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import raw_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="scale of the taste data")
    parser.add_argument("--faithful-scale", type=float, default=1.0, help="scale of the faithful data")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from ecom_lakehouse.ml import recommend
    from ecom_lakehouse.ml.baselines import FALLBACK
    from ecom_lakehouse.session import get_spark
    from ecom_lakehouse.summary import verdict_lines

    spark = get_spark("local", "ecom_lakehouse_reco_bench")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for label, mode, scale, leak in (("faithful", "faithful", args.faithful_scale, False),
                                         ("faithful + planted leak", "faithful", args.faithful_scale, True),
                                         ("taste", "taste", args.scale, False)):
            raw = Path(work) / mode
            if not (raw / "users.csv").exists():
                raw_data.generated(raw, scale, args.seed, taste=mode == "taste")
            started = time.time()
            events, products = recommend.from_export(spark, str(raw))
            # the data mode is left to the taste_signal check, as a run leaves it
            result = recommend.evaluate(events.persist(), products, echo=lambda *_: None, plant_leak=leak)
            results[label] = (result, scale, time.time() - started)
            events.unpersist()
    shown = {k: v for k, v in results.items() if "leak" not in k}
    print(f"\nseed {args.seed}; warm test users; hit rate@10 / NDCG@10 / MAP\n")
    print("| model | " + " | ".join(f"{m} data (scale {s:g})" for m, (_, s, _) in shown.items()) + " |")
    print("|---|" + "---:|" * len(shown))
    for model in recommend.STRATEGIES:
        cells = [f"{r.metrics[model]['hit_rate@10']:.4f} / {r.metrics[model]['ndcg@10']:.4f} / {r.metrics[model]['map']:.4f}"
                 for r, _, _ in shown.values()]
        print(f"| {model} | " + " | ".join(cells) + " |")
    print(f"| cold users: {FALLBACK} | " + " | ".join(
        f"{r.cold['hit_rate@10']:.4f} / {r.cold['ndcg@10']:.4f} / {r.cold['map']:.4f}" for r, _, _ in shown.values()) + " |")
    print("| warm / cold test users | " + " | ".join(
        f"{int(r.metrics['als']['users']):,} / {int(r.cold['users']):,}" for r, _, _ in shown.values()) + " |")
    print("| repurchases left out of the labels | " + " | ".join(
        f"{r.repurchase_share:.1%}" for r, _, _ in shown.values()) + " |")
    print("| served to users with history | " + " | ".join(r.served for r, _, _ in shown.values()) + " |")
    print("\n| data | check | verdict | statistic | 95% interval | p |\n|---|---|---|---:|---|---:|")
    for label, (r, _, _) in results.items():
        for c in r.checks:
            print(f"| {label} | {c.check} | {c.verdict} | {c.statistic:+.4g} | [{c.interval_low:.4g}, {c.interval_high:.4g}]"
                  f" | {c.p_value:.2g} |")
    for label, (r, _, _) in results.items():
        print(f"\nThe verdict table, {label} data:\n")
        for line in verdict_lines(recommend.verdict_rows(r, label, None)):
            print("    " + line)
    for label, (r, _, seconds) in results.items():
        print(f"\n{label}: evaluation {seconds:.0f}s; ALS coverage {r.coverage:.1%}, cross-category "
              f"{r.cross_category:.1%}, params {r.best_params}")
        for c in r.checks:
            print(f"  {c.check}: {c.verdict}: {c.detail}" + (f" -> {c.consequence}" if c.consequence else ""))
    spark.stop()


if __name__ == "__main__":
    main()
