"Adaptive sampling (adalib.sampling, adalib.truncnorm) against brute force, naive per-problem loops and scipy."
from collections import Counter
from fractions import Fraction
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from scipy import integrate, optimize, stats
from scipy.special import beta as beta_fn

from adalib.sampling import (ASC, ESC, BestOfN, OptScale, RiskSampler, SCFixed, VoteShare, asc_stop_probability,
                             coverage_curve, coverage_law_ci, evaluate_risk_sampler, fit_coverage_law, orderings,
                             pass1_distribution, pass_at_k, pool_arrays, risk_summary, synthetic_pool, tally)
from adalib.truncnorm import fit_truncnorm, truncnorm_cdf


# ---------------------------------------------------------------- pass@k and coverage
def brute_pass_at_k(correct, k):
    "Fraction of the k-subsets of the samples that contain a correct one."
    subs = list(combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subs) / len(subs)


def test_pass_at_k_equals_enumeration_over_all_k_subsets():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(1, 11))
        correct = rng.random(n) < rng.random()
        for k in range(1, n + 1):
            assert pass_at_k(n, int(correct.sum()), k) == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_vectorised_matches_elementwise():
    n, c, k = np.array([10, 10, 7, 32]), np.array([0, 3, 7, 5]), np.array([[1], [4], [7]])
    out = pass_at_k(n, c, k)
    assert out.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert out[i, j] == pytest.approx(1 - comb(n[j] - c[j], k[i, 0]) / comb(n[j], k[i, 0]))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_exact_fraction_and_shape_properties(nck):
    n, c, k = nck
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    p = float(pass_at_k(n, c, k))
    assert abs(p - float(exact)) <= 1e-9 and 0 <= p <= 1
    if k == 1: assert p == pytest.approx(c / n)
    if n - c < k: assert p == 1.0
    if k < n: assert pass_at_k(n, c, k + 1) >= p - 1e-12          # more samples never lower coverage
    if c < n: assert pass_at_k(n, c + 1, k) >= p - 1e-12          # more correct samples neither


def test_pass_at_k_rejects_bad_counts():
    for args, msg in [((5, 6, 1), "0 <= c <= n"), ((5, 2, 0), "1 <= k <= n"), ((5.0, 2, 1), "must be integers")]:
        with pytest.raises((ValueError, TypeError), match=msg.replace("(", r"\(")): pass_at_k(*args)


def test_coverage_curve_is_mean_of_brute_force_per_problem():
    pa = pool_arrays(synthetic_pool(6, 8, seed=4))
    cov = coverage_curve(pa, [1, 3, 8])
    for k, v in zip(cov.k, cov.coverage):
        assert v == pytest.approx(np.mean([brute_pass_at_k(pa.correct[p], k) for p in range(pa.P)]))


@settings(max_examples=50, deadline=None)
@given(st.floats(0.05, 3.0), st.floats(0.05, 1.5))
def test_coverage_law_recovers_exact_power_law(a, b):
    ks = np.array([1, 2, 4, 8, 16, 32])
    cov = np.exp(-a * ks ** (-b))
    law = fit_coverage_law(ks, cov)
    assert law.a == pytest.approx(a, rel=1e-6) and law.b == pytest.approx(b, rel=1e-6)
    assert np.allclose(law.predict(ks), cov)


def test_coverage_law_ci_brackets_and_needs_two_points():
    pa = pool_arrays(synthetic_pool(300, 16, seed=1))
    ci = coverage_law_ci(pa, [1, 2, 4, 8, 16], n_boot=300)
    assert ci["b_lo"] < ci["b"] < ci["b_hi"] and ci["a_lo"] < ci["a"] < ci["a_hi"]
    with pytest.raises(ValueError, match="at least two distinct k"): fit_coverage_law([1, 2], [1.0, 1.0])


