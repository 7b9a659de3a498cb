"""Tests for adalib.exits/stopping/evaluation: vectorised exits vs reference loops, rule semantics, two-step calibration,
the Controller API, bad inputs, the infeasible result, and end-to-end risk validity over many splits."""
import math
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from scipy.special import expit

from adalib.exits import ema, lower_exits, lower_exits_loop, stability, upper_exits, upper_exits_loop
from adalib.risk import calibrate, select
from adalib.splits import mixture_indices
from adalib.stopping import (Controller, CombinedRule, LowerRule, UpperRule, Pool, Rule, calibrate_ensemble, combine_exits,
                             exit_losses, trace_stats)
from adalib.evaluation import budget_curve, evaluate_splits, violation_summary
from adalib.traces import TraceSet, synthetic_traces

HSET = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class P_:
    "Minimal padded traces (the adalib.traces.Padded fields the module uses)."
    def __init__(self, sig, correct, lengths=None, tokens=None):
        sig = np.asarray(sig, float); self.correct = np.asarray(correct, bool)
        n, T = self.correct.shape
        self.lengths = np.asarray(lengths if lengths is not None else [T] * n)
        self.mask = np.arange(T)[None, :] < self.lengths[:, None]
        self.tokens = np.asarray(tokens, float) if tokens is not None else np.tile(10.0 * np.arange(1, T + 1), (n, 1))
        self.signals = {"c": sig}
        self.solvable = self.correct[np.arange(n), self.lengths - 1]
        self.trace_ids = np.array([f"t{i}" for i in range(n)], dtype=object)
        self.answers = np.where(self.correct, "right", "wrong").astype(object)


@st.composite
def padded_arrays(draw, dyadic=False):
    n = draw(st.integers(1, 6)); T = draw(st.integers(1, 7))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=n, max_size=n)))
    if dyadic:  # multiples of 1/8 offset by 1/16: never exactly on a dyadic threshold grid
        s = (np.array(draw(st.lists(st.integers(-8, 8), min_size=n * T, max_size=n * T))) / 8 + 1 / 16).reshape(n, T)
    else:
        s = np.array(draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=n * T, max_size=n * T))).reshape(n, T)
    tok = np.cumsum(np.array(draw(st.lists(st.integers(1, 50), min_size=n * T, max_size=n * T))).reshape(n, T), axis=1).astype(float)
    # padded positions repeat the last valid value (the Padded convention) -- and must be ignored anyway
    idx = np.minimum(np.arange(T)[None, :], lengths[:, None] - 1)
    return np.take_along_axis(s, idx, 1), np.take_along_axis(tok, idx, 1), lengths


@HSET
@given(padded_arrays(), st.lists(st.floats(-3.5, 3.5, allow_nan=False), min_size=1, max_size=12))
def test_upper_exits_equal_loop(arr, grid):
    s, _, lengths = arr
    grid = grid + [float(s[0, 0])]          # an exact tie with a signal value
    assert (upper_exits(s, lengths, grid) == upper_exits_loop(s, lengths, grid)).all()


@HSET
@given(padded_arrays(dyadic=True), st.lists(st.integers(-9, 9), min_size=1, max_size=8, unique=True),
       st.lists(st.tuples(st.floats(0, 300), st.sampled_from([0.0, 0.003, 0.05, 1.0, 50.0])), min_size=1, max_size=4),
       st.integers(-6, 8))
def test_lower_exits_equal_loop(arr, lows8, shapes, u8):
    s, tok, lengths = arr
    lows, u = np.array(lows8) / 8, u8 / 8
    shifts = np.array([a for a, _ in shapes]); slopes = np.array([b for _, b in shapes])
    got = lower_exits(s, tok, lengths, lows, shifts, slopes, u, chunk_elems=7)
    assert (got == lower_exits_loop(s, tok, lengths, lows, shifts, slopes, u)).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_lower_exits_equal_loop_continuous(seed):
    "Continuous random values and grids, including huge slopes (sigmoid == 1 exactly) and exact ties g == s."
    rng = np.random.default_rng(seed)
    n, T = 8, 10
    lengths = rng.integers(1, T + 1, n)
    s = rng.normal(0, 1, (n, T)); tok = np.cumsum(rng.integers(1, 40, (n, T)), 1).astype(float)
    lows = np.r_[rng.normal(0, 1, 12), s[0, 0], -5.0]
    shifts = rng.uniform(0, 300, 5); slopes = np.r_[0.0, rng.choice([1e-3, 0.03, 0.5, 1e3], 4)]
    u = float(s[1, 1])
    assert (lower_exits(s, tok, lengths, lows, shifts, slopes, u) == lower_exits_loop(s, tok, lengths, lows, shifts, slopes, u)).all()


