"""Tests for adalib.cascade: routing metrics on hand-made tables, EAD endpoints and cache exactness,
risk-controlled cascades, and bad input."""
import math, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from adalib import cascade as cs
from adalib.models import char_tokenizer, new_tiny_reasoner
from adalib.risk import calibrate
from adalib.tasks import get_family
from transformers import LlamaConfig, LlamaForCausalLM

torch.set_num_threads(1)


# ---------------------------------------------------------------- metrics on hand-made tables

def brute_curve(score, small, large):
    "Independent reference: loop over every threshold (distinct scores and +inf), escalate score < tau."
    n = len(score)
    taus = [-np.inf] + sorted(set(score))[1:] + [np.inf]
    rows = []
    for t in taus:
        esc = [s < t for s in score]
        acc = sum((l if e else s) for e, s, l in zip(esc, small, large)) / n
        rows.append((sum(esc) / n, acc))
    return np.array(rows)


def test_routing_curve_matches_brute_force():
    rng = np.random.default_rng(3)
    score = rng.integers(0, 8, 60).astype(float)   # many ties
    small, large = rng.random(60) < .4, rng.random(60) < .7
    cur = cs.routing_curve(score, small, large)
    ref = brute_curve(score, small, large)
    assert np.allclose(cur[["c", "accuracy"]].to_numpy(), ref)
    assert cur.pgr.iloc[0] == 0 and cur.pgr.iloc[-1] == 1 and (np.diff(cur.c) > 0).all()


def test_random_router_apgr_is_about_half():
    rng = np.random.default_rng(0)
    small, large = rng.random(3000) < .35, rng.random(3000) < .75
    rr = cs.random_router(small, large, n_seeds=20, seed=1)
    assert len(rr["apgr"]) == 20
    assert abs(rr["apgr"].mean() - 0.5) < 0.02
    # the expected random curve is the diagonal
    assert np.abs(rr["pgr_mean"] - rr["grid"]).max() < 0.06


def test_random_router_seeds_reproducible_and_distinct():
    rng = np.random.default_rng(0)
    small, large = rng.random(300) < .35, rng.random(300) < .75
    a, b = cs.random_router(small, large, 10, seed=5), cs.random_router(small, large, 10, seed=5)
    assert np.array_equal(a["apgr"], b["apgr"]) and len(set(a["apgr"])) > 1


@pytest.mark.parametrize("f", [0.001, 0.01, 0.1, 0.3])
def test_perfect_router_on_separable_table(f):
    n = 2000
    k = int(round(f * n))
    score = np.arange(n, dtype=float)          # the small model is wrong exactly on the k lowest scores
    small, large = np.arange(n) >= k, np.ones(n, bool)
    cur = cs.routing_curve(score, small, large)
    a = cs.apgr(cur.c, cur.pgr)
    assert a == pytest.approx(1 - f / 2)       # PGR reaches 1 at c = f
    assert cs.cpt(cur.c, cur.pgr, 1.0) == pytest.approx(f)
    if f <= 0.01: assert a >= 0.995            # APGR -> 1 for a perfect router when few queries need the large model
    # the oracle finds the same curve without the score
    orc = cs.routing_curve(cs.oracle_scores(small, large), small, large)
    assert cs.apgr(orc.c, orc.pgr) == pytest.approx(a)


def test_cpt_interpolates_on_corrected_non_monotone_curve():
    c = [0, .1, .3, .5, .8, 1]
    p = [0, .5, .2, .6, .9, 1]                 # dip at .3, corrected to .5
    cc, pp = cs.monotone_curve(c, p)
    assert np.allclose(pp, [0, 0, .5, .5, .6, .9, 1, 1])
    assert cs.cpt(c, p, .25) == pytest.approx(.05)
    assert cs.cpt(c, p, .55) == pytest.approx(.3 + .2 * .05 / .1)   # on the corrected segment (.3,.5)-(.5,.6)
    assert cs.cpt(c, p, .5) == pytest.approx(.1)
    assert cs.cpt(c, p, .9) == pytest.approx(.8)
    # the raw curve would cross .55 between .5's neighbours differently: make sure the dip is ignored
    raw = np.interp(.55, [.2, .6], [.3, .5])
    assert cs.cpt(c, p, .55) != pytest.approx(raw)
    # APGR against numpy's trapezoid on a fine grid of the corrected piecewise-linear curve
    g = np.linspace(0, 1, 100001)
    assert cs.apgr(c, p) == pytest.approx(np.trapezoid(np.interp(g, cc, pp), g), abs=1e-6)