def test_pass1_beta_fit_matches_direct_betabinom_mle():
    pa = pool_arrays(synthetic_pool(3000, 16, seed=2, a=0.5, b=1.2))
    tab, fit = pass1_distribution(pa)
    assert (tab.pass1 == pa.correct.mean(1)).all()
    assert fit["a"] == pytest.approx(0.5, abs=0.06) and fit["b"] == pytest.approx(1.2, abs=0.15)
    ll = lambda a, b: stats.betabinom.logpmf(tab.c, 16, a, b).sum()
    assert ll(fit["a"], fit["b"]) >= ll(fit["a"] * 1.03, fit["b"]) and ll(fit["a"], fit["b"]) >= ll(fit["a"], fit["b"] * 0.97)


# ---------------------------------------------------------------- pools
def test_pool_arrays_codes_and_one_line_errors():
    df = pd.DataFrame({"problem_id": ["q", "q", "q", "p", "p", "p"], "sample": [2, 0, 1, 0, 1, 2],
                       "answer": ["7", "7", None, "1", "2", "1"], "correct": [1, 1, 0, 0, 1, 0], "answer_prob": [.9, .8, 0, .5, .6, .4]})
    pa = pool_arrays(df)
    assert list(pa.problem_ids) == ["p", "q"]
    assert pa.answers.tolist() == [[0, 1, 0], [0, -1, 0]] and pa.code_correct.tolist() == [[False, True], [True, False]]
    bad = [(df.drop(columns="correct"), "missing columns"), (df.iloc[:5], "ragged pool"),
           (df.assign(sample=[0, 0, 1, 0, 1, 2]), "number its samples"), (df.assign(answer_prob=[np.nan] + [.5] * 5), "answer_prob is NaN"),
           (df.assign(answer_prob=[-1.0] + [.5] * 5), "must lie in [0, 1]"), (df.assign(correct=[1, 1, 1, 0, 1, 0]), "empty answer")]
    for d, msg in bad:
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")) as e: pool_arrays(d)
        assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match="pandas DataFrame"): pool_arrays(df.to_dict())


# ---------------------------------------------------------------- naive references, one (ordering, problem) at a time
def naive_paths(seq, conf):
    "Leader (ties: first seen), top-2 counts, CRew-weighted leader and share, best-confidence answer after each draw."
    cnt, w, first, out, total, crew, best = Counter(), Counter(), {}, [], 0.0, -1, -1.0
    for t, (a, f) in enumerate(zip(seq, conf)):
        total += f
        if a >= 0:
            cnt[a] += 1; w[a] += f; first.setdefault(a, t)
            if f > best: crew, best = a, f
        lead = min(cnt, key=lambda x: (-cnt[x], first[x])) if cnt else -1
        wl = min(w, key=lambda x: (-w[x], first[x])) if w and max(w.values()) > 0 else -1
        top = sorted(cnt.values(), reverse=True) + [0, 0]
        out.append(dict(leader=lead, top1=top[0], top2=top[1], wleader=wl, wshare=w[wl] / total if wl >= 0 and total > 0 else 0.0, crew=crew))
    return out