def test_rule_semantics_hand_made():
    # trace 0 becomes confident at t=2; trace 1 decays (hopeless); trace 2 never crosses either threshold
    p = P_([[0.4, 0.6, 0.9, 0.9], [0.5, 0.4, 0.3, 0.2], [0.5, 0.6, 0.5, 0.6]],
           [[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 1]])
    s = p.signals["c"]
    up = upper_exits(s, p.lengths, [0.9, 0.6])
    assert up.tolist() == [[2, 4, 4], [1, 4, 1]]                       # >= : a tie with 0.6 fires
    lo = lower_exits(s, p.tokens, p.lengths, [0.35], [25.0], [0.0], u=0.35)  # slope 0: g = 0.35 everywhere
    assert lo[0, 0].tolist() == [4, 2, 4]
    # sigmoid rising in tokens: g = 0 + (0.5 - 0)*σ(1000*(ω - 25)) ≈ 0 before 25 tokens, 0.5 after
    lo2 = lower_exits(s, p.tokens, p.lengths, [0.0], [25.0], [1000.0], u=0.5)
    assert lo2[0, 0].tolist() == [4, 2, 2]
    step, kind = combine_exits(up[0], lo2[0, 0], p.lengths)
    assert step.tolist() == [2, 2, 2] and kind.tolist() == [1, 2, 2]
    # exact tie of the two exits counts as an upper exit; never firing means the budget (last checkpoint)
    step, kind = combine_exits(np.array([1, 4]), np.array([1, 4]), np.array([4, 4]))
    assert step.tolist() == [1, 3] and kind.tolist() == [1, 0]
    d = exit_losses(trace_stats(p), np.array([2, 2, 2]), np.array([1, 2, 2]))
    assert d["upper"].tolist() == [0, 1, 1] and d["lower"].tolist() == [0, 0, 1]
    # a lower exit AT the last checkpoint is not "stopped before the budget"
    assert exit_losses(trace_stats(p), np.array([3, 3, 3]), np.array([2, 2, 2]))["lower"].tolist() == [0, 0, 0]
    # J+ counts checkpoints after the first correct one; J- the wrong ones up to the exit
    assert np.allclose(d["jplus"], [0.25, 0, 0]) and np.allclose(d["jminus"], [0.25, 0.75, 0.75])


def test_smoothers():
    x = np.array([[0.0, 1.0, 1.0]])
    assert np.allclose(ema(x, 0.5), [[0, 0.5, 0.75]])
    st_ = stability(np.array([[0.5, 0.5, 1.0]]), 0.5, v0=0.25)
    # v1 = 0.5*(0.25 + 0) = 0.125, v2 = 0.5*(0.125 + 0.5*0.25) = 0.125
    assert np.allclose(st_, [[0.75, 0.875, 0.875]])


def test_cumulative_loss_is_monotone_in_the_threshold():
    ts = synthetic_traces(300, 12, seed=3, solvable_frac=0.6)
    rule = UpperRule("answer_prob").resolve(ts)
    pool = Pool(ts.arrays(), rule, Controller("ltt", 0.1, 0.1))
    loss, _ = pool.upper_matrices(Controller("ltt", 0.1, 0.1, upper_loss="drop"))
    assert (np.diff(loss, axis=0) >= 0).all()      # grid high -> low: per-trace loss non-decreasing
    loss_plain, _ = pool.upper_matrices(Controller("ltt", 0.1, 0.1, cumulative=False))
    loss_cum, _ = pool.upper_matrices(Controller("ltt", 0.1, 0.1, cumulative=True))
    assert (loss_cum >= loss_plain).all()          # cumulative bounds the plain loss pointwise


