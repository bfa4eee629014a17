"""Exact tests for the recommender's checks, in plain Python.

Their inputs are a handful of aggregates (counts of discordant users, or per-user hit chances
grouped by (candidate pool, labels)), never per-user rows, so they cost nothing on the driver
at any scale. No scipy: the platforms' runtimes are not guaranteed to ship it.
"""
from __future__ import annotations

import math

import numpy as np

# Beyond this many standard deviations above the mean the tail is below 1e-300: 0 for our purposes.
_TAIL_SIGMAS = 40


def _binomial_pmf(n: int, p: float, upto: int) -> list[float]:
    """P(Bin(n, p) = x) for x in 0..min(n, upto)."""
    top = min(n, upto)
    if p <= 0.0 or p >= 1.0:
        certain = n if p >= 1.0 else 0
        return [1.0 if x == certain else 0.0 for x in range(top + 1)]
    log_p, log_q = math.log(p), math.log1p(-p)
    return [math.exp(math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * log_p + (n - x) * log_q)
            for x in range(top + 1)]


def expected(groups: list[tuple[int, float]]) -> float:
    """The mean number of successes of the trials given as (count, chance)."""
    return sum(n * p for n, p in groups)


def poisson_binomial_cdf(groups: list[tuple[int, float]], x: int) -> float:
    """P(X <= x) where X is the number of successes of independent trials given as (count, chance)."""
    if x < 0:
        return 0.0
    mean = expected(groups)
    sd = math.sqrt(sum(n * p * (1 - p) for n, p in groups))
    if x > mean + _TAIL_SIGMAS * sd + 50:
        return 1.0
    pmf = np.array([1.0])
    for n, p in groups:  # convolve one binomial per group, truncated at x
        pmf = np.convolve(pmf, _binomial_pmf(n, p, x))[:x + 1]
    return float(min(1.0, pmf.sum()))


def upper_tail(groups: list[tuple[int, float]], x: int) -> float:
    """P(X >= x)."""
    return max(0.0, 1.0 - poisson_binomial_cdf(groups, x - 1))


def _scaled(groups: list[tuple[int, float]], ratio: float) -> list[tuple[int, float]]:
    return [(n, min(1.0, p * ratio)) for n, p in groups]


def _bisect(predicate, low: float, high: float, steps: int = 40) -> float:
    """The boundary between predicate True (at low) and False (at high)."""
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (mid, high) if predicate(mid) else (low, mid)
    return (low + high) / 2