def test_monotone_curve_adds_anchors_and_drops_points_beyond_one():
    cc, pp = cs.monotone_curve([.2, 1.3], [.4, 1.2])
    assert cc.tolist() == [0, .2, 1] and pp.tolist() == [0, .4, 1]
    assert cs.apgr([.5], [.5]) == pytest.approx(.5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans()), min_size=2, max_size=40))
def test_curve_properties(rows):
    score = np.array([r[0] for r in rows], float)
    small, large = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    if large.mean() <= small.mean():
        with pytest.raises(ValueError, match="PGR is undefined"): cs.routing_curve(score, small, large)
        return
    cur = cs.routing_curve(score, small, large)
    assert cur.c.iloc[0] == 0 and cur.c.iloc[-1] == 1 and (np.diff(cur.c) > 0).all()
    cc, pp = cs.monotone_curve(cur.c, cur.pgr)
    assert (np.diff(pp) >= 0).all() and (pp >= cur.pgr.max() - 1e-12).any()
    a = cs.apgr(cur.c, cur.pgr)
    assert pp.min() - 1e-12 <= a <= pp.max() + 1e-12
    xs = [0.1, 0.5, 0.8, 1.0]
    cp = [cs.cpt(cur.c, cur.pgr, x) for x in xs]
    fin = [v for v in cp if not math.isnan(v)]
    assert fin == sorted(fin)                  # CPT is non-decreasing in x
    for x, v in zip(xs, cp):
        if not math.isnan(v): assert np.interp(v, cc, pp) >= x - 1e-9
    # the oracle is at least as good as any score, everywhere
    orc = cs.routing_curve(cs.oracle_scores(small, large), small, large)
    assert cs.apgr(orc.c, orc.pgr) >= a - 1e-12


# ---------------------------------------------------------------- EAD

@pytest.fixture(scope="module")
def pair():
    return cs.toy_pair(seed=0)


