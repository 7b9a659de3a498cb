"""Cross-checks of adalib.calibration against torchmetrics and scikit-learn, property tests, bad input."""
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from scipy import optimize, special
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from torchmetrics.functional.classification import binary_calibration_error

from adalib import calibration as cal
from adalib import cascade

NORMS = {"l1": cal.ece, "l2": cal.rms_calibration_error, "max": cal.mce}


def tm(preds, target, n_bins, norm):
    return float(binary_calibration_error(torch.tensor(np.asarray(preds, np.float64)),
                                          torch.tensor(np.asarray(target)).long(), n_bins=n_bins, norm=norm))


# ---------------------------------------------------------------- torchmetrics cross-checks
@pytest.mark.parametrize("norm,expected", [("l1", 0.2900), ("l2", 0.2918), ("max", 0.3167)])
def test_torchmetrics_docstring_example(norm, expected):
    p, t = [.25, .25, .55, .75, .75], [0, 0, 1, 1, 1]
    ours = NORMS[norm](p, t, n_bins=2)
    assert round(ours, 4) == expected
    assert abs(ours - tm(p, t, 2, norm)) < 1e-6


@pytest.mark.parametrize("n_bins", [1, 2, 5, 10, 15, 20])
@pytest.mark.parametrize("seed", range(5))
def test_matches_torchmetrics_on_random_data(n_bins, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    p = rng.random(n) ** rng.uniform(0.3, 3)            # in [0, 1), skewed
    y = (rng.random(n) < p ** rng.uniform(0.5, 2)).astype(int)
    for norm, f in NORMS.items():
        assert abs(f(p, y, n_bins=n_bins) - tm(p, y, n_bins, norm)) < 1e-6, norm


def test_convention_difference_exact_one():
    """The one documented difference: torchmetrics puts a confidence of exactly 1.0 into an extra
    (n_bins+1)-th bin of its own; we keep it in the last, closed bin [1 - 1/n, 1]."""
    p = np.array([0.55, 0.6, 1.0, 1.0, 0.2, 0.1])
    y = np.array([1, 1, 0, 1, 0, 1])
    for norm, f in NORMS.items():
        ours, theirs = f(p, y, n_bins=2), tm(p, y, 2, norm)
        assert abs(ours - theirs) > 1e-3, norm                      # the conventions really differ here
        # ours equals torchmetrics once 1.0 is moved just inside the last bin (i.e. where we put it)
        p_in = np.where(p == 1.0, np.nextafter(1.0, 0.0), p)
        assert abs(ours - tm(p_in, y, 2, norm)) < 1e-6, norm
    # by hand: ours [0,.5): |1 - .3| ; [.5,1]: |3 - 3.15|  ->  0.85/6
    #          torchmetrics [0,.5): .7 ; [.5,1): |2 - 1.15| ; {1.0}: |1 - 2|  ->  2.55/6
    assert np.isclose(cal.ece(p, y, 2), 0.85 / 6) and np.isclose(tm(p, y, 2, "l1"), 2.55 / 6)


# ---------------------------------------------------------------- scikit-learn cross-checks
@pytest.mark.parametrize("seed", range(8))
def test_auroc_auprc_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))        # rounding creates ties
    y = rng.random(n) < special.expit(s)
    y[0], y[-1] = True, False                                         # both classes present
    w = rng.integers(0, 4, n).astype(float); w[0] = w[-1] = 1.0
    assert abs(cal.auroc(s, y) - roc_auc_score(y, s)) < 1e-12
    assert abs(cal.auprc(s, y) - average_precision_score(y, s)) < 1e-12
    assert abs(cal.auroc(s, y, weights=w) - roc_auc_score(y, s, sample_weight=w)) < 1e-12
    assert abs(cal.auprc(s, y, weights=w) - average_precision_score(y, s, sample_weight=w)) < 1e-12


def test_weights_are_multiplicities_for_every_metric():
    rng = np.random.default_rng(3)
    s = np.round(rng.random(60), 1); y = rng.random(60) < s
    w = rng.integers(0, 4, 60)
    idx = np.repeat(np.arange(60), w)
    for name, f in cal.METRICS.items():
        a, b = f(s, y, weights=w.astype(float)), f(s[idx], y[idx])
        assert np.isclose(a, b, atol=1e-12), name