def test_two_step_calibration_ties_u_to_lambda_upper():
    ts = synthetic_traces(600, 16, seed=4, solvable_frac=0.5)
    rule = CombinedRule(UpperRule("answer_prob"), LowerRule("answer_prob")).resolve(ts)
    ctl = Controller("ltt", alpha=0.1, delta=0.1, alpha_lower=0.05, upper_loss="drop")
    f = ctl.calibrate(rule, ts)
    # step 1 is the upper rule alone
    fu = ctl.calibrate(rule.upper, ts)
    assert f.lambda_upper == fu.lambda_upper is not None
    assert f.lower_params["u"] == f.lambda_upper
    assert f.lower_selection.alpha == 0.05 and f.upper_selection.alpha == 0.1
    # step 2 certifies the lower loss of the COMBINED rule with λ₊ fixed: recompute it by hand
    P = ts.arrays(); S = trace_stats(P); x = ema(P.signals["answer_prob"], 0.5, P.lengths)
    lp = f.lower_params
    e_up = upper_exits(x, P.lengths, [f.lambda_upper])[0]
    e_lo = lower_exits(x, P.tokens, P.lengths, [lp["l"]], [lp["shift"]], [lp["slope"]], lp["u"])[0, 0]
    step, kind = combine_exits(e_up, e_lo, P.lengths)
    d = exit_losses(S, step, kind, "drop", True, "stop")
    assert np.isclose(d["lower"].mean(), f.lower_selection.risk_hat[f.lower_selection.index])
    assert f.lower_selection.pvalues[f.lower_selection.index] <= 0.1 / rule.lower.n_shapes   # δ split over shapes
    # upper infeasible -> upper switched off, u = the most conservative λ₊ candidate
    g = Controller("ltt", alpha=0.01, delta=0.1, alpha_lower=0.2, upper_loss="wrong").calibrate(rule, ts.subset(ts.trace_ids[:100]))
    assert g.lambda_upper is None and (g.lower_params is None or g.lower_params["u"] == rule.upper.grid[0])


def test_controller_api_and_evaluate():
    ts = synthetic_traces(500, 16, seed=5, solvable_frac=0.7)
    cal, test = ts.split(0.4, seed=1)
    rule = UpperRule("answer_prob").resolve(ts)
    for method in ("naive", "ucb", "crc", "ltt", "bonferroni", "holm"):
        f = Controller(method, alpha=0.1, delta=0.1, upper_loss="drop").calibrate(rule, cal)
        assert f.feasible, (method, f.message)
        assert set(f.lambda_hat) == {"lambda_upper"} and f.lambda_hat["lambda_upper"] in rule.grid
        if method in ("ucb", "crc"): assert f.bound["upper"] <= 0.1 and f.pvalues["upper"] is None
        if method in ("ltt", "bonferroni", "holm"): assert f.pvalues["upper"] <= 0.1
    f = Controller("ucb", alpha=0.1, delta=0.1, upper_loss="drop").calibrate(rule, cal)
    j = f.upper_selection.index
    # Hoeffding with n = number of calibration TRACES (not the grid size, the reference code's bug)
    assert np.isclose(f.upper_selection.bound[j], f.upper_selection.risk_hat[j] + math.sqrt(math.log(1 / 0.1) / (2 * cal.n)))
    ex = f.exit_steps(test)
    assert list(ex.columns) == ["trace_id", "step", "kind", "tokens", "correct", "solvable", "length"] and len(ex) == test.n
    ev = Controller("ucb", alpha=0.1, delta=0.1, upper_loss="drop").evaluate(f, test)
    assert ev["n"] == test.n and 0 <= ev["risk_upper"] <= 1 and ev["tokens"] <= ev["tokens_budget"]
    assert np.isclose(ev["exit_upper"] + ev["exit_lower"] + ev["exit_budget"], 1.0)
    # the chosen candidate is the most efficient certified one
    sel = f.upper_selection
    assert sel.efficiency[j] == sel.efficiency[sel.certified].min()


