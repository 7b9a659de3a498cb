"Tests for adalib.risk: MAPIE cross-check, CRC reference, coverage simulation, properties, bad input."
import time
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from hypothesis.extra.numpy import arrays
from scipy.stats import binom
from mapie.risk_control.methods import compute_hoeffding_bentkus_p_value as mapie_hb
from adalib.risk import (calibrate, calibrate_batch, Calibration, METHODS, hb_pvalue, hoeffding_pvalue,
                         bentkus_pvalue, binomial_pvalue, PVALUES)

ALPHAS = [0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8]
NS = [1, 5, 20, 64, 100, 256, 1000, 4096]


# ---------- Hoeffding–Bentkus vs MAPIE ----------

def test_hb_matches_mapie_on_random_risks():
    "Off the integer lattice (n·R̂ not an integer) our HB p-value is MAPIE's, both variants, within 1e-9."
    rng = np.random.default_rng(0)
    for n in NS:
        r = rng.random(200)
        r = r[np.abs(n * r - np.round(n * r)) > 1e-6]
        for a in ALPHAS:
            for binary in (False, True):
                ours = hb_pvalue(r, n, a, binary=binary)
                theirs = mapie_hb(r, n, a, binary=binary)[:, 0]
                np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def test_hb_matches_mapie_on_exact_lattice_including_zero():
    "For n a power of two, k/n and n·(k/n) are exact, so both use ceil(k) = k; R̂ = 0 included."
    for n in (16, 64, 1024):
        r = np.arange(n + 1) / n
        for a in ALPHAS:
            for binary in (False, True):
                np.testing.assert_allclose(hb_pvalue(r, n, a, binary), mapie_hb(r, n, a, binary)[:, 0], rtol=0, atol=1e-9)
        assert np.isclose(hb_pvalue(0.0, n, 0.1), 0.9 ** n)        # R̂ = 0: a log a := 0
        assert np.isclose(mapie_hb(np.array([0.0]), n, 0.1)[0, 0], 0.9 ** n)


def test_hb_difference_from_mapie_is_only_the_ceil_rounding():
    """Where n·(k/n) lands a hair above k in floating point, MAPIE's raw ceil gives k+1; we snap to k.
    Our value is then exactly MAPIE's formula with the count k."""
    cases = [(7, 25), (15, 29), (29, 35)]
    for k, n in cases:
        r = k / n
        assert n * r != k
        for a in (0.3, 0.5, 0.8):
            ours = hb_pvalue(r, n, a)
            hoeff = hoeffding_pvalue(r, n, a)
            assert ours == pytest.approx(min(hoeff, np.e * binom.cdf(k, n, a)), abs=1e-12)
            if n * r > k:   # MAPIE uses ceil(k + eps) = k + 1: never smaller than ours (conservative)
                assert mapie_hb(np.array([r]), n, a)[0, 0] >= ours - 1e-15


def test_binary_variant_is_exact_binomial_when_bentkus_wins():
    for n in (20, 100):
        for k in range(0, n + 1, 3):
            r = k / n
            p1 = hb_pvalue(r, n, 0.3, binary=True)
            assert p1 == pytest.approx(min(hoeffding_pvalue(r, n, 0.3), binom.cdf(k, n, 0.3)), abs=1e-12)
            assert binomial_pvalue(r, n, 0.3) == pytest.approx(binom.cdf(k, n, 0.3), abs=1e-12)


# ---------- p-value properties ----------

@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), a=st.floats(0.005, 0.95), r=arrays(float, 12, elements=st.floats(0, 1)),
       name=st.sampled_from(sorted(PVALUES)))
def test_pvalues_in_unit_interval_and_monotone(n, a, r, name):
    r = np.sort(r)
    p = PVALUES[name](r, n, a)
    assert p.shape == r.shape and np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= -1e-12), (r, p)
    if name in ("hb", "hoeffding"): assert np.all(p[r >= a] == 1.0)   # the Hoeffding part is 1 once R̂ >= α


def test_hoeffding_loose_matches_ucb_inversion():
    "UCB passes iff the loose Hoeffding p-value <= δ."
    rng = np.random.default_rng(1)
    n, a, d = 80, 0.2, 0.1
    r = rng.random(500) * 0.3
    ucb = r + np.sqrt(np.log(1 / d) / (2 * n)) <= a
    assert np.array_equal(ucb, hoeffding_pvalue(r, n, a, tight=False) <= d)


