"""Property tests for adalib.splits: every primitive partitions its input and reproduces, draw for draw, the
hand-written splitting code it replaces (TraceSet.split, confidence.split_by_problem, stopping.split_indices,
cascade.evaluate_cascade_risk and the s09 loop, copied here as they were)."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from adalib.splits import (draw_splits, mixture_indices, n_first, permutation_split, seeded_split, split_indices,
                           split_keys, split_stream)

SEEDS = st.integers(0, 2**32 - 1)


def _is_partition(a, b, n):
    return sorted(np.r_[a, b].tolist()) == list(range(n))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), frac=st.floats(0.01, 0.99), seed=SEEDS)
def test_seeded_split_is_the_old_traceset_split(n, frac, seed):
    k = int(round(frac * n))
    if k < 1 or k >= n:
        with pytest.raises(ValueError, match="leaves an empty side"): seeded_split(n, frac, seed)
        return
    a, b = seeded_split(n, frac, seed)
    perm = np.random.default_rng(seed).permutation(n)             # old TraceSet.split
    assert np.array_equal(a, perm[:k]) and np.array_equal(b, perm[k:]) and _is_partition(a, b, n)


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=2, max_size=60),
       frac=st.floats(0.05, 0.95), seed=SEEDS)
def test_split_keys_is_the_old_split_by_problem(keys, frac, seed):
    key = pd.Series(keys)
    probs = np.array(sorted(pd.unique(key)), dtype=object)     # old confidence.split_by_problem
    k = int(round(frac * len(probs)))
    if k < 1 or k >= len(probs):
        with pytest.raises(ValueError, match="leaves an empty side"): split_keys(keys, frac, seed)
        return
    first = set(probs[np.random.default_rng(seed).permutation(len(probs))[:k]])
    in_first = key.isin(first).to_numpy()
    a, b = split_keys(keys, frac, seed)
    assert np.array_equal(a, np.flatnonzero(in_first)) and np.array_equal(b, np.flatnonzero(~in_first))
    assert _is_partition(a, b, len(keys)) and not set(np.asarray(keys)[a]) & set(np.asarray(keys)[b])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 200), data=st.data(), n_splits=st.integers(1, 8), seed=SEEDS)
def test_split_stream_is_the_old_cascade_and_s09_loop(n, data, n_splits, seed):
    n_cal = data.draw(st.integers(1, n - 1))
    rng = np.random.default_rng(seed)                           # old cascade.evaluate_cascade_risk / s09 loop
    old = []
    for _ in range(n_splits):
        perm = rng.permutation(n); old.append((perm[:n_cal], perm[n_cal:]))
    new = list(split_stream(n, n_cal, n_splits, seed))
    assert len(new) == n_splits
    for (a, b), (c, d) in zip(old, new): assert np.array_equal(a, c) and np.array_equal(b, d) and _is_partition(c, d, n)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 200), data=st.data(), seed=SEEDS)
def test_split_indices_is_the_old_sorted_split(n, data, seed):
    n_cal = data.draw(st.integers(1, n - 1))
    perm = np.random.default_rng(seed).permutation(n)           # old stopping.split_indices
    a, b = split_indices(n, n_cal, np.random.default_rng(seed))
    assert np.array_equal(a, np.sort(perm[:n_cal])) and np.array_equal(b, np.sort(perm[n_cal:]))
    assert np.array_equal((a, b)[0], permutation_split(n, n_cal, np.random.default_rng(seed), sort=True)[0])


@settings(max_examples=40, deadline=None)
@given(n_sol=st.integers(4, 80), n_uns=st.integers(4, 80), ratio=st.sampled_from([None, "3:1", "1:1", "1:3"]),
       seed=SEEDS, n_splits=st.integers(1, 5))
def test_draw_splits_partitions_each_mixture(n_sol, n_uns, ratio, seed, n_splits):
    sol = np.r_[np.ones(n_sol, bool), np.zeros(n_uns, bool)]
    try:
        splits = draw_splits(sol, n_splits, 0.3, None, ratio, seed)
    except ValueError as e:
        assert "n_cal must be in" in str(e) or "too few" in str(e); return
    rng = np.random.default_rng(seed)
    for ci, ti in splits:
        base = mixture_indices(sol, ratio, rng)                 # the same stream, replayed
        assert sorted(np.r_[ci, ti].tolist()) == sorted(base.tolist()) and not set(ci) & set(ti)
        split_indices(len(base), int(round(0.3 * len(base))), rng)


def test_bad_inputs():
    with pytest.raises(ValueError, match="cal_frac must be in \\(0, 1\\)"): n_first(10, 0.0)
    with pytest.raises(ValueError, match="frac must be in \\(0, 1\\)"): split_keys(["a", "b"], 1.5, 0)
    with pytest.raises(ValueError, match="n_cal must be in \\[1, 4\\]"): split_indices(5, 0, np.random.default_rng(0))