def test_vectorised_bootstrap_equals_loop_with_sklearn():
    rng = np.random.default_rng(4)
    s = rng.normal(size=80); y = rng.random(80) < special.expit(2 * s)
    W = np.concatenate(list(cal.bootstrap_weights(80, 50, seed=7)))
    vec = cal.auroc(s, y, weights=W)
    loop = [roc_auc_score(y[np.repeat(np.arange(80), w.astype(int))], s[np.repeat(np.arange(80), w.astype(int))]) for w in W]
    assert np.allclose(vec, loop, atol=1e-12)
    assert W.sum(1).tolist() == [80.0] * 50


def test_bootstrap_ci_is_seeded_and_brackets_point():
    rng = np.random.default_rng(5)
    s = rng.random(300); y = rng.random(300) < s
    a = cal.bootstrap(s, y, metrics=tuple(cal.METRICS), n_boot=300, seed=11)
    b = cal.bootstrap(s, y, metrics=tuple(cal.METRICS), n_boot=300, seed=11)
    c = cal.bootstrap(s, y, metrics=tuple(cal.METRICS), n_boot=300, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert ((a["lo"] <= a["value"] + 1e-12) & (a["value"] <= a["hi"] + 1e-12)).all()
    # a cluster bootstrap over groups of 30 identical-ish rows is wider than the row bootstrap
    g = np.arange(300) // 30
    wide = cal.bootstrap(np.repeat(s[:10], 30), np.repeat(y[:10], 30), metrics=("brier",), n_boot=300, seed=1, groups=g)
    narrow = cal.bootstrap(np.repeat(s[:10], 30), np.repeat(y[:10], 30), metrics=("brier",), n_boot=300, seed=1)
    assert (wide["hi"] - wide["lo"]).iloc[0] > 2 * (narrow["hi"] - narrow["lo"]).iloc[0]


def test_bootstrap_ci_covers_true_auroc_mostly():
    "Repeated samples from a known model: the 90% CI covers the population AUROC in most draws."
    big = np.random.default_rng(0)
    xs = big.normal(size=200_000); ys = big.random(200_000) < special.expit(1.5 * xs)
    true = roc_auc_score(ys, xs)
    hits = 0
    for k in range(40):
        r = np.random.default_rng(100 + k)
        x = r.normal(size=200); yy = r.random(200) < special.expit(1.5 * x)
        ci = cal.bootstrap(x, yy, metrics=("auroc",), n_boot=400, level=0.9, seed=k).loc["auroc"]
        hits += ci["lo"] <= true <= ci["hi"]
    assert hits >= 30            # nominal 36 of 40


# ---------------------------------------------------------------- recalibrators
def test_isotonic_matches_sklearn_and_temperature_matches_grid():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 3, 3000); y = rng.random(3000) < special.expit(x / 2.5); p = special.expit(x)
    iso = cal.fit_recalibrator("isotonic", p[:1500], y[:1500])
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(x[:1500], y[:1500])
    assert np.allclose(iso.predict(p[1500:]), ref.predict(np.clip(x[1500:], *np.log([1e-6, 1 / 1e-6 - 1]))), atol=1e-9)
    t = cal.fit_recalibrator("temperature", p[:1500], y[:1500]).params["T"]
    grid = np.linspace(1, 5, 4001)
    nll = [np.mean(np.logaddexp(0, x[:1500] / g) - y[:1500] * x[:1500] / g) for g in grid]
    assert abs(t - grid[int(np.argmin(nll))]) < 2e-3
    pl = cal.fit_recalibrator("platt", p[:1500], y[:1500])
    ab = optimize.minimize(lambda v: np.mean(np.logaddexp(0, v[0] * x[:1500] + v[1]) - y[:1500] * (v[0] * x[:1500] + v[1])),
                           [1.0, 0.0]).x
    assert np.allclose([pl.params["a"], pl.params["b"]], ab, atol=2e-3)
    for r in (iso, pl):
        assert cal.ece(r.predict(p[1500:]), y[1500:]) < cal.ece(p[1500:], y[1500:]) / 2