# ---------- procedures ----------

def crc_reference(losses, alpha, B):
    n, m = losses.shape
    idx = None
    for j in range(m):                     # from the conservative end
        if (n * losses[:, j].mean() + B) / (n + 1) <= alpha: idx = j
        else: break
    return idx


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 60), m=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       alpha=st.floats(0.02, 0.9), B=st.sampled_from([1.0, 2.0, 0.5]))
def test_crc_matches_reference(n, m, seed, alpha, B):
    rng = np.random.default_rng(seed)
    L = np.sort(rng.random((n, m)) * B * (rng.random((n, 1)) < 0.7), axis=1)
    alpha = alpha * B
    c = calibrate(L, alpha, method="crc", B=B)
    ref = crc_reference(L, alpha, B)
    assert c.index == ref and c.feasible == (ref is not None)
    np.testing.assert_allclose(c.bound, (n * L.mean(0) + B) / (n + 1))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(5, 300), m=st.integers(1, 15), seed=st.integers(0, 2**32 - 1),
       alpha=st.floats(0.02, 0.5), delta=st.floats(0.01, 0.5),
       method=st.sampled_from(["ltt", "bonferroni", "holm"]), pvalue=st.sampled_from(["hb", "hoeffding", "binomial"]))
def test_ltt_never_selects_p_above_delta(n, m, seed, alpha, delta, method, pvalue):
    rng = np.random.default_rng(seed)
    L = (rng.random((n, m)) < np.linspace(0, 0.6, m)).astype(float)
    c = calibrate(L, alpha, delta, method, pvalue)
    assert np.all(c.pvalues[c.passed] <= delta)
    if method == "ltt":
        assert c.passed.tolist() == np.logical_and.accumulate(c.pvalues <= delta).tolist()
    if method == "bonferroni": assert np.all(c.pvalues[c.passed] <= delta / m)
    if c.feasible:
        assert c.pvalues[c.index] <= delta and c.passed[c.index] and c.index == np.flatnonzero(c.passed).max()
    else:
        assert c.index is None and not c.passed.any()


@settings(max_examples=50, deadline=None)
@given(m=st.integers(1, 20), alpha=st.floats(0.01, 0.9), delta=st.floats(0.01, 0.5),
       method=st.sampled_from(["ltt", "holm", "bonferroni", "ucb", "crc", "naive"]))
def test_all_zero_losses_certify_most_aggressive(m, alpha, delta, method):
    # enough traces for each bound to fall below alpha at R̂ = 0: (1-α)^n <= δ/m for LTT/Bonferroni/Holm,
    # sqrt(log(1/δ)/(2n)) < α for UCB, 1/(n+1) <= α for CRC
    n = {"ucb": int(np.log(1 / delta) / (2 * alpha ** 2)) + 2, "crc": int(1 / alpha) + 1, "naive": 1}.get(method, 3000)
    c = calibrate(np.zeros((n, m)), alpha, delta, method)
    assert c.feasible and c.index == m - 1 and c.passed.all()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 500), m=st.integers(1, 10), alpha=st.floats(0.01, 0.9), method=st.sampled_from(list(METHODS)))
def test_infeasible_returns_none(n, m, alpha, method):
    c = calibrate(np.ones((n, m)), alpha, 0.1, method)
    assert c.index is None and c.feasible is False and not c.passed.any()
    assert "nothing certified" in c.message and "run to budget" in c.message
    assert c.best(np.zeros(m)) is None


def test_holm_dominates_bonferroni_and_ucb_uses_n_not_grid():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, m = rng.integers(20, 200), rng.integers(2, 30)
        L = (rng.random((n, m)) < np.sort(rng.random(m) * 0.4)).astype(float)
        b, h = calibrate(L, 0.15, 0.1, "bonferroni"), calibrate(L, 0.15, 0.1, "holm")
        assert np.all(h.passed >= b.passed)
        u = calibrate(L, 0.15, 0.1, "ucb")
        np.testing.assert_allclose(u.bound, L.mean(0) + np.sqrt(np.log(10) / (2 * n)))


# ---------- simulation with known risks ----------

