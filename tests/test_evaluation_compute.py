"Compute accounting of adalib.evaluation: probe cost, probe spacing, the matched token budget, intervals over splits."
import numpy as np
import pandas as pd
from hypothesis import given, settings, strategies as st
from scipy.stats import binomtest
from adalib.traces import synthetic_traces
from adalib.stopping import Controller, UpperRule, Pool, trace_stats
from adalib.splits import draw_splits
from adalib.evaluation import (evaluate_upper_splits, add_compute, thin_checkpoints, baseline_tokens_at, _tokens_at,
                               split_summary, own_end_steps, baseline_rows)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.integers(1, 4))
def test_thinning_composes(seed, a, b):
    "Probing every a·b checkpoints is probing every a, then every b of those (the last checkpoint always kept)."
    ts = synthetic_traces(20, 12, seed=seed)
    x, y = thin_checkpoints(thin_checkpoints(ts, a), b), thin_checkpoints(ts, a * b)
    pd.testing.assert_frame_equal(x.df, y.df)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_vectorised_matched_budget_equals_reference(accs, targets):
    acc = np.maximum.accumulate(np.asarray(accs))          # a budget curve: tokens rising, accuracy non-decreasing
    tok = np.arange(1.0, len(acc) + 1) * 8
    got = _tokens_at(acc, tok, targets)
    want = [baseline_tokens_at(pd.DataFrame({"accuracy": acc, "tokens": tok}), t) for t in targets]
    np.testing.assert_allclose(got, want, equal_nan=True)


def test_compute_matches_per_trace_brute_force():
    "Split rows' compute = mean over test traces of (tokens at exit + probes evaluated up to the exit x probe cost)."
    ts = synthetic_traces(300, 10, seed=4)
    P = ts.arrays(); ctrl = Controller("ltt", alpha=0.2, delta=0.1, upper_loss="drop")
    rule = UpperRule("answer_prob", n_grid=20).resolve(P)
    d = add_compute(evaluate_upper_splits(ctrl, rule, P, n_splits=6, cal_frac=0.3, seed=1), probe_tokens=7.5, forced_tokens=3)
    pool = Pool(P, rule, ctrl)
    splits = draw_splits(P.solvable, 6, 0.3, None, None, 1)
    for (ci, ti), row in zip(splits, d.itertuples()):
        f = pool.fit(ci, ctrl)
        step = pool.exits_of(f, ctrl)[0] if f is not None and f.feasible else P.lengths - 1
        brute = np.mean(P.tokens[ti, step[ti]] + (step[ti] + 1) * 7.5)
        np.testing.assert_allclose(row.compute, brute)
        np.testing.assert_allclose(row.saving_net, 1 - brute / np.mean(P.tokens[ti, P.lengths[ti] - 1]))


def test_own_end_baseline_and_summary():
    ts = synthetic_traces(200, 8, seed=2); P = ts.arrays()
    end = P.tokens[np.arange(P.n), np.maximum(P.lengths - 3, 0)]                 # pretend the model ended two checkpoints early
    st_ = own_end_steps(P, end)
    assert (st_ == np.maximum(P.lengths - 3, 0)).all()
    sp = draw_splits(P.solvable, 30, 0.2, None, None, 0)
    b = baseline_rows(P, st_, sp, 4, "own end")
    S = trace_stats(P)
    ti = sp[3][1]; early = st_[ti] < P.lengths[ti] - 1
    np.testing.assert_allclose(b.loc[3, "compute"], np.mean(P.tokens[ti, st_[ti]] + 4 * early))
    s = split_summary(b.assign(feasible=b["split"] % 3 == 0, g=1), ["g"], ("saving_net",))
    ci = binomtest(10, 30).proportion_ci(method="wilson")
    np.testing.assert_allclose([s["feasible_lo"][0], s["feasible_hi"][0]], [ci.low, ci.high])
    np.testing.assert_allclose(s["saving_net_lo"][0], np.quantile(b["saving_net"], 0.025))