def rate_ratio_interval(groups: list[tuple[int, float]], observed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact interval for r in 'each trial succeeds with chance r * p' given `observed` successes
    (inverting the Poisson-binomial tails, like Clopper-Pearson for one proportion)."""
    tail = (1 - confidence) / 2
    ceiling = 1.0 / min(p for _, p in groups if p > 0)  # every chance capped at 1 beyond this
    low = 0.0 if observed == 0 else _bisect(lambda r: upper_tail(_scaled(groups, r), observed) < tail, 0.0, ceiling)
    high = _bisect(lambda r: poisson_binomial_cdf(_scaled(groups, r), observed) >= tail, 0.0, ceiling)
    return low, high


def critical_count(groups: list[tuple[int, float]], alpha: float) -> int:
    """The smallest count c with P(X >= c) <= alpha under the null."""
    c = max(0, int(expected(groups)))
    while upper_tail(groups, c) > alpha:
        c += 1
    return c


def power(groups: list[tuple[int, float]], alpha: float, ratio: float) -> float:
    """Chance that a model hitting `ratio` times as often as chance is flagged at level alpha."""
    return upper_tail(_scaled(groups, ratio), critical_count(groups, alpha))


def binomial_cdf(x: int, n: int, p: float) -> float:
    return min(1.0, sum(_binomial_pmf(n, p, x))) if x >= 0 else 0.0


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    if trials == 0:
        return 0.0, 1.0
    low = 0.0 if successes == 0 else _bisect(lambda p: 1 - binomial_cdf(successes - 1, trials, p) < tail, 0.0, 1.0)
    high = 1.0 if successes == trials else _bisect(lambda p: binomial_cdf(successes, trials, p) >= tail, 0.0, 1.0)
    return low, high


def mcnemar_exact(only_a: int, only_b: int, users: int, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Paired comparison of two recommenders' per-user hits.

    only_a: users hit by a and missed by b; only_b: the reverse. Returns the hit-rate difference
    (a - b), its exact interval (Clopper-Pearson on the discordant pairs, conditional on their
    number) and the two-sided exact p-value."""
    discordant = only_a + only_b
    difference = (only_a - only_b) / users if users else 0.0
    if discordant == 0:
        return difference, 0.0, 0.0, 1.0
    low, high = clopper_pearson(only_a, discordant, confidence)
    p_value = min(1.0, 2 * binomial_cdf(min(only_a, only_b), discordant, 0.5))
    return difference, discordant * (2 * low - 1) / users, discordant * (2 * high - 1) / users, p_value


def mcnemar_greater(only_a: int, only_b: int) -> float:
    """One-sided exact McNemar p-value that a hits more users than b: P(Bin(only_a + only_b, 1/2) >= only_a)."""
    discordant = only_a + only_b
    return 1.0 if discordant == 0 else max(0.0, 1.0 - binomial_cdf(only_a - 1, discordant, 0.5))


def two_sided_chance(groups: list[tuple[int, float]], observed: int) -> tuple[float, float, float]:
    """(P(X <= observed), P(X >= observed), the two-sided p-value: twice the smaller tail, at most 1) for the
    Poisson-binomial X of chance hits."""
    below, above = poisson_binomial_cdf(groups, observed), upper_tail(groups, observed)
    return below, above, min(1.0, 2 * min(below, above))


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: the family-wise error rate stays at the level they are compared with,
    whichever of the hypotheses are true."""
    ordered = sorted(p_values, key=lambda name: p_values[name])
    adjusted, running = {}, 0.0
    for i, name in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - i) * p_values[name]))
        adjusted[name] = running
    return adjusted


def same_group_pair_moments(items: int, shares: list[float]) -> tuple[float, float]:
    """Mean and variance of the number of pairs, among `items` independent draws from groups with these shares,
    that fall in the same group. With q2 = sum(p^2) and q3 = sum(p^3): each of the C(n, 2) pairs matches with
    chance q2; two pairs sharing one draw (3 C(n, 3) such couples) both match with chance q3, disjoint pairs are
    independent, so Var = C(n, 2) q2 (1 - q2) + 6 C(n, 3) (q3 - q2^2)."""
    q2, q3 = sum(p * p for p in shares), sum(p ** 3 for p in shares)
    pairs, triples = math.comb(items, 2), math.comb(items, 3)
    return pairs * q2, pairs * q2 * (1 - q2) + 6 * triples * (q3 - q2 * q2)


def normal_upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def rate_ratio_test(hits: int, users: int, reference_hits: int, reference_users: int, ratio: float,
                    confidence: float = 0.95) -> tuple[float, float, float, float]:
    """Is a hit rate (hits of users) more than `ratio` times a reference rate? Katz's log rate ratio: log(r) is
    about normal with variance 1/x1 - 1/n1 + 1/x2 - 1/n2; with a zero count, half a count is added to each of
    the four (Haldane). Returns (the rate ratio, its interval, the one-sided p-value that it exceeds `ratio`)."""
    haldane = 0.5 if 0 in (hits, reference_hits) else 0.0
    x1, n1, x2, n2 = (count + haldane for count in (hits, users, reference_hits, reference_users))
    log_ratio = math.log((x1 / n1) / (x2 / n2))
    se = math.sqrt(max(0.0, 1 / x1 - 1 / n1 + 1 / x2 - 1 / n2))
    if se == 0:  # every user hit on both sides
        return math.exp(log_ratio), math.exp(log_ratio), math.exp(log_ratio), float(log_ratio <= math.log(ratio))
    half = _normal_quantile(1 - (1 - confidence) / 2) * se
    return (math.exp(log_ratio), math.exp(log_ratio - half), math.exp(log_ratio + half),
            normal_upper_tail((log_ratio - math.log(ratio)) / se))


def _normal_quantile(p: float) -> float:
    return _bisect(lambda z: normal_upper_tail(z) > 1 - p, -40.0, 40.0, steps=80)


def difference_variance(hits: int, users: int, reference_hits: int, reference_users: int) -> float:
    """The variance of the difference of two hit rates, each rate's estimate pulled half a hit towards one half
    ((x + 0.5) / (n + 1)) so that an arm without a hit, or where everyone hit, does not claim zero variance."""
    def rate_variance(x: int, n: int) -> float:
        p = (x + 0.5) / (n + 1)
        return p * (1 - p) / n
    return rate_variance(hits, users) + rate_variance(reference_hits, reference_users)


def msprt(difference: float, variance: float, mixing_sd: float, alpha: float = 0.05) -> tuple[float, float, float]:
    """One look of the mixture sequential probability ratio test for a difference of means (Johari, Pekelis and
    Walsh, "Always valid inference", 2017; normal approximation, the difference's prior N(0, mixing_sd^2)):
    Lambda = sqrt(V / (V + t^2)) exp(t^2 d^2 / (2 V (V + t^2))). Returns (1 / Lambda, at most 1, and the
    1 - alpha confidence interval of the difference at this look: the values a look with Lambda < 1/alpha keeps).
    The always-valid p-value is the running minimum of the first over the looks, the confidence sequence the
    running intersection of the intervals: either may then be read after every look at level alpha."""
    t2 = mixing_sd ** 2
    log_lambda = 0.5 * math.log(variance / (variance + t2)) + t2 * difference ** 2 / (2 * variance * (variance + t2))
    half = math.sqrt(variance * (variance + t2) / t2 * (math.log((variance + t2) / variance) + 2 * math.log(1 / alpha)))
    return min(1.0, math.exp(-log_lambda)), difference - half, difference + half