def simulate(method, reps=2000, n=200, m=30, alpha=0.1, delta=0.1, seed=0, pvalue="hb"):
    """Monotone grid of true Bernoulli risks crossing alpha; nested 0/1 losses (u_i < r_j). Returns the
    true risk of the selected candidate per replicate (0 when infeasible: run to budget, no early exit)."""
    r = np.linspace(0.0, 0.29, m) + 0.005
    assert not np.any(np.isclose(r, alpha))
    u = np.sort(np.random.default_rng(seed).random((reps, n)), axis=1)
    counts = np.stack([np.searchsorted(ui, r, side="left") for ui in u])    # #(u_i < r_j)
    b = calibrate_batch(counts / n, n, alpha, delta, method, pvalue)
    return np.where(b.feasible, r[b.index.filled(0)], 0.0), b


def test_simulation_ltt_ucb_control_violations_naive_does_not():
    t0 = time.perf_counter()
    reps, delta, alpha = 2000, 0.1, 0.1
    slack = delta + 3 * np.sqrt(delta * (1 - delta) / reps)
    rates = {}
    for method, pv in [("ltt", "hb"), ("ltt", "binomial"), ("ucb", "hb"), ("bonferroni", "hb"), ("holm", "hb"), ("naive", "hb")]:
        risk, b = simulate(method, reps=reps, pvalue=pv)
        rates[(method, pv)] = (risk > alpha).mean()
    for k, v in rates.items():
        if k[0] != "naive": assert v <= slack, (k, v, slack)
    assert rates[("naive", "hb")] > slack, rates
    # CRC: expected true risk of the selection <= alpha (3 standard errors of slack)
    risk, _ = simulate("crc", reps=reps)
    assert risk.mean() <= alpha + 3 * risk.std() / np.sqrt(reps)
    assert time.perf_counter() - t0 < 20


def test_calibrate_batch_matches_calibrate():
    rng = np.random.default_rng(5)
    Ls = (rng.random((40, 50, 8)) < np.linspace(0, 0.4, 8)).astype(float)
    for method in METHODS:
        b = calibrate_batch(Ls.mean(1), 50, 0.15, 0.1, method)
        for i in range(40):
            c = calibrate(Ls[i], 0.15, 0.1, method)
            assert c.index == (None if b.index.mask[i] else int(b.index[i]))
            assert np.array_equal(c.passed, b.passed[i])


# ---------- bad input: one test per case, checking the message ----------

L0 = np.zeros((10, 3))

@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\)"): calibrate(L0, alpha)

@pytest.mark.parametrize("delta", [0.0, 1.0, 2.0])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="delta must be in \\(0, 1\\)"): calibrate(L0, 0.1, delta)

def test_empty_grid():
    with pytest.raises(ValueError, match="candidate grid is empty"): calibrate(np.zeros((10, 0)), 0.1)

def test_losses_outside_range():
    L = L0.copy(); L[4, 2] = 1.5
    with pytest.raises(ValueError, match=r"\[0, B=1\]; trace row 4, candidate 2 has 1.5"): calibrate(L, 0.1)
    L[4, 2] = -0.1
    with pytest.raises(ValueError, match="trace row 4, candidate 2"): calibrate(L, 0.1)

