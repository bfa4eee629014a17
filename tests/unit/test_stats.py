"""The exact tests behind the model checks, against values computed by hand or by enumeration."""
import itertools
import math

import pytest

from ecom_lakehouse.ml import checks, stats


def test_poisson_binomial_matches_enumeration():
    groups = [(2, 0.1), (1, 0.5), (3, 0.02)]
    chances = [p for n, p in groups for _ in range(n)]
    exact = [0.0] * (len(chances) + 1)
    for outcome in itertools.product((0, 1), repeat=len(chances)):
        exact[sum(outcome)] += math.prod(p if o else 1 - p for o, p in zip(outcome, chances, strict=True))
    for x in range(len(chances) + 1):
        assert stats.poisson_binomial_cdf(groups, x) == pytest.approx(sum(exact[:x + 1]))
        assert stats.upper_tail(groups, x) == pytest.approx(sum(exact[x:]))


def test_clopper_pearson_and_mcnemar_against_published_values():
    low, high = stats.clopper_pearson(3, 10)  # R: binom.test(3, 10)$conf.int
    assert (low, high) == (pytest.approx(0.06673951, abs=1e-6), pytest.approx(0.6524529, abs=1e-6))
    difference, _, _, p_value = stats.mcnemar_exact(10, 2, 100)  # 2 * P(Bin(12, 1/2) <= 2) = 0.0386
    assert difference == pytest.approx(0.08) and p_value == pytest.approx(0.03857421875)
    assert stats.mcnemar_exact(0, 0, 50) == (0.0, 0.0, 0.0, 1.0)


def test_rate_ratio_interval_is_the_exact_poisson_interval_when_chances_are_small():
    # 3 events with mean 1 per unit ratio: Garwood's 95% interval for a Poisson mean is [0.619, 8.77]
    low, high = stats.rate_ratio_interval([(10 ** 6, 1e-6)], 3)
    assert low == pytest.approx(0.6187, abs=1e-3) and high == pytest.approx(8.7673, abs=1e-3)


def test_power_grows_with_the_data():
    small, large = [(50, 0.001)], [(50_000, 0.001)]
    assert stats.power(small, 0.001, 10) < 0.05 < 0.99 < stats.power(large, 0.001, 3)


def test_chance_of_a_hit_is_the_hypergeometric_complement():
    assert checks.chance_of_a_hit(100, 1, k=10) == pytest.approx(0.1)
    assert checks.chance_of_a_hit(100, 2, k=10) == pytest.approx(1 - math.comb(98, 10) / math.comb(100, 10))
    assert checks.chance_of_a_hit(100, 0) == 0.0 and checks.chance_of_a_hit(5, 1, k=10) == 1.0


def test_rate_ratio_interval_reaches_past_the_ratio_that_caps_the_likeliest_users():
    """The planted leak at scale 1 hit 1,520 warm users where chance expects 4.96 (306x): past 1 / the largest
    chance, where that group's chance is capped at 1 but the others' still grow. Both bounds had stopped there."""
    groups = [(100, 0.01), (100, 0.001)]  # 150 hits expected at r = 500: 100 * 1 + 100 * 0.5
    low, high = stats.rate_ratio_interval(groups, 150)
    assert 100 < low < 500 < high < 1000


