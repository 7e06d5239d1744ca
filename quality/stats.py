"""Seed-level statistics for paired benchmark runs.

On the shapes model one seed behaves alike across every prompt (its start noise decides how many objects the
model draws), so prompt x seed pairs are not independent samples: the unit of a test is the seed. Each function
here takes per-image records keyed by (prompt, seed) and works on per-seed means over the prompts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

Key = tuple[str, int]  # (prompt, seed)


def per_seed_means(values: Mapping[Key, float]) -> dict[int, float]:
    """{seed: mean of the values of its prompts}."""
    groups: dict[int, list[float]] = defaultdict(list)
    for (_, seed), v in values.items():
        groups[seed].append(float(v))
    return {s: float(np.mean(v)) for s, v in sorted(groups.items())}


def seed_differences(variant: Mapping[Key, float], plain: Mapping[Key, float]) -> np.ndarray:
    """Per-seed mean of (variant - plain) over the prompts both have, one value per seed (seed order)."""
    diffs = {k: float(variant[k]) - float(plain[k]) for k in variant if k in plain}
    return np.array(list(per_seed_means(diffs).values()), dtype=np.float64)


def sign_test_p(positive: int, negative: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if both signs were equally likely
    (ties, e.g. images that did not change, are left out before the call)."""
    n = positive + negative
    if n == 0:
        return 1.0
    k = min(positive, negative)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def wilcoxon_p(diffs: Iterable[float], tol: float = 1e-12) -> float:
    """Two-sided exact Wilcoxon signed-rank test of the median difference being 0 (zeros dropped, tied
    magnitudes take their mean rank). Exact through the distribution of the rank sum over all 2^n sign patterns
    (a dynamic programme over doubled ranks, so mean ranks of ties stay integers)."""
    d = np.array([x for x in diffs if abs(x) > tol], dtype=np.float64)
    n = len(d)
    if n == 0:
        return 1.0
    mags = np.abs(d)
    order = np.argsort(mags, kind="stable")
    ranks2 = np.empty(n, dtype=np.int64)  # 2 x rank (mean rank of a tie group, doubled, is an integer)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and abs(mags[order[j + 1]] - mags[order[i]]) <= tol:
            j += 1
        ranks2[order[i:j + 1]] = i + j + 2  # doubled mean of the 1-based ranks i+1..j+1
        i = j + 1
    w_plus = int(ranks2[d > 0].sum())
    total = int(ranks2.sum())
    counts = np.zeros(total + 1, dtype=np.float64)  # number of sign patterns with each positive rank sum
    counts[0] = 1.0
    for r in ranks2:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:-r] if r else counts
        counts = counts + shifted
    probs = counts / counts.sum()
    low = min(w_plus, total - w_plus)
    return float(min(1.0, 2 * probs[:low + 1].sum()))


def bootstrap_ci(diffs: Sequence[float], reps: int = 4000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean per-seed difference (seeds resampled with replacement)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(reps, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def seed_test(variant: Mapping[Key, float], plain: Mapping[Key, float]) -> dict:
    """The seed-level comparison of a variant with plain on one metric: mean per-seed difference, how many
    seeds went up / down, the Wilcoxon and sign-test p over seeds, and a bootstrap interval."""
    d = seed_differences(variant, plain)
    up, down = int((d > 1e-12).sum()), int((d < -1e-12).sum())
    lo, hi = bootstrap_ci(d)
    return {"seeds": len(d), "mean_diff": float(d.mean()) if len(d) else 0.0, "seeds_up": up, "seeds_down": down,
            "wilcoxon_p": wilcoxon_p(d), "sign_p": sign_test_p(up, down), "ci95": [lo, hi]}


def variance_shares(values: Mapping[tuple[str, str, int], float]) -> dict[str, float]:
    """Shares of the total sum of squares of a metric over (method, prompt, seed) cells explained by each main
    effect (additive two- or three-way decomposition on a complete grid) and left as interactions/residual."""
    methods = sorted({k[0] for k in values})
    prompts = sorted({k[1] for k in values})
    seeds = sorted({k[2] for k in values})
    grid = np.full((len(methods), len(prompts), len(seeds)), np.nan)
    for (m, p, s), v in values.items():
        grid[methods.index(m), prompts.index(p), seeds.index(s)] = float(v)
    if np.isnan(grid).any():
        raise ValueError("variance_shares needs every (method, prompt, seed) cell")
    mean = grid.mean()
    total = float(((grid - mean) ** 2).sum())
    if total == 0:
        return {"method": 0.0, "prompt": 0.0, "seed": 0.0, "residual": 0.0}
    shares = {}
    for name, axes in (("method", (1, 2)), ("prompt", (0, 2)), ("seed", (0, 1))):
        effect = grid.mean(axis=axes) - mean
        shares[name] = float((effect**2).sum() * grid.size / len(effect)) / total
    shares["residual"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


def keyed(records: Iterable, metric: Callable[[object], float]) -> dict[Key, float]:
    """{(prompt, seed): metric(record)} of evaluate.Record-like objects."""
    return {(r.prompt, int(r.seed)): float(metric(r)) for r in records}
