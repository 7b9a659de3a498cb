"""Tests for adalib.chain: FLOPs against torch's own FLOP counter, k-model cascades against a loop
(property test), EAD cost bookkeeping on a real EAD run, certified thresholds (validity over many
splits for risk and budget), the random router on the FLOPs axis, and bad input."""
import math, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from torch.utils.flop_counter import FlopCounterMode

from adalib import chain as ch, cascade as cs
from adalib.models import toy_lm

torch.set_num_threads(1)


@pytest.mark.parametrize("tied", [False, True])
def test_prefix_flops_matches_torch_flop_counter(tied):
    "One forward over T tokens (no cache): torch counts 2·P_mm·T for the matmuls and 4·L·d·T² for full attention."
    lm = toy_lm(hidden_size=32, layers=3, heads=4, kv_heads=4)
    if tied:
        lm.model.lm_head.weight = lm.model.get_input_embeddings().weight
    lm.model.config._attn_implementation = "eager"
    spec, T = ch.flop_spec(lm), 17
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        lm.model(input_ids=torch.randint(5, 40, (1, T)))
    L, d = spec["layers"], spec["hidden"]
    causal_attn = 4 * L * d * T * (T + 1) / 2
    expected = ch.prefix_flops(spec, T) - causal_attn + 4 * L * d * T * T   # the counter charges the full T×T score matrix
    assert fc.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_prefix_flops_is_the_sum_of_per_token_costs():
    spec = {"matmul_params": 1000, "layers": 2, "hidden": 8}
    per_token = [2 * 1000 + 4 * 2 * 8 * t for t in range(1, 51)]
    assert ch.prefix_flops(spec, 50) == pytest.approx(sum(per_token))
    assert np.allclose(ch.prefix_flops(spec, np.array([0, 1, 50])), [0, per_token[0], sum(per_token)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), k=st.integers(2, 4), m=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_chain_outcomes_match_the_loop(n, k, m, seed):
    r = np.random.default_rng(seed)
    C = r.random((n, k)) < 0.5; W = r.random((n, k)); S = r.random((n, k - 1))
    T = r.choice([-np.inf, 0.2, 0.5, 0.8, np.inf], size=(m, k - 1))
    a, c, w = ch.chain_outcomes(C, W, S, T)
    for j in range(m):
        lc, lw = ch.chain_loop(C, W, S, T[j])
        assert c[:, j].tolist() == lc
        assert np.allclose(w[:, j], lw)
    assert ((a >= 0) & (a < k)).all()


def test_ead_flops_on_a_real_ead_run():
    "The positions each model ran equal its prompt prefill + emitted + re-prefilled tokens (checked on a switching run)."
    small, large = cs.toy_pair(seed=0)
    ids = [1] + small.tokenizer("Q: 12+7\n<think>", add_special_tokens=False)["input_ids"]
    r = cs.ead_decode(small.model, large.model, ids, tau=0.0, max_new_tokens=20, random_p=0.5, seed=3)
    assert r.switches > 0
    rows = pd.DataFrame([{"n_tokens": r.n, "n_large": r.n_large, "reprefill_small": r.reprefill_small,
                          "reprefill_large": r.reprefill_large, "prompt_prefill_large": r.prompt_prefill_large}])
    s_spec, l_spec = ch.flop_spec(small), ch.flop_spec(large)
    f = ch.ead_flops(rows, len(ids), s_spec, l_spec)[0]
    t_small = len(ids) + (r.n - r.n_large) + r.reprefill_small
    t_large = r.prompt_prefill_large + r.n_large + r.reprefill_large
    assert t_large <= len(ids) + r.n and t_small <= len(ids) + r.n
    assert f == pytest.approx(ch.prefix_flops(s_spec, t_small) + ch.prefix_flops(l_spec, t_large))
    # all-large run costs more than all-small for the wider model
    assert ch.query_flops(l_spec, len(ids), r.n) > ch.query_flops(s_spec, len(ids), r.n)


def _synthetic_chain(n, seed):
    "Three models with rising accuracy; the confidence is informative (higher when the model is right)."
    r = np.random.default_rng(seed)
    C = r.random((n, 3)) < [0.5, 0.7, 0.9]
    S = np.clip(np.where(C[:, :2], 0.7, 0.4) + r.normal(0, 0.2, (n, 2)), 0, 1)
    W = np.column_stack([np.full(n, 1.0), np.full(n, 2.5), np.full(n, 6.0)]) * (1 + 0.2 * r.random((n, 3)))
    return C, W, S


def test_risk_certified_chain_is_valid_over_splits():
    "Violation rate (certified and test error > α) at most δ plus binomial slack, on a population far larger than calibration."
    C, W, S = _synthetic_chain(4000, 0)
    thr, paths = ch.threshold_grid([1e9, 0.9, 0.7, 0.5, 0.3, -1e9], 3)
    delta, n_splits = 0.1, 150
    ev = ch.evaluate_chain_control(C, W, S, thr, paths, alphas=[0.14, 0.2], delta=delta, n_splits=n_splits, cal_frac=0.1, seed=1)
    slack = 3 * math.sqrt(delta * (1 - delta) / n_splits)
    viol = ev.groupby("target")["violated"].mean()
    assert (viol <= delta + slack).all(), viol
    assert ev.feasible.mean() > 0.5                      # the targets are reachable: the test is not vacuous
    assert (ev.loc[ev.feasible, "share_0"] > 0).any()    # and something is saved


def test_budget_certified_chain_is_valid_and_cheaper_than_the_whole_chain():
    C, W, S = _synthetic_chain(4000, 1)
    thr, paths = ch.threshold_grid([1e9, 0.9, 0.7, 0.5, 0.3, -1e9], 3)
    bound = float(W.sum(1).max())
    ev = ch.evaluate_chain_control(C, W, S, thr, paths, budgets=[3.0, 5.0], cost_bound=bound, delta=0.1, n_splits=100,
                                   cal_frac=0.1, seed=2)
    slack = 3 * math.sqrt(0.1 * 0.9 / 100)
    assert (ev.groupby("target")["violated"].mean() <= 0.1 + slack).all()
    assert ev.feasible.all()
    by = ev.groupby("target")["test_error"].mean()
    assert by.loc[5.0] <= by.loc[3.0] + 0.01              # a larger budget buys accuracy


def test_calibrate_chain_picks_the_cheapest_certified():
    C, W, S = _synthetic_chain(3000, 3)
    thr, paths = ch.threshold_grid([1e9, 0.7, 0.5, -1e9], 3)
    fit = ch.calibrate_chain(C, W, S, thr, paths, alpha=0.2, delta=0.1)
    curve = ch.chain_curve(C, W, S, thr)
    chosen = curve.iloc[fit["index"]]
    assert chosen.accuracy >= 0.8 - 0.03
    cheaper = curve[(curve.cost < chosen.cost - 1e-12) & (curve.accuracy >= 0.8 + 0.05)]
    assert cheaper.empty                                  # nothing clearly within the target and cheaper was skipped


def test_random_router_flops_reduces_to_queries_with_equal_costs():
    r = np.random.default_rng(0)
    sc, lc = r.random(300) < 0.4, r.random(300) < 0.8
    a = ch.random_router_flops(sc, lc, np.ones(300), n_seeds=20, seed=5)
    b = cs.random_router(sc, lc, n_seeds=20, seed=5)
    assert np.allclose(a["apgr"], b["apgr"])
    assert abs(a["apgr"].mean() - 0.5) < 0.05               # random routing: PGR ≈ c on average


@pytest.mark.parametrize("bad, msg", [
    (lambda C, W, S: ch.chain_outcomes(C[:, :1], W[:, :1], S[:, :0], [[]]), "k >= 2"),
    (lambda C, W, S: ch.chain_outcomes(C, W * np.nan, S, [[.5, .5]]), "without NaN"),
    (lambda C, W, S: ch.chain_outcomes(C, W, S * np.nan, [[.5, .5]]), "NaN"),
    (lambda C, W, S: ch.chain_answerer(S, [[.5]]), "2 columns"),
    (lambda C, W, S: ch.evaluate_chain_control(C, W, S, *ch.threshold_grid([1, 0], 3)), "at least one target"),
    (lambda C, W, S: ch.calibrate_chain(C, W, S, *ch.threshold_grid([1, 0], 3), budget=1.0), "cost_bound"),
    (lambda C, W, S: ch.threshold_grid([0.5, 0.5], 3), "two distinct"),
    (lambda C, W, S: ch.random_router_flops(C[:, 0], C[:, 2], W[:, 0], n_seeds=0), "n_seeds"),
])
def test_bad_input_fails_with_one_line(bad, msg):
    C, W, S = _synthetic_chain(20, 0)
    with pytest.raises((ValueError, TypeError)) as e:
        bad(C, W, S)
    assert msg in str(e.value) and "\n" not in str(e.value)