@pytest.mark.parametrize("items", [2, 3, 4, 5])
def test_same_category_pair_moments_match_enumeration(items):
    shares = [0.5, 0.3, 0.15, 0.05]
    distribution: dict[int, float] = {}
    for draw in itertools.product(range(len(shares)), repeat=items):
        pairs = sum(draw.count(c) * (draw.count(c) - 1) // 2 for c in set(draw))
        distribution[pairs] = distribution.get(pairs, 0.0) + math.prod(shares[c] for c in draw)
    mean = sum(x * p for x, p in distribution.items())
    variance = sum((x - mean) ** 2 * p for x, p in distribution.items())
    assert stats.same_group_pair_moments(items, shares) == (pytest.approx(mean, abs=1e-12), pytest.approx(variance, abs=1e-12))


def _simulated_signal(rng, shares: list[float], favourite_share: float) -> checks.Check:
    """One world of 800 buyers of one gender with thelook's baskets of 2 to 8 items; a buyer's item comes from
    a favourite category of theirs (drawn like an item) with chance `favourite_share`, else uniformly from the
    catalogue."""
    import numpy as np

    by_size = []
    for items, buyers in ((2, 400), (3, 200), (4, 100), (6, 60), (8, 40)):
        counts = rng.multinomial(items, shares, size=buyers)
        if favourite_share:
            favourites = rng.choice(len(shares), p=shares, size=buyers)
            taken = rng.binomial(items, favourite_share, size=buyers)
            for b in range(buyers):
                counts[b] = rng.multinomial(items - taken[b], shares)
                counts[b, favourites[b]] += taken[b]
        by_size.append(("M", items, buyers, int((counts * (counts - 1) // 2).sum())))
    assert np.all(np.array([b for *_, b, _ in by_size]) > 0)
    return checks.taste_signal_of(by_size, {"M": shares})


def test_taste_signal_keeps_its_false_alarm_rate_on_uniform_baskets_and_finds_a_mild_taste():
    """The z-score's normal reading, checked where the truth is known: on baskets drawn uniformly (thelook's
    generator) the one-sided p-value is about uniform, so SIGNAL at p < TASTE_ALPHA is rare; with one item in four
    from a favourite category, 800 buyers are enough to find it nearly always (one in ten is not found: 1% of
    worlds, measured; docs/machine-learning.md)."""
    import numpy as np

    rng = np.random.default_rng(11)
    shares = list(np.array([30, 18, 12, 9, 7, 6, 5, 4, 3, 2, 2, 1, 1]) / 100)
    uniform = [_simulated_signal(rng, shares, 0.0) for _ in range(2000)]
    false_alarms = sum(c.verdict == checks.SIGNAL for c in uniform) / len(uniform)
    at_five_percent = sum(c.p_value < 0.05 for c in uniform) / len(uniform)
    assert false_alarms <= 0.004 and 0.035 <= at_five_percent <= 0.065, (false_alarms, at_five_percent)
    tasteful = [_simulated_signal(rng, shares, 0.25) for _ in range(200)]
    assert sum(c.verdict == checks.SIGNAL for c in tasteful) / len(tasteful) >= 0.95


def test_katz_rate_ratio_test_holds_its_level_at_the_boundary_and_detects_a_larger_ratio():
    """Simulated hit counts of two binomial samples: at a true ratio of exactly `ratio` the one-sided test rejects at
    about its level; at twice that ratio and a thousand users a side, at p < LEAK_ALPHA nearly always. Zero counts
    give finite answers."""
    import numpy as np

    rng = np.random.default_rng(5)
    users, reference_users, reference_rate = 400, 300, 0.1
    at_boundary = [stats.rate_ratio_test(int(x1), users, int(x2), reference_users, 1.5)[3]
                   for x1, x2 in zip(rng.binomial(users, 1.5 * reference_rate, 4000),
                                     rng.binomial(reference_users, reference_rate, 4000), strict=True)]
    assert 0.035 <= np.mean(np.array(at_boundary) < 0.05) <= 0.065
    doubled = [stats.rate_ratio_test(int(x1), 1000, int(x2), 1000, 1.5)[3]
               for x1, x2 in zip(rng.binomial(1000, 3 * reference_rate, 500), rng.binomial(1000, reference_rate, 500),
                                 strict=True)]
    assert np.mean(np.array(doubled) < checks.LEAK_ALPHA) >= 0.9
    assert all(math.isfinite(v) for v in stats.rate_ratio_test(5, 100, 0, 100, 1.5))
