"""The A/B hold-out's test in simulation: its false-positive rate and power when read after every look.

Each simulated experiment is read at --looks looks; before each look --users new users are served, a
--control-share of them in control (drawn per user). Control's users hit with the base rate, treatment's
with the base rate plus the uplift. A look reads the cumulative counts with `ab.look_of`, the function the
`measure` stage calls (the always-valid p-value of the mixture sequential test, its running minimum over the
looks), and the experiment reports a difference at the first look whose p-value is under 0.05. Beside it, the
fault the sequential test replaces: a fixed-horizon two-proportion z-test read at every look.

Printed: for each uplift and size, the share of experiments that reported a difference (the false-positive
rate where the uplift is 0, the power elsewhere), with its exact 95% interval, and the median look at which
the difference was first reported. Pure Python: no Spark, no data.

    .venv/bin/python benchmarks/ab_simulation.py [--experiments 2000] [--looks 14] [--base-rate 0.05]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ecom_lakehouse.ml import ab, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=2_000, help="simulated experiments per row (default 2000)")
    parser.add_argument("--looks", type=int, default=14, help="looks per experiment: daily for two weeks (default 14)")
    parser.add_argument("--base-rate", type=float, default=0.05, help="control's hit rate (default 0.05)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000],
                        help="new users served before each look (default: 1,000 and 10,000)")
    parser.add_argument("--uplifts", type=float, nargs="+", default=[0.0, 0.005, 0.01, 0.02, 0.05],
                        help="treatment's hit rate minus control's (default 0, +0.5, +1, +2, +5 points)")
    args = parser.parse_args()
    started = time.time()
    print(f"{args.experiments:,} experiments a row, {args.looks} looks, control share {ab.CONTROL_SHARE:g}, "
          f"base hit rate {args.base_rate:.1%}, mixing sd {ab.MIXING_SD:g}, alpha {ab.ALPHA:g}")
    print(f"{'users/look':>10} {'uplift':>7}   {'always-valid test: reported [95% CI]':<38} {'median look':>11}   "
          f"{'z-test read at every look':<27}")
    for size in args.sizes:
        for uplift in args.uplifts:
            cells = []
            for test in (None, ab.peeking_z_look):
                firsts = [ab.simulated_first_rejection(np.random.default_rng(seed), size, args.looks, args.base_rate,
                                                       uplift, test=test) for seed in range(args.experiments)]
                found = [f for f in firsts if f is not None]
                low, high = stats.clopper_pearson(len(found), len(firsts))
                median = f"{statistics.median(found) + 1:g}" if found else "-"
                cells.append((f"{len(found) / len(firsts):6.1%} [{low:.1%}, {high:.1%}]", median))
            print(f"{size:>10,} {uplift:>+7.1%}   {cells[0][0]:<38} {cells[0][1]:>11}   {cells[1][0]:<27}")
    print(f"in {time.time() - started:.1f}s")


if __name__ == "__main__":
    main()