# ---------------------------------------------------------------- explorer
def test_explore_threshold_counts():
    rng = np.random.default_rng(8)
    s = rng.random(100); y = rng.random(100) < s
    e = cal.explore_threshold(s, y, 0.6)
    keep = s >= 0.6
    assert e["coverage"] == keep.mean() and e["accuracy"] == y[keep].mean()
    assert e["confusion"].loc["correct", "accepted"] == (keep & y).sum()
    assert e["confusion"].loc["wrong", "rejected"] == (~keep & ~y).sum()
    assert e["confusion"].to_numpy().sum() == 100
    assert np.isnan(cal.explore_threshold(s, y, 2.0)["accuracy"])


# ---------------------------------------------------------------- hypothesis properties
data = st.integers(2, 200).flatmap(lambda n: st.tuples(
    st.lists(st.floats(0, 1), min_size=n, max_size=n), st.lists(st.booleans(), min_size=n, max_size=n),
    st.permutations(range(n))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data)
def test_metrics_permutation_invariant(d):
    s, y, perm = np.array(d[0]), np.array(d[1]), np.array(d[2])
    for name, f in cal.METRICS.items():
        a, b = f(s, y), f(s[perm], y[perm])
        assert (np.isnan(a) and np.isnan(b)) or np.isclose(a, b, atol=1e-12, rtol=0), name


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.data())
def test_ece_zero_on_perfectly_calibrated_bins(n_bins, d):
    """Each non-empty bin holds m rows with one confidence k/m and exactly k correct: ECE = MCE = 0."""
    rows_s, rows_y = [], []
    for b in range(n_bins):
        m = d.draw(st.integers(0, 12))
        if m == 0: continue
        lo, hi = b / n_bins, (b + 1) / n_bins
        ks = [k for k in range(m + 1) if lo <= k / m < hi or (b == n_bins - 1 and k == m)]
        if not ks: continue
        k = d.draw(st.sampled_from(ks))
        rows_s += [k / m] * m; rows_y += [1] * k + [0] * (m - k)
    if not rows_s: rows_s, rows_y = [1.0], [1]
    assert cal.ece(rows_s, rows_y, n_bins) < 1e-12 and cal.mce(rows_s, rows_y, n_bins) < 1e-12
    assert cal.rms_calibration_error(rows_s, rows_y, n_bins) < 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=300).filter(lambda y: 0 < sum(y) < len(y)), st.floats(0.1, 10))
def test_prr_one_for_oracle(y, scale):
    y = np.array(y)
    assert np.isclose(cal.prr(scale * y, y), 1.0)
    assert cal.prr(-scale * y, y) < 0 and np.isclose(cal.auroc(-scale * y, y), 0.0)
    assert np.isclose(cal.auroc(scale * y, y), 1.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.2, 0.8))
def test_prr_about_zero_for_random_scores(seed, p):
    rng = np.random.default_rng(seed)
    y = rng.random(5000) < p
    s = rng.random(5000)
    assert abs(cal.prr(s, y)) < 0.12
    assert abs(cal.auroc(s, y) - 0.5) < 0.05


# ---------------------------------------------------------------- bad input: one test per case
def test_bad_nan_score():
    with pytest.raises(ValueError, match=r"scores has a non-finite value at index 1"): cal.auroc([0.1, np.nan], [1, 0])

def test_bad_length():
    with pytest.raises(ValueError, match=r"correct must be 1-D with the same length as scores \(2\)"): cal.auroc([0.1, 0.2], [1, 0, 1])

def test_bad_labels():
    with pytest.raises(ValueError, match=r"correct must be boolean or 0/1"): cal.brier([0.1, 0.2], [2, 0])

def test_bad_probability_for_ece():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*index 1 is -0.5.*platt"): cal.ece([0.1, -0.5], [1, 0])

def test_bad_2d_scores():
    with pytest.raises(ValueError, match=r"scores must be 1-D"): cal.auroc(np.zeros((2, 2)), [1, 0])

def test_bad_string_scores():
    with pytest.raises(TypeError, match=r"scores must be numeric"): cal.auroc(["a", "b"], [1, 0])

def test_bad_empty():
    with pytest.raises(ValueError, match=r"scores is empty"): cal.auroc([], [])

def test_bad_weights():
    with pytest.raises(ValueError, match=r"weights must be finite and non-negative"): cal.auroc([0.1, 0.2], [1, 0], weights=[1, -1])

def test_bad_weight_shape():
    with pytest.raises(ValueError, match=r"weights must have shape \(n,\) or \(B, n\) with n = 2"): cal.auroc([0.1, 0.2], [1, 0], weights=[1, 1, 1])