def hf_greedy(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


@pytest.mark.parametrize("prompt", ["Q: 3+4=?\n<think>", "Q: spell backward: cat\n<think>"])
def test_ead_endpoints_reproduce_each_model(pair, prompt):
    s, l = pair
    ids = s.tokenizer(prompt)["input_ids"]
    small = cs.ead_decode(s.model, l.model, ids, tau=math.inf, max_new_tokens=25)
    large = cs.ead_decode(s.model, l.model, ids, tau=-math.inf, max_new_tokens=25)
    assert small.tokens == hf_greedy(s.model, ids, 25) and small.n_large == 0 and small.large_fraction == 0
    assert large.tokens == hf_greedy(l.model, ids, 25) and large.large_fraction == 1
    assert small.prompt_prefill_large == 0 and large.prompt_prefill_large == len(ids)
    assert small.reprefill_large == small.reprefill_small == large.reprefill_large == 0
    # random switching with p = 0 / 1 is the same as the endpoints
    assert cs.ead_decode(s.model, l.model, ids, 0.0, random_p=0.0, max_new_tokens=25).tokens == small.tokens
    assert cs.ead_decode(s.model, l.model, ids, 0.0, random_p=1.0, max_new_tokens=25).tokens == large.tokens


@torch.inference_mode()
def reference_ead(small, large, ids, tau, window, n):
    "Cache-free EAD: full forward of the whole sequence each step; same decision rule."
    seq, hist, who, active = list(ids), [], [], 0
    models = (small, large)
    for _ in range(n):
        hist.append(float(cs.entropy_nats(models[active](torch.tensor([seq])).logits[0, -1])))
        active = 1 if np.mean(hist[-window:]) > tau else 0
        seq.append(int(models[active](torch.tensor([seq])).logits[0, -1].argmax())); who.append(active)
    return seq[len(ids):], who


def test_ead_mixed_matches_cache_free_reference_and_counts_reprefill(pair):
    s, l = pair
    ids = s.tokenizer("Q: 9-2+5=?\n<think>")["input_ids"]
    H = cs.ead_decode(s.model, l.model, ids, math.inf, max_new_tokens=40).entropy
    for q in (0.4, 0.6):
        tau = float(np.quantile(cs.rolling_entropy(H, 4), q))
        r = cs.ead_decode(s.model, l.model, ids, tau, window=4, max_new_tokens=40)
        toks, who = reference_ead(s.model, l.model, ids, tau, 4, 40)
        assert r.tokens == toks and r.large.astype(int).tolist() == who
        assert r.switches == int(np.sum(np.diff(np.r_[0, who]) != 0)) >= 2
        seen, miss, act = [0, 0], [0, 0], 0
        for i, m in enumerate(who):
            if m != act: miss[m] += i - seen[m]; act = m
            seen[m] = i + 1
        assert (r.reprefill_small, r.reprefill_large) == tuple(miss)
        assert r.large_fraction_reprefill == pytest.approx((r.n_large + r.reprefill_large) / r.n)


def test_ead_stops_at_eos_and_stop_fn(pair):
    s, l = pair
    ids = s.tokenizer("Q: 1+1=?\n<think>")["input_ids"]
    free = cs.ead_decode(s.model, l.model, ids, math.inf, max_new_tokens=20)
    eos = free.tokens[4]
    r = cs.ead_decode(s.model, l.model, ids, math.inf, max_new_tokens=20, eos_token_id=eos)
    assert r.stop == "eos" and r.tokens == free.tokens[:free.tokens.index(eos) + 1]
    r = cs.ead_decode(s.model, l.model, ids, math.inf, max_new_tokens=20, stop_fn=lambda g: len(g) == 3)
    assert r.stop == "stop_fn" and r.n == 3
    assert free.stop == "max_new_tokens" and free.n == 20


def test_ead_generate_with_tiny_reasoner_format():
    s, l = new_tiny_reasoner("tiny-reasoner-small", seed=0), new_tiny_reasoner("tiny-reasoner", seed=1)
    probs = get_family("chain_sum").generate(2, 1, seed=0)
    sw = cs.ead_sweep(s, l, probs, [math.inf, -math.inf], window=5, max_new_tokens=16)
    assert len(sw) == 4 and set(sw.tau) == {math.inf, -math.inf}
    cur = cs.ead_curve(sw)
    assert cur.c.tolist() == [0.0, 1.0] and cur.c_reprefill.tolist() == [0.0, 1.0]
    ans = cs.generate_answers(s, probs, max_new_tokens=16, batch_size=2)
    assert ans.n_tokens.tolist() == sw[sw.tau == math.inf].n_tokens.tolist()


def test_answer_span_and_scores():
    tok = char_tokenizer()
    g = tok("3+4=7\n</think> A: 7\n")["input_ids"] + [tok.eos_token_id]
    ans, a, b = cs.answer_span(tok, g, "</think>", " A: ", "\n")
    assert ans == "7" and tok.decode(g[a:b]) == "7"
    sc = cs.generation_scores(np.log([.5, .5, .8]), [1., 1., 4.], 2, 3)
    assert sc["sig_answer_prob"] == pytest.approx(.8) and sc["sig_negent"] == pytest.approx(-2.)
    assert cs.generation_scores(np.log([.5]), [1.], 0, 0)["sig_answer_prob"] == 0.0


# ---------------------------------------------------------------- thresholds and risk control

def test_quantile_threshold_hits_target_rate():
    s = np.random.default_rng(0).random(1000)
    for q in (0.05, 0.3, 0.77):
        t = cs.quantile_threshold(s, q)
        assert cs.route(s, t).mean() == pytest.approx(q, abs=1e-3)
        assert t == pytest.approx(np.quantile(s, q, method="higher"), abs=1e-2)
    assert cs.quantile_threshold(s, 0) == -math.inf and cs.quantile_threshold(s, 1) == math.inf


def test_cascade_losses_match_loop():
    rng = np.random.default_rng(1)
    s, sm, lg = rng.random(30), rng.random(30) < .5, rng.random(30) < .8
    taus = cs.tau_grid(s, 10)
    L = cs.cascade_losses(s, sm, lg, taus)
    for j, t in enumerate(taus):
        for i in range(30):
            assert L[i, j] == float(not (lg[i] if s[i] < t else sm[i]))
    assert taus[0] == math.inf and taus[-1] == -math.inf


def synth(n, seed=0):
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    return score, rng.random(n) < 0.2 + 0.75 * score, rng.random(n) < 0.9


def test_risk_controlled_cascade_validity():
    score, small, large = synth(1200)
    delta, n_splits = 0.1, 100
    ev = cs.evaluate_cascade_risk(score, small, large, alphas=[0.13, 0.2], delta=delta, n_splits=n_splits, seed=0)
    assert len(ev) == 2 * n_splits
    slack = 3 * math.sqrt(delta * (1 - delta) / n_splits)
    assert (ev.groupby("alpha").violated.mean() <= delta + slack).all()
    assert ev.groupby("alpha").feasible.mean().min() > 0.9
    # a looser target escalates less
    esc = ev.groupby("alpha").test_escalation_rate.mean()
    assert esc[0.2] < esc[0.13]


def test_risk_controlled_cascade_cross_check_naive():
    "method='naive' must pick the least escalating candidate whose empirical risk is <= alpha."
    score, small, large = synth(400, seed=2)
    cc = cs.CascadeController("naive", alpha=0.2, grid_size=30).calibrate(score, small, large)
    taus = cs.tau_grid(score, 30)
    risks = [np.mean(np.where(score < t, ~large, ~small)) for t in taus]
    ok = [j for j, r in enumerate(risks) if r <= 0.2]
    assert cc.feasible and cc.tau == taus[max(ok)]


def test_infeasible_alpha_is_explicit():
    score, small, large = synth(600)
    cc = cs.CascadeController("ltt", alpha=0.05).calibrate(score, small, large)   # below the large model's ~10% error
    assert not cc.feasible and cc.tau == math.inf and cc.calibration.index is None
    ev = cs.evaluate_cascade_risk(score, small, large, alphas=[0.05], n_splits=10, seed=0)
    assert not ev.feasible.any() and not ev.violated.any()


# ---------------------------------------------------------------- bad input

def test_bad_scores_nan():
    with pytest.raises(ValueError, match="score contains NaN"):
        cs.routing_curve([0.1, np.nan], [True, False], [True, True])


def test_bad_shapes():
    with pytest.raises(ValueError, match="differ in length"):
        cs.routing_curve([0.1, 0.2], [True, False], [True, True, False])
    with pytest.raises(ValueError, match="score must have shape"):
        cs.routing_curve([0.1], [True, False], [True, True])


def test_bad_equal_accuracy():
    with pytest.raises(ValueError, match="PGR is undefined"):
        cs.routing_curve([0.1, 0.2], [True, False], [False, True])
    with pytest.raises(ValueError, match="not more accurate"):
        cs.routing_curve([0.1, 0.2], [True, True], [False, True])


def test_bad_correctness_values():
    with pytest.raises(ValueError, match="small_correct must be boolean"):
        cs.routing_curve([0.1, 0.2], [2, 0], [True, True])


def test_bad_curve_points():
    with pytest.raises(ValueError, match="c must be >= 0"):
        cs.apgr([-0.1, 0.5], [0, 1])
    with pytest.raises(ValueError, match="must not contain NaN"):
        cs.cpt([0.1, 0.5], [np.nan, 1], 0.5)


def test_bad_rate_and_alpha():
    with pytest.raises(ValueError, match="rate must be in"):
        cs.quantile_threshold([1.0, 2.0], 1.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        cs.CascadeController("ltt", alpha=1.5)
    with pytest.raises(ValueError, match="cal_frac"):
        cs.evaluate_cascade_risk([0.1, 0.2], [True, False], [True, True], [0.2], cal_frac=1.0)


def test_bad_ead_arguments(pair):
    s, l = pair
    ids = s.tokenizer("Q: 1\n<think>")["input_ids"]
    with pytest.raises(TypeError, match="tau must be a real number"): cs.ead_decode(s.model, l.model, ids, tau=float("nan"))
    with pytest.raises(TypeError, match="tau must be a real number"): cs.ead_decode(s.model, l.model, ids, tau="high")
    with pytest.raises(ValueError, match="window must be a positive integer"): cs.ead_decode(s.model, l.model, ids, 1.0, window=0)
    with pytest.raises(ValueError, match="prompt_ids is empty"): cs.ead_decode(s.model, l.model, [], 1.0)
    with pytest.raises(ValueError, match="max_new_tokens"): cs.ead_decode(s.model, l.model, ids, 1.0, max_new_tokens=0)
    with pytest.raises(ValueError, match="random_p must be in"): cs.ead_decode(s.model, l.model, ids, 1.0, random_p=2.0)


def test_bad_vocab_mismatch(pair):
    s, _ = pair
    other = LlamaForCausalLM(LlamaConfig(vocab_size=len(s.tokenizer) + 5, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="vocab_size differ"):
        cs.ead_decode(s.model, other, [1, 2, 3], 1.0)
    tok2 = char_tokenizer(); tok2.add_tokens(["<new>"])
    with pytest.raises(ValueError, match="share a tokenizer"):
        cs.check_shared_tokenizer(s.tokenizer, tok2)


def test_bad_lm_object(pair):
    s, l = pair
    with pytest.raises(TypeError, match="small must be an adalib.models.LM"):
        cs.ead_generate(s.model, l, None, 1.0)


def test_bad_cascade_tables():
    a = pd.DataFrame({"problem_id": ["p1", "p2"], "correct": [True, False], "n_tokens": [3, 4]})
    with pytest.raises(ValueError, match="lacks columns"):
        cs.cascade_table(a.drop(columns="n_tokens"), a)
    with pytest.raises(ValueError, match="same, unique problem_ids"):
        cs.cascade_table(a, a.assign(problem_id=["p1", "p3"]))


def test_cost_weighted_curve_matches_brute_force():
    rng = np.random.default_rng(4)
    score, small, large = rng.random(40), rng.random(40) < .4, rng.random(40) < .8
    cost = rng.integers(1, 30, 40).astype(float)
    cur = cs.routing_curve(score, small, large, cost=cost)
    for t, c in zip(cur.tau, cur.c):
        assert c == pytest.approx(cost[score < t].sum() / cost.sum())
    with pytest.raises(ValueError, match="cost must be non-negative"):
        cs.routing_curve(score, small, large, cost=-cost)


def test_cascade_controller_shape():
    score, small, large = synth(400, seed=4)
    ctrl = cs.CascadeController("ltt", alpha=0.2, delta=0.1)
    assert not ctrl.is_calibrated and "uncalibrated" in repr(ctrl)
    with pytest.raises(RuntimeError, match="not calibrated: call .calibrate"): ctrl.predict(score)
    fitted = ctrl.calibrate(score, small, large)
    assert fitted is ctrl and fitted.is_calibrated and isinstance(fitted.message, str)
    assert (fitted.predict(score) == (score < fitted.tau)).all()
    assert fitted.escalation_rate_cal == pytest.approx(np.mean(score < fitted.tau))


def test_cascade_controller_matches_risk_calibrate():
    "The controller's tau is the candidate risk.calibrate picks on the cascade loss matrix."
    score, small, large = synth(500, seed=6)
    taus = cs.tau_grid(score, 50)
    cal = calibrate(cs.cascade_losses(score, small, large, taus), 0.2, delta=0.1, method="ltt")
    assert cs.CascadeController("ltt", 0.2, 0.1, grid_size=50).calibrate(score, small, large).tau == taus[cal.index]


@pytest.mark.parametrize("kw,msg", [(dict(method="magic"), "method must be one of"), (dict(alpha=0.0), "alpha must be in"),
                                    (dict(delta=1.0), "delta must be in"), (dict(pvalue="nope"), "pvalue must be one of"),
                                    (dict(B=-1), "B \\(loss bound\\)"), (dict(grid_size=0), "grid_size must be a positive int")])
def test_cascade_controller_bad_settings(kw, msg):
    with pytest.raises(ValueError, match=msg): cs.CascadeController(**kw)


def test_pgr_of_and_random_router_summary():
    assert np.allclose(cs.pgr_of([0.5, 0.7], 0.5, 0.9), [0, 0.5])
    assert np.isnan(cs.pgr_of([0.5, 0.7], 0.9, 0.9)).all()
    small, large = np.arange(100) % 3 == 0, np.ones(100, bool)
    rr = cs.random_router(small, large, n_seeds=5, seed=0)
    summ = cs.random_router_summary(rr)
    assert summ["apgr"] == rr["apgr"].mean() and summ["apgr_std"] == rr["apgr"].std()
    assert np.isnan(cs.routing_metrics([0, 0.5, 1], [np.nan, 0.5, 1], undefined="nan")["cpt50"])
