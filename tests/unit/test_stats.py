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