@pytest.mark.parametrize("kw,field", [({"alpha": 0.0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": -0.2}, "alpha"),
                                       ({"delta": 0.0}, "delta"), ({"delta": 1.5}, "delta"), ({"alpha_lower": 1.0}, "alpha_lower")])
def test_bad_levels(kw, field):
    with pytest.raises(ValueError, match=f"{field} must be in \\(0, 1\\)"):
        Controller("ltt", **{"alpha": 0.1, "delta": 0.1, **kw})


def test_bad_level_type_and_method():
    with pytest.raises(TypeError, match="alpha must be a number"): Controller("ltt", alpha="0.1")
    with pytest.raises(ValueError, match="method must be one of"): Controller("bootstrap", 0.1, 0.1)
    with pytest.raises(ValueError, match="efficiency must be one of"): Controller("ltt", 0.1, 0.1, efficiency="flops")


def test_empty_grids():
    with pytest.raises(ValueError, match="UpperRule.grid is empty"): UpperRule("answer_prob", grid=[])
    with pytest.raises(ValueError, match="LowerRule.lows is empty"): LowerRule("answer_prob", lows=[])
    with pytest.raises(ValueError, match="upper grid is empty"): upper_exits(np.zeros((2, 3)), [3, 3], [])
    with pytest.raises(ValueError, match="candidate grid is empty"): select(np.zeros((5, 0)), np.zeros(0), 0.1)
    with pytest.raises(ValueError, match="NaN or inf"): UpperRule("answer_prob", grid=[0.5, np.nan])


def test_bad_rules_and_signals():
    ts = synthetic_traces(50, 8, seed=0)
    with pytest.raises(ValueError, match="same signal and smoother"):
        CombinedRule(UpperRule("answer_prob"), LowerRule("eot_negent"))
    with pytest.raises(ValueError, match="signal 'nope' is not in these traces; available"):
        Controller("ltt", 0.1, 0.1).calibrate(UpperRule("nope"), ts)
    with pytest.raises(TypeError, match="rule must be an UpperRule, LowerRule, CombinedRule or another adalib.stopping.Rule"):
        Controller("ltt", 0.1, 0.1).calibrate("answer_prob", ts)
    with pytest.raises(ValueError, match="smoother must be one of"): UpperRule("answer_prob", smoother="median")
    with pytest.raises(ValueError, match="shifts and slopes"): LowerRule("answer_prob", shifts=[1.0, 2.0], slopes=[1.0])


def test_too_small_calibration_set_is_an_infeasible_result():
    ts = synthetic_traces(200, 8, seed=1, solvable_frac=1.0)
    tiny = ts.subset(ts.trace_ids[:10])
    for method in ("ltt", "ucb"):
        f = Controller(method, alpha=0.1, delta=0.1, upper_loss="drop").calibrate(UpperRule("answer_prob").resolve(ts), tiny)
        assert not f.feasible and f.lambda_upper is None
        assert "nothing certified" in f.message and "n=10" in f.message and "runs every trace to its budget" in f.message
        need = 22 if method == "ltt" else math.ceil(math.log(10) / (2 * 0.01))
        assert f"n >= {need}" in f.message
        ex = f.exit_steps(tiny)
        assert (ex["kind"] == "budget").all() and (ex["step"] == ex["length"] - 1).all()


def test_mixtures_and_split_determinism():
    ts = synthetic_traces(400, 10, seed=2, solvable_frac=0.5)
    sol = ts.arrays().solvable
    for ratio, frac in (("3:1", 0.75), ("1:1", 0.5), ("1:3", 0.25)):
        mi = mixture_indices(sol, ratio, np.random.default_rng(0))
        assert abs(sol[mi].mean() - frac) < 0.01 and len(np.unique(mi)) == len(mi)
    with pytest.raises(ValueError, match="look like '3:1'"): mixture_indices(sol, "3-1", np.random.default_rng(0))
    rules = {"ap": UpperRule("answer_prob").resolve(ts)}
    a = evaluate_splits(Controller("ltt", 0.1, 0.1, upper_loss="drop"), rules, ts, n_splits=10, mixture="1:3", seed=7)
    b = evaluate_splits(Controller("ltt", 0.1, 0.1, upper_loss="drop"), rules, ts, n_splits=10, mixture="1:3", seed=7)
    pd.testing.assert_frame_equal(a, b)


def test_split_evaluation_matches_public_api():
    "A split evaluated through the cached pool equals calibrating and evaluating that split with the Controller."
    ts = synthetic_traces(300, 12, seed=8, solvable_frac=0.5)
    rule = CombinedRule(UpperRule("answer_prob"), LowerRule("answer_prob")).resolve(ts)
    ctl = Controller("ltt", 0.1, 0.1, alpha_lower=0.1, upper_loss="drop")
    df = evaluate_splits(ctl, {"r": rule}, ts, n_splits=1, cal_frac=0.4, seed=3)
    rng = np.random.default_rng(3)
    perm = rng.permutation(ts.n)
    ci, ti = np.sort(perm[:120]), np.sort(perm[120:])
    f = ctl.calibrate(rule, ts.subset(ts.trace_ids[ci]))
    ev = ctl.evaluate(f, ts.subset(ts.trace_ids[ti]))
    row = df.iloc[0]
    assert row["n_cal"] == 120 and np.isclose(row["tokens"], ev["tokens"]) and np.isclose(row["risk_upper"], ev["risk_upper"])
    assert (np.isnan(row["lambda_upper"]) and f.lambda_upper is None) or row["lambda_upper"] == f.lambda_upper


def test_streamed_lower_calibration_equals_cached():
    ts = synthetic_traces(200, 12, seed=9, solvable_frac=0.5)
    rule = LowerRule("answer_prob", u=0.8).resolve(ts)
    ctl = Controller("ltt", 0.1, 0.1)
    a = Pool(ts.arrays(), rule, ctl).fit(np.arange(ts.n), ctl)
    b = Pool(ts.arrays(), rule, ctl, stream_elems=3000).fit(np.arange(ts.n), ctl)
    assert a.lower_params == b.lower_params and np.array_equal(a.lower_selection.certified, b.lower_selection.certified)
    c = Pool(ts.arrays(), rule, ctl, stream_elems=3000).fit(np.arange(ts.n), ctl.with_(n_jobs=2))   # threaded chunks
    assert c.lower_params == a.lower_params and np.allclose(c.lower_selection.pvalues, a.lower_selection.pvalues)
    with pytest.raises(ValueError, match="n_jobs must be a positive int"): Controller("ltt", 0.1, 0.1, n_jobs=0)


def test_ensemble_picks_cheapest_certified():
    ts = synthetic_traces(500, 12, seed=10, solvable_frac=0.7)
    rules = [UpperRule(s).resolve(ts) for s in ("answer_prob", "eot_negent", "win_negent")]
    e = calibrate_ensemble(Controller("ltt", 0.1, 0.1, upper_loss="drop"), rules, ts)
    assert e.feasible and np.isfinite(e.cal_tokens[e.best_index]) and e.cal_tokens[e.best_index] == e.cal_tokens.min()
    assert all(f.controller.delta == pytest.approx(0.1 / 3) for f in e.fits)


def test_budget_curve_matches_definition():
    p = P_([[0, 0, 0], [0, 0, 0]], [[0, 1, 1], [1, 0, 0]], lengths=[3, 2])
    bc = budget_curve(p)
    assert bc["accuracy"].tolist() == [0.5, 0.5, 0.5] and bc["tokens"].tolist() == [10.0, 20.0, 25.0]


def test_risk_validity_over_many_splits():
    """End to end: LTT and UCB keep P(test risk > alpha) <= delta + slack; naive is shown for contrast."""
    ts = synthetic_traces(1500, 12, seed=11, solvable_frac=0.6)
    rule = UpperRule("answer_prob").resolve(ts)
    n_splits, delta = 200, 0.1
    slack = 3 * math.sqrt(delta * (1 - delta) / n_splits)
    ctrls = {m: Controller(m, alpha=0.08, delta=delta, upper_loss="drop") for m in ("naive", "ucb", "ltt")}
    df = evaluate_splits(ctrls, {"ap": rule}, ts, n_splits=n_splits, n_cal=400, seed=0)  # UCB needs n > log(1/δ)/(2α²) ≈ 180
    vs = violation_summary(df).set_index("controller")
    assert vs.loc["ltt", "feasible"] > 0.9 and vs.loc["ucb", "feasible"] > 0.5
    assert vs.loc["ltt", "violation_rate"] <= delta + slack
    assert vs.loc["ucb", "violation_rate"] <= delta + slack
    # naive targets the empirical risk itself: its realized risk is centred near alpha, violating far more often
    assert vs.loc["naive", "violation_rate"] > vs.loc["ltt", "violation_rate"]


def test_select_agrees_with_risk_calibrate_per_path():
    "The batched selection certifies exactly what adalib.risk.calibrate certifies path by path (δ split over paths)."
    rng = np.random.default_rng(0)
    n, P, L = 150, 6, 9
    # per path, risk rises along the path (most conservative first)
    base = np.sort(rng.uniform(0, 0.3, (P, L)), axis=1)
    losses = (rng.random((n, P, L)) < base[None]).astype(float).reshape(n, P * L)
    eff = rng.random(P * L)
    paths = [np.arange(p * L, (p + 1) * L) for p in range(P)]
    for method in ("naive", "ucb", "crc", "ltt"):
        sel = select(losses, eff, 0.15, 0.1, method, paths=paths)
        dp = 0.1 / P if method in ("ucb", "ltt") else 0.1
        for p in paths:
            assert np.array_equal(sel.certified[p], calibrate(losses[:, p], 0.15, dp, method).passed), method
        if sel.feasible: assert sel.efficiency[sel.index] == eff[sel.certified].min()
    for method in ("bonferroni", "holm"):
        sel = select(losses, eff, 0.15, 0.1, method, paths=paths)
        assert np.array_equal(sel.certified, calibrate(losses, 0.15, 0.1, method).passed)


def test_tokens_efficiency_with_zero_token_budget():
    "A trace whose only checkpoint is at 0 tokens must not turn the tokens efficiency into NaN (regression)."
    p = P_([[0.9, 0.9], [0.9, 0.9]], [[1, 1], [1, 1]], lengths=[1, 2], tokens=[[0.0, 0.0], [5.0, 9.0]])
    rule = UpperRule("c", smoother="none", grid=[0.95, 0.5])
    f = Controller("naive", 0.5, 0.1, efficiency="tokens").calibrate(rule, p)
    assert np.isfinite(f.upper_selection.efficiency).all() and f.lambda_upper == 0.5


def test_controller_refuses_to_predict_uncalibrated_and_keeps_its_fit():
    ts = synthetic_traces(300, 10, seed=12, solvable_frac=0.6)
    ctl = Controller("ltt", 0.1, 0.1, upper_loss="drop")
    with pytest.raises(RuntimeError, match="not calibrated: call .calibrate"): ctl.exit_steps(ts)
    with pytest.raises(RuntimeError, match="not calibrated"): ctl.predict(ts)
    f = ctl.calibrate(UpperRule("answer_prob").resolve(ts), ts)
    assert ctl.fitted_ is f and ctl.predict(ts).equals(f.exit_steps(ts))
    assert ctl.with_(alpha=0.2).fitted_ is None and ctl.with_(alpha=0.2).alpha_lower == 0.2


class EveryKth(Rule):
    "A new rule written here only: exit at checkpoint k (grid: k, largest first); it reads no signal."
    kind, signal = "upper", "none"
    def __init__(self, steps): self.steps = tuple(steps)
    resolved = True
    m = property(lambda self: len(self.steps))
    def resolve(self, traces): return self
    def value(self, j): return float(self.steps[j])
    def describe(self, j): return {"step": self.steps[j]}
    def values(self, P): return None
    def exits(self, x, tokens, lengths, values=None):
        k = np.asarray(self.steps if values is None else values, int)[:, None]
        return np.where(k < np.asarray(lengths)[None], k, np.asarray(lengths)[None])


def test_a_new_rule_needs_no_controller_change():
    "The rule protocol: a class defined in a test calibrates, applies and evaluates through the unchanged Controller and Pool."
    ts = synthetic_traces(400, 12, seed=13, solvable_frac=0.6)
    rule = EveryKth(range(11, -1, -1))
    ctl = Controller("ltt", 0.1, 0.1, upper_loss="drop")
    f = ctl.calibrate(rule, ts)
    assert f.feasible and f.lambda_upper is not None
    ex = f.exit_steps(ts)
    assert (ex["step"] == np.minimum(int(f.lambda_upper), ex["length"] - 1)).all()
    df = evaluate_splits(ctl, {"k": rule}, ts, n_splits=5, seed=0)
    assert len(df) == 5 and df["feasible"].all()
    # the token-budget rule certified by LTT: its accuracy drop on the same traces is the budget curve's
    bc = budget_curve(ts)
    k = int(f.lambda_upper)
    assert np.isclose(ctl.evaluate(f, ts)["accuracy"], bc["accuracy"].iloc[k])