def test_bad_n_bins():
    with pytest.raises(ValueError, match=r"n_bins must be a positive int"): cal.ece([0.1], [1], n_bins=0)

def test_bad_metric_name():
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['accuracy'\]"): cal.bootstrap([0.1, 0.2], [1, 0], metrics=("accuracy",))

def test_bad_level():
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"): cal.bootstrap([0.1, 0.2], [1, 0], level=95)

def test_bad_groups_length():
    with pytest.raises(ValueError, match=r"groups must have one entry per example \(2\)"):
        cal.bootstrap([0.1, 0.2], [1, 0], groups=[1, 2, 3])

def test_bad_recalibrator_method():
    with pytest.raises(ValueError, match=r"method must be one of \('temperature', 'platt', 'isotonic'\)"):
        cal.fit_recalibrator("beta", [0.1, 0.2], [1, 0])

def test_bad_single_class_platt():
    with pytest.raises(ValueError, match=r"single class.*platt scaling needs both"): cal.fit_recalibrator("platt", [0.1, 0.2], [1, 1])

def test_bad_prob_recalibrator_on_raw_scores():
    r = cal.fit_recalibrator("temperature", [0.1, 0.9, 0.4], [0, 1, 1])
    with pytest.raises(ValueError, match=r"fit on probabilities"): r.predict([3.0])

def test_bad_threshold():
    with pytest.raises(ValueError, match=r"threshold must be a finite number"): cal.explore_threshold([0.1], [1], float("nan"))


def test_risk_coverage_expected_curve_matches_random_tie_breaking():
    rng = np.random.default_rng(9)
    s = rng.integers(0, 4, 40).astype(float); y = rng.random(40) < (s + 1) / 5
    rc = cal.risk_coverage(s, y, expected=True)
    # expected accuracy of the top-k under random tie-breaking, by averaging many random tie orders
    acc = np.zeros(40)
    for _ in range(4000):
        o = np.lexsort((rng.random(40), -s))
        acc += np.cumsum(y[o]) / np.arange(1, 41)
    assert np.allclose(rc["accuracy"], acc / 4000, atol=0.02)
    assert np.isclose(rc["risk"].mean(), cal.aurc(s, y))
    thin = cal.risk_coverage(s, y, expected=True, max_points=10)
    assert len(thin) <= 11 and thin["coverage"].iloc[-1] == 1.0
    grouped = cal.risk_coverage(s, y)
    assert len(grouped) == len(np.unique(s)) and np.allclose(grouped["risk"].to_numpy(), rc.set_index("n_kept").loc[grouped["n_kept"], "risk"])


def test_bad_counts_shape():
    with pytest.raises(ValueError, match=r"counts must be \(n_boot, 2\) for 2 groups"):
        cal.bootstrap([0.1, 0.2], [1, 0], counts=np.ones((5, 3)))


# ---------------------------------------------------------------- paired AUROC difference

def _paired_data(seed, n=120, groups=30):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    a = y + rng.normal(0, 1.0, n); b = y + rng.normal(0, 2.0, n)
    return a, b, y, np.arange(n) % groups


def test_paired_auroc_diff_matches_brute_force():
    "Same seeded group counts, one replicate at a time, through scikit-learn's roc_auc_score."
    a, b, y, g = _paired_data(0)
    r = cal.paired_auroc_diff(a, b, y, n_boot=100, seed=3, groups=g)
    counts = cal.bootstrap_counts(30, 100, seed=3)
    d = []
    for c in counts:
        w = c[g].astype(float)
        if len(np.unique(y[w > 0])) < 2: continue
        d.append(roc_auc_score(y, a, sample_weight=w) - roc_auc_score(y, b, sample_weight=w))
    assert np.allclose([r["diff_lo"], r["diff_hi"]], np.quantile(d, [0.025, 0.975]), atol=1e-12)
    assert r["diff"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), level=st.sampled_from([0.8, 0.9, 0.95]))
def test_paired_auroc_diff_properties(seed, level):
    a, b, y, g = _paired_data(seed)
    r = cal.paired_auroc_diff(a, b, y, n_boot=200, level=level, seed=seed, groups=g)
    s = cal.paired_auroc_diff(b, a, y, n_boot=200, level=level, seed=seed, groups=g)
    assert r["diff_lo"] <= r["diff_hi"]
    assert r["diff"] == -s["diff"] and r["auroc"] == s["auroc_ref"]
    assert np.allclose([s["diff_lo"], s["diff_hi"]], [-r["diff_hi"], -r["diff_lo"]], atol=1e-12)   # swap negates the CI
    z = cal.paired_auroc_diff(a, a, y, n_boot=50, level=level, seed=seed, groups=g)
    assert z["diff"] == z["diff_lo"] == z["diff_hi"] == 0.0