def random_pool(seed, P=25, m=12, n_orders=6):
    pa = pool_arrays(synthetic_pool(P, m, seed=seed, n_wrong=3, p_empty=0.15))
    pa.conf = np.round(pa.conf, 1)                                      # many exact ties in the weighted vote
    return pa, orderings(P, m, n_orders, seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tally_paths_equal_naive_loop(seed):
    pa, od = random_pool(seed)
    tl = tally(pa, od)
    for o in range(od.shape[0]):
        for p in range(pa.P):
            ref = naive_paths(pa.answers[p, od[o, p]], pa.conf[p, od[o, p]])
            for k in ("leader", "top1", "top2", "wleader", "crew"):
                assert getattr(tl, k)[o, p].tolist() == [r[k] for r in ref], (k, o, p)
            assert np.allclose(tl.wshare[o, p], [r["wshare"] for r in ref])


@pytest.mark.parametrize("seed", [3, 4])
def test_scfixed_voteshare_bestofn_equal_naive_loop(seed):
    pa, od = random_pool(seed)
    rules = [SCFixed(1), SCFixed(7), VoteShare(0.7), VoteShare(0.6, weighted=True, min_samples=2, max_samples=10),
             BestOfN(5, "crew"), BestOfN(5, "random")]
    reps = [r.replay(pa, od) for r in rules]
    for o in range(od.shape[0]):
        for p in range(pa.P):
            seq, ref = pa.answers[p, od[o, p]], naive_paths(pa.answers[p, od[o, p]], pa.conf[p, od[o, p]])
            share = [r["top1"] / (t + 1) for t, r in enumerate(ref)]
            exp = [(1, ref[0]["leader"]), (7, ref[6]["leader"])]
            t1 = next((t for t in range(pa.m) if t + 1 >= 3 and share[t] >= 0.7), pa.m - 1)
            t2 = next((t for t in range(10) if t + 1 >= 2 and ref[t]["wshare"] >= 0.6), 9)
            exp += [(t1 + 1, ref[t1]["leader"]), (t2 + 1, ref[t2]["wleader"]), (5, ref[4]["crew"]), (5, seq[0])]
            got = [(int(r.n_used[o, p]), int(r.answer[o, p])) for r in reps]
            assert got == exp, (o, p)
    for r in reps: assert (r.correct == pa.is_correct(r.answer)).all()


def test_oracle_best_of_n_is_any_correct():
    pa, od = random_pool(5)
    r = BestOfN(6, "oracle").replay(pa, od)
    any_ok = np.take_along_axis(pa.correct[None], od, -1)[..., :6].any(-1)
    assert (r.correct == any_ok).all()


# ---------------------------------------------------------------- ASC and ESC on hand-made vote sequences
def beta_criterion(a, b):
    "∫_{1/2}^1 x^a (1-x)^b dx / B(a+1, b+1), by quadrature (Adaptive-Consistency's stopping criterion)."
    return integrate.quad(lambda x: x ** a * (1 - x) ** b, 0.5, 1)[0] / beta_fn(a + 1, b + 1)


def replay_sequence(rule, seq, m=None):
    "Replay a rule on one problem whose samples, in order, have answers `seq` (strings, '' empty)."
    m = m or len(seq)
    seq = list(seq) + ["z"] * (m - len(seq))
    df = pd.DataFrame({"problem_id": 0, "sample": range(m), "answer": seq, "correct": [s == "a" for s in seq], "answer_prob": 0.5})
    pa = pool_arrays(df)
    r = rule.replay(pa, np.arange(m)[None, None])
    codes = {c: s for s, c in zip(seq, pa.answers[0]) if c >= 0}
    return int(r.n_used[0, 0]), codes.get(int(r.answer[0, 0]), "")


def naive_asc_stop(seq, threshold=0.95):
    cnt = Counter()
    for t, s in enumerate(seq):
        if s: cnt[s] += 1
        top = sorted(cnt.values(), reverse=True) + [0, 0]
        if beta_criterion(top[0], top[1]) >= threshold: return t + 1
    return len(seq)


def test_asc_probability_equals_quadrature():
    for a in range(12):
        for b in range(a + 1):
            assert asc_stop_probability(a, b) == pytest.approx(beta_criterion(a, b), abs=1e-9)


@pytest.mark.parametrize("seq,stop,ans", [
    ("aaaa" + "b" * 12, 4, "a"),            # Beta(5, 1): 0.969 >= 0.95; after three a's Beta(4, 1) gives 0.9375
    ("abaaaaaaaa" + "b" * 6, 7, "a"),        # a=6, b=1: 0.965 at the 7th draw; a=5, b=1: 0.9375 before
    ("ab" * 8, 16, "a"),                     # never decisive: the budget, a leads by first occurrence
    ("abcbbbbbb" + "a" * 7, 8, "b"),
])
def test_asc_stops_exactly_where_the_beta_criterion_says(seq, stop, ans):
    assert naive_asc_stop(seq) == stop
    assert replay_sequence(ASC(0.95), seq) == (stop, ans)


def test_asc_random_sequences_match_naive_criterion():
    rng = np.random.default_rng(7)
    for _ in range(30):
        seq = list(rng.choice(["a", "b", "c", ""], 20, p=[0.5, 0.3, 0.1, 0.1]))
        assert replay_sequence(ASC(0.9), seq)[0] == naive_asc_stop(seq, 0.9)


@pytest.mark.parametrize("seq,w,stop,ans", [
    ("aaa" + "b" * 9, 3, 3, "a"),
    ("aba" + "bbb" + "a" * 6, 3, 6, "b"),
    ("aabaacbbb" + "aaa", 3, 9, "b"),        # the unanimous window's answer, though the overall leader is a (4-4 tie, a first)
    ("ab" * 6, 3, 12, "a"),                  # no window agrees: majority of all at the budget (tie -> first seen)
    ("a" * 2 + "b" + "a" * 9, 4, 8, "a"),     # windows [0,4) and [4,8): the second agrees
    (["", "", ""] + ["b", "a", "c"] * 3, 3, 12, "b"),  # a window of empty answers is not agreement
    ("abaab" + "a" * 7, 5, 10, "a"),
])
def test_esc_stops_where_the_window_rule_says(seq, w, stop, ans):
    assert replay_sequence(ESC(window=w), seq) == (stop, ans)


def test_esc_respects_max_samples():
    assert replay_sequence(ESC(window=3, max_samples=7), "ab" * 6) == (7, "a")


# ---------------------------------------------------------------- OptScale and the truncated-normal fit
@pytest.mark.parametrize("mu,sigma", [(0.7, 0.15), (0.3, 0.4), (0.9, 0.1), (0.5, 0.05), (0.95, 0.3)])
def test_truncnorm_fit_recovers_parameters_within_005_from_2000_draws(mu, sigma):
    "Stated tolerance: |error| < 0.05 in μ and σ with 2,000 draws, for μ inside [0, 1] (a mean outside the support,"
    "e.g. μ = 1.2, σ = 0.5, is poorly identified: even the exact MLE misses it by ~0.08; see the likelihood test below)."
    x = stats.truncnorm.rvs(-mu / sigma, (1 - mu) / sigma, loc=mu, scale=sigma, size=(3, 2000), random_state=np.random.default_rng(1))
    m, s = fit_truncnorm(x)
    assert np.abs(m - mu).max() < 0.05 and np.abs(s - sigma).max() < 0.05


def test_truncnorm_fit_reaches_scipy_likelihood_maximum():
    "On small samples the grid fit's log-likelihood is at least that of scipy.stats.truncnorm maximised by Nelder-Mead."
    rng = np.random.default_rng(3)
    ridge = stats.truncnorm.rvs(-1.2 / 0.5, (1 - 1.2) / 0.5, loc=1.2, scale=0.5, size=(3, 2000), random_state=rng)
    X = list(rng.beta(4, 2, (25, 6))) + list(ridge)         # small samples, and large ones whose optimum sits on a curved ridge
    mu = np.concatenate([fit_truncnorm(np.array(X[:25]))[0], fit_truncnorm(ridge)[0]])
    sg = np.concatenate([fit_truncnorm(np.array(X[:25]))[1], fit_truncnorm(ridge)[1]])
    ll = lambda x, m, s: stats.truncnorm.logpdf(x, -m / s, (1 - m) / s, loc=m, scale=s).sum()
    checked = 0
    for x, m, s in zip(X, mu, sg):
        r = optimize.minimize(lambda th: -ll(x, th[0], np.exp(th[1])), [x.mean(), np.log(x.std() + 1e-3)], method="Nelder-Mead",
                              options=dict(xatol=1e-9, fatol=1e-12, maxiter=5000))
        if -1 <= r.x[0] <= 2 and 0.005 <= np.exp(r.x[1]) <= 3:            # scipy's optimum inside the search box
            assert ll(x, m, s) >= -r.fun - 2e-3
            checked += 1
    assert checked >= 18


def test_optscale_n_star_is_smallest_n_reaching_the_target():
    rule = OptScale(target=0.85, percentile=0.9)
    rng = np.random.default_rng(0)
    scores = rng.beta(5, 2, (40, 4))
    mu, sg = fit_truncnorm(scores)
    n = rule.n_star(scores)
    for i in range(40):
        F = truncnorm_cdf(0.85, mu[i], sg[i])
        ref = next((N for N in range(1, 10 ** 6) if 1 - F ** N >= 0.9), np.inf)
        assert n[i] == ref


def test_optscale_replay_uses_n_star_and_crew_pick():
    pa, od = random_pool(6)
    rule = OptScale(0.8, 0.9, n_init=3, max_samples=10)
    tl = tally(pa, od)
    r = rule.replay(pa, od, tl)
    n = np.clip(rule.n_star(tl.conf[..., :3]), 3, 10)
    assert (r.n_used == n).all()
    assert (r.answer == np.take_along_axis(tl.crew, (r.n_used - 1)[..., None], -1)[..., 0]).all()
    prior = OptScale(0.8, 0.9, prior=(np.full(pa.P, 0.99), np.full(pa.P, 0.05)), prior_scale=(0.01, 0.1), n_init=3).replay(pa, od)
    assert prior.n_used.mean() < r.n_used.mean()                        # a prior that says 'scores near 0.99' needs few samples


# ---------------------------------------------------------------- the risk-controlled sampler
def test_risk_sampler_violation_rate_within_delta_plus_3se_over_200_splits():
    pa = pool_arrays(synthetic_pool(400, 16, seed=11))
    delta = 0.1
    for kw in (dict(), dict(weighted=True), dict(target="wrong_gap")):
        ev = evaluate_risk_sampler(pa, [0.042, 0.1, 0.17], n_splits=200, seed=0, delta=delta, n_orders=8, **kw)
        sm = risk_summary(ev, delta)
        assert (sm.splits == 200).all() and sm.within_bound.all(), (kw, sm)
        assert sm.feasible_rate.max() > 0.5 and (ev.mean_samples[ev.feasible] < 16).all()


def test_naive_calibration_breaks_the_bound_so_the_check_has_power():
    pa = pool_arrays(synthetic_pool(400, 16, seed=11))
    "At α where a candidate's risk sits right at α (the vote share is discrete, so the risk curve has steps), the"
    "uncorrected rule R̂ <= α overshoots in ~40% of splits; the same check on LTT passes (test above)."
    ev = evaluate_risk_sampler(pa, [0.042, 0.17], n_splits=200, seed=0, n_orders=8, method="naive")
    assert not risk_summary(ev, 0.1).within_bound.any()


def test_risk_sampler_infeasible_says_so_and_runs_to_budget():
    pa, od = random_pool(8, P=60)
    rs = RiskSampler(alpha=1e-4, delta=0.1, max_samples=10).calibrate(pa, od)
    assert rs.feasible is False and rs.lam is None and "nothing certified" in rs.message and "run to budget" in rs.message
    r = rs.predict(pa, od)
    assert (r.n_used == 10).all() and (r.answer == SCFixed(10).replay(pa, od).answer).all()
    ok = RiskSampler(alpha=0.3).calibrate(pa, od)
    assert ok.feasible and ok.lam in ok.lams and isinstance(ok.predict(pa, od).n_used, np.ndarray)


def test_risk_sampler_bad_settings_fail_at_construction():
    for kw, msg in [(dict(alpha=1.5), "alpha must be in"), (dict(lams=[0.6, 0.9]), "strictly decreasing"),
                    (dict(target="x"), "target must be"), (dict(method="nope"), "method must be one of")]:
        with pytest.raises(ValueError, match=msg): RiskSampler(**kw)


def test_rules_and_orders_reject_bad_input():
    pa, od = random_pool(9)
    for f, msg in [(lambda: SCFixed(0).replay(pa, od), "N must be an int"), (lambda: ESC(5, max_samples=99).replay(pa, od), "max_samples must"),
                   (lambda: ASC(1.5), "threshold must be"), (lambda: VoteShare(0.0), "lam must be"), (lambda: BestOfN(3, "best"), "select must be"),
                   (lambda: tally(pa, od[:, :3]), "orders must have shape"), (lambda: OptScale(1.2), "target and percentile"),
                   (lambda: VoteShare(0.8, min_samples=0).replay(pa, od), "min_samples must be an int"),
                   (lambda: ASC(0.9, min_samples=99).replay(pa, od), "min_samples must be an int")]:
        with pytest.raises(ValueError, match=msg): f()


# ---------------------------------------------------------------- properties of the tally on arbitrary vote sequences
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", ""]), st.sampled_from([0.0, 0.25, 0.5, 1.0])), min_size=1, max_size=14))
def test_tally_equals_naive_loop_on_any_sequence(draws):
    m = len(draws)
    df = pd.DataFrame({"problem_id": 0, "sample": range(m), "answer": [a for a, _ in draws], "correct": [a == "a" for a, _ in draws],
                       "answer_prob": [f for _, f in draws]})
    pa = pool_arrays(df)
    tl = tally(pa, np.arange(m)[None, None])
    ref = naive_paths(pa.answers[0], pa.conf[0])
    for k in ("leader", "top1", "top2", "wleader", "crew"):
        assert tl.__dict__[k][0, 0].tolist() == [r[k] for r in ref], k
    assert np.allclose(tl.wshare[0, 0], [r["wshare"] for r in ref])
    assert (tl.top1 >= tl.top2).all() and (np.diff(tl.top1[0, 0]) >= 0).all()


# ---------------------------------------------------------------- summaries
def test_summarise_paired_difference_and_matched_samples():
    from adalib.sampling import paired_difference, replay_table, sc_samples_for, summarise
    pa, od = random_pool(10, P=80)
    tab, reps = replay_table(pa, [SCFixed(n) for n in (1, 3, 6, 12)] + [ASC(0.9)], od, n_boot=300)
    s = summarise(reps["SC@12"], n_boot=300)
    assert s["accuracy"] == pytest.approx(reps["SC@12"].correct.mean()) and s["accuracy_lo"] <= s["accuracy"] <= s["accuracy_hi"]
    assert s["samples_lo"] == s["samples_hi"] == 12
    by_o = summarise(reps["SC@12"], n_boot=300, by="orderings")
    assert by_o["accuracy"] == pytest.approx(s["accuracy"]) and by_o["accuracy_hi"] - by_o["accuracy_lo"] < s["accuracy_hi"] - s["accuracy_lo"]
    d = paired_difference(reps["ASC(0.9)"], reps["SC@12"], n_boot=300)
    assert d["d_samples"] == pytest.approx(reps["ASC(0.9)"].n_used.mean() - 12) and d["d_samples_lo"] <= d["d_samples"] <= d["d_samples_hi"]
    assert d["d_accuracy"] == pytest.approx(reps["ASC(0.9)"].correct.mean() - reps["SC@12"].correct.mean())
    sc = tab[tab.rule.str.startswith("SC@")]
    best = np.maximum.accumulate(sc.sort_values("mean_samples").accuracy.to_numpy())
    n = sc_samples_for(sc, best)
    assert np.allclose(n[np.r_[True, np.diff(best) > 0]], sc.sort_values("mean_samples").mean_samples.to_numpy()[np.r_[True, np.diff(best) > 0]])
    with pytest.raises(ValueError, match="by must be"): summarise(reps["SC@12"], by="x")


def test_subset_pool_replays_like_the_full_pool_on_those_problems():
    pa, od = random_pool(12, P=40)
    idx = np.array([3, 7, 19, 30])
    full, part = ASC(0.9).replay(pa, od), ASC(0.9).replay(pa.subset(idx), od[:, idx])
    assert (full.n_used[:, idx] == part.n_used).all() and (full.correct[:, idx] == part.correct).all()
