"""Each strategy against chance and against the oracle as the planted taste grows.

Generates taste data at each strength (`generate --taste-strength`: the share of order items drawn by
the user's taste group, the rest uniform within the user's gender as in thelook) and runs the
recommender's evaluation with the generator's truth, which scores a reference list, `oracle`: each
user's taste group's likeliest unbought products. The oracle is the ceiling: no strategy can expect
more hits. At strength 0 it is chance itself.

    python benchmarks/taste_strength.py --scale 0.1 --strengths 0 0.25 0.5 0.75 1
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import raw_data


def best_share(result) -> str:
    """The best servable strategy's hits as a share of the oracle's."""
    from ecom_lakehouse.ml import recommend

    hits = {v.strategy: v.hits for v in result.verdicts}
    best = max(recommend.SERVABLE, key=lambda name: hits[name])
    return f"{best} {hits[best] / hits[recommend.ORACLE]:.0%}" if hits[recommend.ORACLE] else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.1, help="scale of the generated data (0.1: 10,000 users)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="taste strengths to generate, each between 0 and 1")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from ecom_lakehouse.ml import recommend
    from ecom_lakehouse.session import get_spark

    spark = get_spark("local", "ecom_lakehouse_taste_strength")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for strength in args.strengths:
            raw = raw_data.generated(Path(work) / f"strength-{strength:g}", args.scale, args.seed, taste=True,
                                     strength=strength)
            started = time.time()
            events, products = recommend.from_export(spark, str(raw))
            result = recommend.evaluate(events.persist(), products, echo=lambda *_: None,
                                        truth=recommend.truth_from(spark, str(raw)))
            results[strength] = (result, time.time() - started)  # printed as it goes: the table leaves it out
            events.unpersist()
            print(f"strength {strength:g}: {time.time() - started:.0f}s", flush=True)
    spark.stop()

    print(f"\nscale {args.scale:g}, seed {args.seed}; each strategy's served lists of 10 on the warm test users: "
          "hits of users (hit rate), and the ratio to chance's expected hits\n")
    print("| strategy | " + " | ".join(f"strength {s:g}" for s in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in (*recommend.STRATEGIES, recommend.ORACLE):
        cells = []
        for result, _ in results.values():
            v = next(v for v in result.verdicts if v.strategy == name)
            ratio = f"{v.hits / v.chance_hits:.2f}x" if v.chance_hits else "-"
            cells.append(f"{v.hits:,} of {v.users:,} ({v.hits / v.users:.1%}), {ratio}" if v.users else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| chance (expected hits) | " + " | ".join(f"{r.chance_hits:.1f}" for r, _ in results.values()) + " |")
    print("| best strategy's hits, share of the oracle's | " + " | ".join(
        f"{best_share(r)}" for r, _ in results.values()) + " |")
    print("| data mode (taste_signal) | " + " | ".join(r.data_mode for r, _ in results.values()) + " |")
    print("| served to users with history | " + " | ".join(r.served for r, _ in results.values()) + " |")


if __name__ == "__main__":
    main()