def test_paired_auroc_diff_bad_input():
    with pytest.raises(ValueError, match=r"ref_scores must have shape \(3,\)"): cal.paired_auroc_diff([0.1, 0.2, 0.3], [0.1], [1, 0, 1])
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"): cal.paired_auroc_diff([0.1, 0.2], [0.2, 0.1], [1, 0], level=95)


def test_as_scores_shared_with_cascade():
    assert cascade._as_scores is cal._as_scores
    assert np.array_equal(cal._as_scores([-np.inf, 1], "score", n=2, finite=False), [-np.inf, 1.0])
    with pytest.raises(ValueError, match=r"score contains NaN \(row 0\)"): cal._as_scores([np.nan, 1], "score", n=2, finite=False)


# ---------------------------------------------------------------- paired AUROC table (s03's baseline comparison)

def test_paired_auroc_table_matches_sklearn_and_brute_force_problem_bootstrap():
    """Per group and pair: AUROCs equal scikit-learn's roc_auc_score; the CI equals a brute-force bootstrap that
    resamples PROBLEMS (several checkpoint rows each) with the same counts for both scores."""
    rng = np.random.default_rng(7)
    n_prob = 40
    reps = rng.integers(1, 6, n_prob)                              # checkpoints per problem: uneven clusters
    pid = np.repeat(np.arange(n_prob), reps)
    y = rng.random(len(pid)) < 0.45
    fr = pd.DataFrame({"task": "t", "problem_id": pid, "correct": y, "probe": y + rng.normal(0, 0.8, len(pid)),
                       "ended": (y & (rng.random(len(pid)) < 0.7)).astype(float)})
    fr = pd.concat([fr, fr.assign(task="u", probe=fr["probe"][::-1].to_numpy())], ignore_index=True)
    tab = cal.paired_auroc_table(fr, [("probe", "ended")], by=("task",), n_boot=150, seed=11)
    assert list(tab["task"]) == ["t", "u"] and (tab["n_groups"] == n_prob).all() and (tab["n_rows"] == len(pid)).all()
    for r in tab.itertuples():
        d = fr[fr["task"] == r.task]
        yy = d["correct"].to_numpy()
        assert r.auroc == pytest.approx(roc_auc_score(yy, d["probe"]), abs=1e-12)
        assert r.auroc_base == pytest.approx(roc_auc_score(yy, d["ended"]), abs=1e-12)
        counts = cal.bootstrap_counts(n_prob, 150, seed=11)        # one draw of problems, used for BOTH scores
        diffs = [roc_auc_score(yy, d["probe"], sample_weight=c[pid]) - roc_auc_score(yy, d["ended"], sample_weight=c[pid])
                 for c in counts.astype(float) if len(np.unique(yy[c[pid] > 0])) == 2]
        assert [r.diff_lo, r.diff_hi] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
        assert r.beats_ci == (r.diff_lo > 0) and r.loses_ci == (r.diff_hi < 0)
    # resampling rows instead of problems gives a different interval: the grouping is really used
    rows = cal.paired_auroc_table(fr.assign(problem_id=np.arange(len(fr))), [("probe", "ended")], by=("task",), n_boot=150, seed=11)
    assert not np.allclose(rows[["diff_lo", "diff_hi"]].to_numpy(), tab[["diff_lo", "diff_hi"]].to_numpy())


def test_paired_auroc_table_bad_input_and_absent_columns():
    fr = pd.DataFrame({"problem_id": [0, 1, 2, 3], "correct": [1, 0, 1, 0], "a": [0.9, 0.1, 0.8, 0.3], "b": [0.5, 0.5, 0.4, 0.6]})
    assert len(cal.paired_auroc_table(fr, [("a", "zzz")], by=(), n_boot=10)) == 0
    with pytest.raises(ValueError, match=r"frame lacks column\(s\) \['problem_id'\]"):
        cal.paired_auroc_table(fr.drop(columns="problem_id"), [("a", "b")])
