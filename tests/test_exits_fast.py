"""The fast lower-rule path (issue 17): `lower_exits` and `lower_exit_sums` against the per-candidate loop, the
reference code's per-trace (G, T) comparison and the previous vectorised path; `_select_lower_fast` against the
chunked stream; the fitted rule on the benchmark's data against the result committed before the change."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from scipy.special import expit

from adalib.exits import (lower_exit_sums, lower_exits, lower_exits_dense, lower_exits_loop, lower_exits_per_trace,
                          signal_values)
from adalib.stopping import Controller, CombinedRule, LowerRule, Pool, UpperRule, _select_lower_fast, _select_lower_stream
from adalib.traces import synthetic_traces

HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random_grid(rng, n=30, T=16, ragged=True):
    "Traces with shared token counts (as real checkpoints have), lows with exact ties to signal values and to u."
    lens = rng.integers(1, T + 1, n) if ragged else np.full(n, T)
    s = np.round(rng.random((n, T)), 2)                                   # coarse values: many exact ties
    tok = np.tile(16.0 * np.arange(1, T + 1), (n, 1))
    u = 0.8
    lows = np.r_[rng.random(12) - 0.2, s[0, 0], s[1, 2], u, 0.5]          # l equal to a signal value, l = u
    shifts = np.r_[rng.uniform(0, 16 * T, 5), 0.0, 8.0 * T]
    slopes = np.r_[rng.choice([0.01, 0.1, 1.0], 5), 0.0, 1e3]            # σ = 1/2 everywhere; σ saturated at 0 and 1 exactly
    return s, tok, lens, lows, shifts, slopes, u


def test_fast_equals_loop_ct_and_dense_on_edge_cases():
    rng = np.random.default_rng(0)
    for ragged in (True, False):
        args = _random_grid(rng, ragged=ragged)
        fast = lower_exits(*args)
        np.testing.assert_array_equal(fast, lower_exits_loop(*args))
        np.testing.assert_array_equal(fast, lower_exits_per_trace(*args))
        np.testing.assert_array_equal(fast, lower_exits_dense(*args))
    q = expit(-1e3 * (args[1] - args[4][-1]))
    assert (q == 0).any() and (q == 1).any()                              # the saturated shape reaches both ends exactly


def test_fast_equals_loop_on_random_subset_of_bench_like_grid():
    ts = synthetic_traces(300, 64, seed=3, solvable_frac=0.5, ragged=True)
    P = ts.arrays(); x = signal_values(P, "answer_prob", "ema", 0.5)
    wmax = float(P.tokens.max()); u = float(np.quantile(x[P.mask], 0.9))
    sh, sl = np.meshgrid(np.linspace(0.05, 0.95, 8) * wmax, np.geomspace(1.0, 64.0, 6) / wmax, indexing="ij")
    shifts, slopes = sh.ravel(), sl.ravel()
    lows = np.r_[np.linspace(float(x.min()) - 0.05, u, 40), x[0, :5]]    # plus exact signal values
    fast = lower_exits(x, P.tokens, P.lengths, lows, shifts, slopes, u)
    rng = np.random.default_rng(1)
    for p, j in zip(rng.integers(0, len(shifts), 25), rng.integers(0, len(lows), 25)):
        ref = lower_exits_loop(x, P.tokens, P.lengths, [lows[j]], [shifts[p]], [slopes[p]], u)[0, 0]
        np.testing.assert_array_equal(fast[p, j], ref)
    tr = rng.choice(len(P.lengths), 20, replace=False)
    np.testing.assert_array_equal(fast[:, :, tr], lower_exits_per_trace(x, P.tokens, P.lengths, lows, shifts, slopes, u, tr))


@HSET
@given(st.integers(0, 2**31 - 1), st.integers(1, 9), st.integers(1, 7), st.integers(1, 5), st.booleans())
def test_property_fast_exits_and_sums(seed, T, n_lows, n_shapes, tied_tokens):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    lens = rng.integers(1, T + 1, n)
    s = np.round(rng.normal(0.5, 0.4, (n, T)), 1)
    tok = (np.tile(np.arange(1, T + 1), (n, 1)) * 8.0 if tied_tokens
           else np.cumsum(rng.integers(1, 20, (n, T)), axis=1).astype(float))
    u = float(rng.choice([0.9, 1.0, float(s.max())]))
    lows = np.sort(np.r_[np.round(rng.normal(0.3, 0.4, n_lows), 1), rng.choice(s.ravel())])
    shifts = rng.uniform(0, tok.max(), n_shapes); slopes = rng.choice([0.0, 0.05, 0.5, 50.0], n_shapes)
    ex = lower_exits(s, tok, lens, lows, shifts, slopes, u)
    np.testing.assert_array_equal(ex, lower_exits_loop(s, tok, lens, lows, shifts, slopes, u))
    cap = np.minimum(rng.integers(0, T, n), lens - 1); mask = rng.random(n) < 0.6
    vals = rng.integers(0, 5, (n, T)).astype(float)
    hits, sums = lower_exit_sums(s, tok, lens, lows, shifts, slopes, u, cap, mask, vals, n_jobs=int(rng.integers(1, 3)))
    np.testing.assert_array_equal(hits, ((ex < cap) & mask).sum(-1))      # exact counts
    np.testing.assert_allclose(sums, vals[np.arange(n), np.minimum(ex, cap)].sum(-1), rtol=0, atol=1e-9)


def test_sums_reject_bad_cap():
    s = np.array([[0.1, 0.5]]); tok = np.array([[1.0, 2.0]])
    with pytest.raises(ValueError, match="cap must lie in"):
        lower_exit_sums(s, tok, [2], [0.1], [1.0], [1.0], 0.9, [2], [True], s)


def _same_selection(a, b):
    assert a.index == b.index and a.feasible == b.feasible and a.message == b.message and a.n_paths == b.n_paths
    np.testing.assert_array_equal(a.risk_hat, b.risk_hat)
    np.testing.assert_array_equal(a.certified, b.certified)
    for f in ("pvalues", "bound"):
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None)
        if x is not None: np.testing.assert_array_equal(x, y)
    c = a.certified
    np.testing.assert_array_equal(a.efficiency[c], b.efficiency[c])        # what the choice reads: bit-identical
    np.testing.assert_allclose(a.efficiency, b.efficiency, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method,efficiency,combined", [("ltt", "j", False), ("ltt", "tokens", True), ("ucb", "j", True),
                                                        ("naive", "tokens", False), ("crc", "j", True)])
def test_fast_selection_equals_stream_on_study_like_pool(method, efficiency, combined):
    ts = synthetic_traces(1500, 24, seed=5, solvable_frac=0.6, ragged=True)
    lo = LowerRule("answer_prob", n_lows=20)
    rule = (CombinedRule(UpperRule("answer_prob", n_grid=30), lo) if combined else lo).resolve(ts)
    ctrl = Controller(method, alpha=0.15, delta=0.1, upper_loss="drop", lower_loss="stop", efficiency=efficiency, n_jobs=2)
    small = Pool(ts.arrays(), rule, ctrl)                                  # the in-memory matrices path
    big = Pool(ts.arrays(), rule, ctrl, stream_elems=1000)                 # forced onto the large-grid paths
    assert big.large and not small.large
    idx = np.random.default_rng(0).choice(1500, 900, replace=False)
    lam = big.fit(idx, ctrl).lambda_upper
    fast, u1 = _select_lower_fast(big, ctrl, lam, idx)
    stream, u2 = _select_lower_stream(big, ctrl, lam, idx)
    assert u1 == u2
    _same_selection(fast, stream)
    assert fast.feasible, fast.message                                     # the comparison covers a real choice
    a, b = small.fit(idx, ctrl), big.fit(idx, ctrl)
    assert a.lower_params == b.lower_params and a.lambda_upper == b.lambda_upper


def test_fast_selection_infeasible_message_equals_stream():
    ts = synthetic_traces(60, 12, seed=2, solvable_frac=0.5)
    rule = LowerRule("answer_prob").resolve(ts)
    ctrl = Controller("ltt", alpha=0.01, delta=0.01, lower_loss="stop")
    big = Pool(ts.arrays(), rule, ctrl, stream_elems=10)
    idx = np.arange(60)
    fast, _ = _select_lower_fast(big, ctrl, None, idx)
    assert not fast.feasible
    _same_selection(fast, _select_lower_stream(big, ctrl, None, idx)[0])


def test_bench_calibration_fit_unchanged():
    "The benchmark's grid (50,000 candidates, 1,000 x 128): the fitted rule committed before the fast path (outputs/bench)."
    ts = synthetic_traces(1000, 128, seed=0, solvable_frac=0.5, ragged=False)
    P = ts.arrays(); x = signal_values(P, "answer_prob", "ema", 0.5)
    wmax = float(P.tokens.max())
    sh, sl = np.meshgrid(np.linspace(0.05, 0.95, 20) * wmax, np.geomspace(1.0, 64.0, 25) / wmax, indexing="ij")
    u = float(np.quantile(x[P.mask], 0.9))
    lows = np.linspace(float(x.min()) - 0.05, u, 100)
    rule = LowerRule("answer_prob", "ema", 0.5, lows=lows, shifts=sh.ravel(), slopes=sl.ravel(), u=u)
    fit = Controller("ltt", alpha=0.1, delta=0.1, lower_loss="stop", n_jobs=2).calibrate(rule, P)
    assert fit.lower_params == {"l": 0.028908741988775334, "shift": 3891.2, "slope": 0.004645340292979379, "u": 0.8815876360559042}
    assert fit.message.startswith("lower: ltt: 46 of 50000 candidates certified") and "chose candidate 49206" in fit.message