def test_nan_losses():
    L = L0.copy(); L[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN \\(first at trace row 7, candidate 1\\)"): calibrate(L, 0.1)

def test_wrong_shape():
    with pytest.raises(ValueError, match="must be 2-D .*got shape \\(10,\\)"): calibrate(np.zeros(10), 0.1)
    with pytest.raises(ValueError, match="no calibration traces"): calibrate(np.zeros((0, 3)), 0.1)

def test_unknown_method_and_pvalue_and_binary_requirement():
    with pytest.raises(ValueError, match="method must be one of"): calibrate(L0, 0.1, method="magic")
    with pytest.raises(ValueError, match="pvalue must be one of"): calibrate(L0, 0.1, pvalue="magic")
    with pytest.raises(ValueError, match="needs 0/B losses.*trace row 0, candidate 0"): calibrate(np.full((5, 2), 0.5), 0.1, pvalue="binomial")

def test_alpha_relative_to_B():
    c = calibrate(np.zeros((3000, 2)), 1.5, 0.1, "ltt", B=2.0)
    assert c.feasible and c.index == 1
    with pytest.raises(ValueError, match="alpha must be in \\(0, 2\\)"): calibrate(L0, 2.0, B=2.0)


# ---------- the controller base (one calibration API shape) ----------

def test_risk_controller_contract():
    from adalib.risk import RiskController
    rc = RiskController("ltt", 0.1, 0.1)
    with pytest.raises(RuntimeError, match="RiskController is not calibrated: call .calibrate"): rc.predict()
    L = (np.random.default_rng(0).random((400, 8)) < np.linspace(0, 0.3, 8)).astype(float)
    fitted = rc.calibrate(L)
    assert rc.fitted_ is fitted and rc.predict() == calibrate(L, 0.1, 0.1, "ltt").index
    assert fitted.feasible and isinstance(fitted.message, str)
    assert rc.with_(delta=0.05).delta == 0.05 and rc.with_(delta=0.05).fitted_ is None
    with pytest.raises(ValueError, match="method must be one of"): RiskController("magic")
    with pytest.raises(ValueError, match="pvalue must be one of"): RiskController(pvalue="magic")
    with pytest.raises(ValueError, match="alpha must be in \\(0, 2\\)"): RiskController("ltt", 2.5, B=2.0)
    with pytest.raises(TypeError, match="delta must be a number"): RiskController("ltt", 0.1, "0.1")


# ---------------------------------------------------------------- validity over splits: infeasible is never a valid 0
import pandas as pd
from scipy.stats import binomtest
from adalib.risk import validity_summary


def _naive_validity(d, alpha, delta):
    "Reference for one setting, from plain Python lists."
    f = list(d["feasible"]); r = list(d["risk"]); c = list(d["ceil"])
    cert = [x for x, ok in zip(r, f) if ok]
    viol_c = sum(x > alpha for x in cert)
    can = sum(x > alpha for x in c) / len(c)
    status = "infeasible" if not cert else ("vacuous" if can <= delta else "tested")
    return dict(certified=len(cert), feasibility_rate=len(cert) / len(f), violation_rate=sum(x > alpha for x in r) / len(r),
                violation_rate_certified=viol_c / len(cert) if cert else np.nan, can_violate=can, status=status,
                mean_risk_certified=np.mean(cert) if cert else np.nan)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), p_feas=st.sampled_from([0.0, 0.3, 1.0]), delta=st.sampled_from([0.05, 0.1, 0.2]))
def test_validity_summary_matches_a_naive_loop(seed, p_feas, delta):
    rng = np.random.default_rng(seed)
    S = int(rng.integers(5, 40))
    df = pd.DataFrame({"method": np.repeat(["a", "b"], S), "alpha": 0.1, "split": np.tile(np.arange(S), 2),
                       "feasible": rng.random(2 * S) < p_feas, "risk": rng.random(2 * S) * 0.2})
    df["ceil"] = df["risk"] + rng.random(2 * S) * rng.choice([0.0, 0.3])       # the most permissive threshold's risk bounds any choice
    df.loc[~df["feasible"], "risk"] = 0.0                                         # an uncertified split runs to budget: drop risk 0
    out = validity_summary(df, ["method"], delta=delta, ceiling="ceil").set_index("method")
    for m, d in df.groupby("method"):
        ref = _naive_validity(d, 0.1, delta)
        for k, v in ref.items():
            got = out.loc[m, k]
            if isinstance(v, str): assert got == v, (k, got, v)
            elif np.isnan(v): assert np.isnan(got), k                             # never certified: NaN, not a valid 0
            else: assert got == pytest.approx(v, abs=1e-12), k
        lo, hi = binomtest(ref["certified"], S).proportion_ci(method="exact")
        assert (out.loc[m, "feasibility_lo"], out.loc[m, "feasibility_hi"]) == pytest.approx((lo, hi), abs=1e-9)
        if p_feas == 0.0: assert out.loc[m, "status"] == "infeasible" and out.loc[m, "violation_rate"] == 0.0


def test_validity_summary_unreachable_and_bad_input():
    df = pd.DataFrame({"alpha": 0.05, "k": "x", "feasible": [True, False], "risk": [0.1, 0.2], "full": [0.08, 0.09]})
    assert validity_summary(df, ["k"], floor="full")["status"].item() == "unreachable"
    with pytest.raises(ValueError, match=r"column\(s\) \['feasible'\] missing"): validity_summary(df.drop(columns="feasible"), ["k"])
