"""adalib.ensembles: certification against a brute-force LTT reference (scipy p-values), the data split never reading
the certification half for its selection, Bonferroni at δ/K, compute net of probe cost, the held-out probe, feasibility,
and the validity of every selection mechanism over many splits."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import binom

from adalib.ensembles import (HINDSIGHT, Candidate, certify, evaluate_selection, make_candidates, masks, paired_gaps,
                              probe_signal, select_bonferroni, select_fixed, select_split, summarise_selection, with_hindsight)
from adalib.splits import draw_splits
from adalib.stopping import Controller
from adalib.traces import synthetic_traces

CTRL = Controller("ltt", alpha=0.15, delta=0.1, upper_loss="drop", efficiency="tokens")


def _hb_ref(k, n, alpha):
    "Hoeffding–Bentkus p-value written out from its definition (k losses of n)."
    r = k / n
    a = min(r, alpha)
    h = (a * math.log(a / alpha) if a > 0 else 0.0) + ((1 - a) * math.log((1 - a) / (1 - alpha)) if a < 1 else 0.0)
    return min(math.exp(-n * h), min(1.0, math.e * binom.cdf(math.ceil(k - 1e-9), n, alpha)))


def _certify_ref(cand, idx, alpha, delta):
    "Fixed-sequence LTT on the traces idx, walking the grid from index 0; the cheapest certified threshold that fires."
    best, best_e = cand.m, np.inf
    for j in range(cand.m):
        k = int(round(cand.loss[j, idx].sum()))
        if _hb_ref(k, len(idx), alpha) > delta: break
        fires = (cand.step[j, idx] < cand.step[-1, idx]).any()
        e = cand.compute[j, idx].mean()
        if fires and e < best_e: best, best_e = j, e
    return best


def _random_cand(rng, N, m, name="c"):
    "A random candidate whose losses and exits are monotone along the grid (as an upper rule's are)."
    L = rng.integers(3, 8, N)
    step = np.sort(rng.integers(0, 8, (m, N)), axis=0)[::-1]          # index 0 most conservative (latest exit)
    step = np.minimum(step, L - 1)
    step = np.vstack([step, L - 1])
    loss = (rng.random((m, N)) < np.linspace(0.0, 0.4, m)[:, None]).astype(float)
    loss = np.maximum.accumulate(loss, axis=0)
    loss = np.vstack([loss, np.zeros(N)])
    tokens = 8.0 * (step + 1)
    comp = tokens + 3.0 * step
    comp[-1] = tokens[-1]
    return Candidate(name, None, step, loss, 1 - loss, tokens, comp)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 150))
def test_certify_matches_bruteforce_ltt(seed, n):
    rng = np.random.default_rng(seed)
    cand = _random_cand(rng, 200, 12)
    parts = [np.sort(rng.choice(200, n, replace=False)) for _ in range(3)]
    j, e = certify(cand, masks(parts, 200), CTRL, CTRL.delta)
    for i, p in enumerate(parts):
        assert j[i] == _certify_ref(cand, p, CTRL.alpha, CTRL.delta)
        assert (e[i] == np.inf) == (j[i] == cand.m)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_split_selection_never_reads_the_certification_half(seed):
    rng = np.random.default_rng(seed)
    N = 300
    cands = {f"c{i}": _random_cand(rng, N, 10, f"c{i}") for i in range(3)}
    A, B = np.arange(150), np.arange(150, N)
    MA, MB = masks([A], N), masks([B], N)
    k, j = select_split(cands, MA, MB, CTRL, fallback="c0")
    # scramble everything on the certification half: the selection must not move
    scr = {nm: Candidate(nm, None, c.step.copy(), c.loss.copy(), c.correct, c.tokens, c.compute.copy()) for nm, c in cands.items()}
    for c in scr.values():
        c.loss[:-1, B] = rng.random((c.m, len(B))) < 0.5
        c.compute[:-1, B] = rng.random((c.m, len(B))) * 100
    k2, j2 = select_split(scr, MA, MB, CTRL, fallback="c0")
    assert k2[0] == k[0]
    # the certification is that of the selected candidate on B alone
    name = list(cands)[k[0]]
    assert j[0] == certify(cands[name], MB, CTRL, CTRL.delta)[0][0]
    assert j2[0] == certify(scr[name], MB, CTRL, CTRL.delta)[0][0]


def test_split_when_halves_disagree():
    "On A the cheap candidate is 'a'; on B 'a' fails and 'b' is cheap. Selection on A, certification on B."
    N = 400
    A, B = np.arange(200), np.arange(200, N)
    step = np.stack([np.ones(N, int), np.zeros(N, int), np.ones(N, int)])
    def cand(nm, loss, comp):
        return Candidate(nm, None, step, np.stack([0 * loss, loss, 0 * loss]), np.ones((3, N)),
                         np.stack([comp * 0 + 10, comp, comp * 0 + 10]), np.stack([comp * 0 + 10, comp, comp * 0 + 10]))
    la = np.zeros(N); la[B] = 1.0
    ca, cb = np.where(np.arange(N) < 200, 2.0, 6.0), np.where(np.arange(N) < 200, 6.0, 2.0)
    cands = {"a": cand("a", la, ca), "b": cand("b", np.zeros(N), cb)}
    k, j = select_split(cands, masks([A], N), masks([B], N), CTRL, fallback="b")
    assert list(k) == [0] and list(j) == [2]      # "a" chosen on A, and B certifies nothing that fires for it
    k, j = select_split(cands, masks([B], N), masks([A], N), CTRL, fallback="a")
    assert list(k) == [1] and list(j) == [1]
    # Bonferroni on everything: "a" fails on half the traces, "b" is certified
    k, j = select_bonferroni(cands, masks([np.arange(N)], N), CTRL)
    assert list(k) == [1] and list(j) == [1]


def test_bonferroni_is_the_cheapest_certified_at_delta_over_k():
    rng = np.random.default_rng(3)
    N = 250
    cands = {f"c{i}": _random_cand(rng, N, 10, f"c{i}") for i in range(4)}
    parts = [np.sort(rng.choice(N, 120, replace=False)) for _ in range(5)]
    k, j = select_bonferroni(cands, masks(parts, N), CTRL)
    for i, p in enumerate(parts):
        ref = [(cands[nm].compute[jj, p].mean() if jj < cands[nm].m else np.inf, q, jj)
               for q, nm in enumerate(cands) for jj in [_certify_ref(cands[nm], p, CTRL.alpha, CTRL.delta / len(cands))]]
        e, q, jj = min(ref)
        if np.isfinite(e): assert (k[i], j[i]) == (q, jj)
        else: assert j[i] == cands[list(cands)[k[i]]].m


def test_net_compute_counts_probes_before_the_exit():
    ts = synthetic_traces(n=150, T=8, seed=2)
    P = ts.arrays()
    c = make_candidates(P, {"a": ("answer_prob", "ema")}, CTRL, probe_tokens=5.0, forced_tokens=2.0, n_grid=8)["a"]
    np.testing.assert_allclose(c.compute[:-1], c.tokens[:-1] + 5.0 * (c.step[:-1] + 1))   # probed: every checkpoint to the exit
    w = make_candidates(P, {"w": ("win_negent", "ema")}, CTRL, probe_tokens=5.0, forced_tokens=2.0, n_grid=8)["w"]
    np.testing.assert_allclose(w.compute[:-1], w.tokens[:-1] + 2.0 * (w.step[:-1] < w.step[-1]))   # forced suffix when early
    np.testing.assert_allclose(c.compute[-1], P.tokens[np.arange(150), P.lengths - 1])   # budget: no probes


def test_probe_trained_on_disjoint_problems():
    ts = synthetic_traces(n=160, T=6, seed=4)
    rng = np.random.default_rng(0)
    ts.hidden = np.c_[ts.df["correct"].to_numpy(float) + rng.normal(size=len(ts.df)), rng.normal(size=(len(ts.df), 2))]
    pool, train = probe_signal(ts, 0.25, seed=1)
    key = "problem_id" if "problem_id" in ts.meta.columns else None
    if key: assert not set(pool.meta[key]) & set(train.meta[key])
    assert not set(pool.trace_ids) & set(train.trace_ids)
    assert "probe" in pool.signals and "probe" not in train.signals


def test_infeasible_is_never_a_zero_saving():
    rng = np.random.default_rng(0)
    N = 60
    cands = {"a": _random_cand(rng, N, 6, "a"), "b": _random_cand(rng, N, 6, "b")}
    splits = [(np.sort(rng.choice(N, 4, replace=False)), np.arange(N)) for _ in range(5)]   # 4 calibration traces certify nothing
    splits = [(c, np.setdiff1d(t, c)) for c, t in splits]
    ev = with_hindsight(evaluate_selection(cands, splits, CTRL, default="a"))
    assert not ev["feasible"].any()
    s = summarise_selection(ev)
    assert (s["status"] == "infeasible").all() and s["net_saving"].isna().all()
    g = paired_gaps(ev)
    assert (g["verdict"] == "infeasible").all() and g["gap"].isna().all()


def test_selections_keep_the_risk_guarantee_over_splits():
    "Over many splits of a synthetic pool, every mechanism's violation rate stays within δ plus 3 binomial SEs."
    ts = synthetic_traces(n=1500, T=12, seed=7)
    P = ts.arrays()
    specs = {s: (s, "ema") for s in ts.signals[:4]}
    ctrl = Controller("ltt", alpha=0.1, delta=0.1, upper_loss="drop", efficiency="tokens")
    cands = make_candidates(P, specs, ctrl, 4.0, 1.0, n_grid=30)
    splits = draw_splits(np.asarray(P.solvable, bool), 300, 0.2, None, None, 0)
    ev = with_hindsight(evaluate_selection(cands, splits, ctrl, default=list(specs)[0]))
    s = summarise_selection(ev)
    se = math.sqrt(0.1 * 0.9 / 300)
    for m in ("default", "bonferroni", "split"):
        r = s[s["mechanism"] == m].iloc[0]
        assert r["violation_rate"] <= 0.1 + 3 * se, (m, r["violation_rate"])
    assert s.loc[s["mechanism"] == HINDSIGHT, "hindsight"].all()


def test_bad_input():
    rng = np.random.default_rng(0)
    c = {"a": _random_cand(rng, 20, 4, "a")}
    with pytest.raises(ValueError, match="not a candidate"): select_fixed(c, "zz", masks([np.arange(10)], 20), CTRL)
    with pytest.raises(ValueError, match="at least one calibration trace"): certify(c["a"], np.zeros((1, 20)), CTRL, 0.1)
    with pytest.raises(ValueError, match="at least one candidate"): make_candidates(synthetic_traces(n=10, T=4, seed=0).arrays(), {}, CTRL)


def test_bonferroni_pays_for_k_candidates():
    "A threshold whose p-value lies between δ/K and δ: certified alone at δ, not by Bonferroni over K = 4 candidates."
    n = 200
    k = next(k for k in range(n) if CTRL.delta / 4 < _hb_ref(k, n, CTRL.alpha) <= CTRL.delta)
    step = np.stack([np.ones(n, int), np.zeros(n, int), np.ones(n, int)])
    loss = np.zeros(n); loss[:k] = 1.0
    c = Candidate("c", None, step, np.stack([0 * loss, loss, 0 * loss]), np.ones((3, n)), np.full((3, n), 5.0), np.full((3, n), 5.0))
    M = masks([np.arange(n)], n)
    assert list(select_fixed({"c": c}, "c", M, CTRL)[1]) == [1]
    cands = {f"c{i}": c for i in range(4)}
    assert list(select_bonferroni(cands, M, CTRL)[1]) == [2]


def test_selections_decline_rules_that_cost_more_than_the_budget():
    "With probes dearer than reasoning, a probed default loses compute; Bonferroni and the split run to budget instead."
    ts = synthetic_traces(n=600, T=10, seed=5)
    P = ts.arrays()
    ctrl = Controller("ltt", alpha=0.2, delta=0.1, upper_loss="drop", efficiency="tokens")
    cands = make_candidates(P, {"answer_prob": ("answer_prob", "ema"), "eot_negent": ("eot_negent", "ema")}, ctrl,
                            probe_tokens=1e4, forced_tokens=1, n_grid=20)
    splits = draw_splits(np.asarray(P.solvable, bool), 30, 0.5, None, None, 0)
    ev = evaluate_selection(cands, splits, ctrl, default="answer_prob")
    d = ev[ev["mechanism"] == "default"]
    assert (d.loc[d["feasible"], "net_saving"] < 0).all() and d["feasible"].any()
    for m in ("bonferroni", "split"):
        e = ev[ev["mechanism"] == m]
        assert (e["net_saving"].abs() < 1e-12).all()
        assert (e.loc[e["feasible"], "declined"]).all()
