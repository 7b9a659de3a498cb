"""adalib.confidence: raw-output estimators against torch/scipy references, trace-level estimators
against naive loops, the hidden-state probe's split discipline, the explorer, and bad input."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from adalib import confidence as C
from adalib.calibration import auroc
from adalib.generate import generate_batch
from adalib.models import new_tiny_reasoner
from adalib.tasks import get_family
from adalib.traces import TraceSet, synthetic_traces

SIGS = ("answer_prob", "answer_negent", "eot_negent", "win_negent", "win_maxprob", "win_margin", "win_logprob", "win_minprob")


def traces(n=80, T=7, seed=0, samples=2, hidden=True):
    ts = synthetic_traces(n, T, seed=seed, signals=SIGS)
    meta = ts.meta.reset_index()
    meta["problem_id"] = [f"p{i // samples}" for i in range(ts.n)]
    meta["sample"] = np.arange(ts.n) % samples
    df = ts.df.copy()
    for s in ("win_maxprob", "win_margin", "win_minprob"): df["sig_" + s] = 1 / (1 + np.exp(-df["sig_" + s]))
    df["sig_win_logprob"] = -np.logaddexp(0, -df["sig_win_logprob"])
    meta["stop_reason"] = np.where(np.arange(ts.n) % 3, "eot", "budget")           # the trivial "ended" baselines need these
    meta["reasoning_tokens"] = df.groupby("trace_id", sort=True)["tokens"].max().to_numpy()
    h = None
    if hidden:
        rng = np.random.default_rng(seed)
        y = df["correct"].to_numpy(float)
        h = (rng.normal(size=(len(df), 12)) + y[:, None] * (np.arange(12) < 3)).astype(np.float16)
    return TraceSet.from_frames(df, meta, hidden=h)


# ---------------------------------------------------------------- raw-output estimators vs references
def test_token_estimators_match_references():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    p = torch.softmax(logits.double(), -1).numpy()
    m = mask.numpy()
    for b in range(3):
        v = m[b]
        pb, tb = p[b][v], tokens.numpy()[b][v]
        ptok = pb[np.arange(len(tb)), tb]
        srt = np.sort(pb, -1)
        assert np.isclose(C.max_prob(logits, mask)[b], pb.max(-1).mean())
        assert np.isclose(C.neg_entropy(logits, mask)[b], -stats.entropy(pb, axis=-1).mean())
        assert np.isclose(C.neg_entropy(logits, mask)[b], -torch.distributions.Categorical(logits=logits[b][torch.from_numpy(v)]).entropy().double().mean().item(), atol=1e-6)
        assert np.isclose(C.margin(logits, mask)[b], (srt[:, -1] - srt[:, -2]).mean())
        assert np.isclose(C.mean_logprob(logits, tokens, mask)[b], np.log(ptok).mean())
        assert np.isclose(C.min_prob(logits, tokens, mask)[b], ptok.min())
        assert np.isclose(C.neg_perplexity(logits, tokens, mask)[b], -np.exp(-np.log(ptok).mean()))
        assert np.isclose(C.answer_prob(logits, tokens, mask)[b], stats.gmean(ptok))
    # greedy tokens when none are given: min prob of the argmax tokens is the min of the max-probs
    assert np.allclose(C.min_prob(logits), p.max(-1).min(-1))
    assert np.allclose(C.eot_negent(logits[:, 0]), -stats.entropy(p[:, 0], axis=-1))
    assert np.allclose(C.answer_negent(logits), -stats.entropy(p[:, 0], axis=-1))
    # numpy input works the same
    assert np.allclose(C.max_prob(logits.numpy()), C.max_prob(logits))


def test_higher_means_more_confident():
    peaked = torch.tensor([[[8.0, 0, 0, 0]]]); flat = torch.zeros(1, 1, 4)
    for f in (C.max_prob, C.neg_entropy, C.margin, C.mean_logprob, C.min_prob, C.neg_perplexity, C.answer_prob, C.answer_negent):
        assert f(peaked)[0] > f(flat)[0], f.__name__
    assert C.eot_negent(peaked[0])[0] > C.eot_negent(flat[0])[0]


# ---------------------------------------------------------------- answer-level estimators vs loops
answers = st.lists(st.lists(st.sampled_from(["", "1", "2", "3"]), min_size=6, max_size=6), min_size=1, max_size=6)


@settings(max_examples=80, deadline=None)
@given(answers, st.integers(1, 7))
def test_stability_matches_loop(a, m):
    a = np.array(a, dtype=object)
    ref = np.zeros(a.shape)
    for i in range(a.shape[0]):
        for t in range(a.shape[1]):
            ref[i, t] = sum(1 for j in range(1, m + 1) if t - j >= 0 and a[i, t] != "" and a[i, t - j] == a[i, t]) / m
    assert np.allclose(C.answer_stability(a, m), ref)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["", "a", "b", "c"]), min_size=1, max_size=7), min_size=1, max_size=8))
def test_self_consistency_matches_counter(samples):
    ref = [max([c for k, c in Counter(r).items() if k != ""], default=0) / len(r) for r in samples]
    assert np.allclose(C.self_consistency(samples), ref)


def test_self_consistency_signal_matches_loop():
    ts = traces(n=60, T=6, seed=3, samples=3, hidden=False)
    # make answers collide often
    df = ts.df.copy(); df["answer"] = (df["answer"].str[-1:].astype(int) % 3).astype(str)
    ts = TraceSet.from_frames(df, ts.meta.drop(columns="solvable").reset_index())
    got = C.self_consistency_signal(ts)
    P = ts.arrays(); pid = ts.meta["problem_id"].to_numpy()
    ref = np.zeros((ts.n, ts.T))
    for i in range(ts.n):
        same = np.flatnonzero(pid == pid[i])
        for t in range(ts.T): ref[i, t] = np.mean([P.answers[k, t] == P.answers[i, t] for k in same])
    assert np.allclose(got, C.to_rows(ts, ref))


def test_smoothers_are_stoppings():
    from adalib.exits import ema, stability
    ts = traces(hidden=False)
    P = ts.arrays()
    assert np.allclose(C.on_traces(ts, "ema_answer_prob"), C.to_rows(ts, ema(P.signal("answer_prob"), 0.5, P.lengths)))
    assert np.allclose(C.on_traces(ts, "emvar_answer_prob", beta=0.3),
                       C.to_rows(ts, stability(P.signal("answer_prob"), 0.3, P.lengths)))


# ---------------------------------------------------------------- probe
def test_probe_fit_on_disjoint_problems_and_equals_sklearn():
    ts = traces(n=120, seed=1)
    tr, te = C.split_by_problem(ts, 0.5, seed=4)
    assert not set(tr.meta["problem_id"]) & set(te.meta["problem_id"])
    assert tr.n + te.n == ts.n
    pr = C.fit_probe(tr)
    assert not set(pr.trained_on) & set(te.trace_ids)
    Xtr = tr.hidden.astype(np.float64); ytr = tr.df["correct"].to_numpy()
    sc = StandardScaler().fit(Xtr)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(sc.transform(Xtr), ytr)
    got = C.on_traces(te, "probe", probe=pr)
    assert np.allclose(got, ref.predict_proba(sc.transform(te.hidden.astype(np.float64)))[:, 1])
    assert auroc(got, te.df["correct"]) > 0.75


def test_split_by_problem_keeps_samples_together_and_is_seeded():
    ts = traces(n=90, samples=3, hidden=False)
    a1, b1 = C.split_by_problem(ts, 0.3, seed=0)
    a2, _ = C.split_by_problem(ts, 0.3, seed=0)
    a3, _ = C.split_by_problem(ts, 0.3, seed=1)
    assert list(a1.trace_ids) == list(a2.trace_ids) and list(a1.trace_ids) != list(a3.trace_ids)
    assert a1.meta.groupby("problem_id").size().eq(3).all() and b1.meta.groupby("problem_id").size().eq(3).all()
    assert a1.meta["problem_id"].nunique() == 9


# ---------------------------------------------------------------- registry, frame, explorer
def test_every_estimator_on_traces():
    ts = traces()
    tr, te = C.split_by_problem(ts, 0.5, seed=0)
    pr = C.fit_probe(tr)
    names = C.available(te, probe=pr)
    assert set(names) == set(C.REGISTRY) and len(names) >= 12
    fr = C.signal_frame(te, names, probe=pr)
    assert list(fr.columns[:3]) == ["trace_id", "step", "correct"] and fr.shape == (len(te.df), 3 + len(names))
    assert np.isfinite(fr[names].to_numpy()).all()
    for n in names:
        if C.REGISTRY[n].probability: assert fr[n].between(0, 1).all(), n
    # without samples/hidden, the corresponding estimators are not offered
    single = traces(samples=1, hidden=False)
    assert "self_consistency" not in C.available(single) and "probe" not in C.available(single)
    assert C.registry_table()["formula"].str.len().gt(10).all()


def test_explorer_calls_explore_threshold():
    from adalib.calibration import explore_threshold
    ts = traces(hidden=False)
    w = C.make_explorer(ts, names=["answer_prob", "stability"])
    w.children[1].value = 0.4
    ref = explore_threshold(C.on_traces(ts, "answer_prob"), ts.df["correct"], 0.4)
    assert w.result["coverage"] == ref["coverage"] and w.result["confusion"].equals(ref["confusion"])
    assert f"{ref['coverage']:.3f}" in w.children[2].value


# ---------------------------------------------------------------- bad input: one test per case
def test_bad_logits_nan():
    with pytest.raises(ValueError, match="logits contain NaN"): C.max_prob(torch.full((1, 2, 3), float("nan")))

def test_bad_logits_shape():
    with pytest.raises(ValueError, match=r"logits must have shape \(\.\.\., T, V\)"): C.max_prob(torch.zeros(5))

def test_bad_logits_type():
    with pytest.raises(TypeError, match="logits must be a torch.Tensor or numpy array"): C.max_prob([[0.0, 1.0]])

def test_bad_mask_shape():
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 2\)"): C.max_prob(torch.zeros(1, 2, 3), mask=torch.ones(2, 1))

def test_bad_tokens_range():
    with pytest.raises(ValueError, match=r"tokens must be ids in \[0, 3\)"): C.mean_logprob(torch.zeros(1, 2, 3), torch.tensor([[0, 5]]))

def test_bad_token_logprobs_positive():
    with pytest.raises(ValueError, match="did you pass probabilities"): C.mean_logprob(token_logprobs=np.array([[0.5]]))

def test_bad_no_input():
    with pytest.raises(ValueError, match="pass either logits"): C.mean_logprob()

def test_bad_stability_m():
    with pytest.raises(ValueError, match="m \\(number of previous checkpoints\\) must be a positive int"): C.answer_stability([["1"]], 0)

def test_bad_unknown_estimator():
    with pytest.raises(ValueError, match="unknown estimator 'foo'; known: max_prob"): C.on_traces(traces(hidden=False), "foo")

def test_bad_missing_column():
    ts = traces(hidden=False)
    df = ts.df.drop(columns="sig_eot_negent")
    ts = TraceSet.from_frames(df, ts.meta.drop(columns="solvable").reset_index())
    with pytest.raises(ValueError, match="trace column 'sig_eot_negent' is not recorded"): C.on_traces(ts, "eot_negent")

def test_bad_probe_without_model():
    with pytest.raises(ValueError, match=r"pass probe=fit_probe"): C.on_traces(traces(), "probe")

def test_bad_probe_without_hidden():
    with pytest.raises(ValueError, match=r"no hidden states; read it with TraceSet.read\(path, hidden=True\)"):
        C.fit_probe(traces(hidden=False))

def test_bad_probe_single_class():
    with pytest.raises(ValueError, match="all correct or all wrong"): C.HiddenProbe().fit(np.zeros((4, 2)), [1, 1, 1, 1])

def test_bad_self_consistency_single_sample():
    with pytest.raises(ValueError, match=r"needs >= 2 sampled traces per problem"): C.self_consistency_signal(traces(samples=1, hidden=False))

def test_bad_split_frac():
    with pytest.raises(ValueError, match=r"frac must be in \(0, 1\)"): C.split_by_problem(traces(hidden=False), 1.5, 0)


def test_available_is_a_generic_check_of_requirements(monkeypatch):
    "A new registry row is offered exactly when its declared requirements are met; no name is special-cased."
    ts, bare = traces(samples=2, hidden=True), traces(samples=1, hidden=False)
    new = C.Estimator("new_one", "a test estimator", ("hidden",), None, None, traces=lambda ts: np.zeros(len(ts.df)),
                      requires=("sig_answer_prob", "hidden", "samples"))
    monkeypatch.setitem(C.REGISTRY, "new_one", new)
    assert "new_one" in C.available(ts) and "new_one" not in C.available(bare)
    np.testing.assert_array_equal(C.on_traces(ts, "new_one"), 0.0)
    no_logprob = TraceSet.from_frames(bare.df.drop(columns=["sig_win_logprob"]), bare.meta.reset_index())
    got = C.available(no_logprob)
    assert "neg_perplexity" not in got and "mean_logprob" not in got and "max_prob" in got
    for e in C.REGISTRY.values():
        assert all(r.startswith("sig_") or r in C.REQUIREMENTS for r in e.requires), e.name
    with pytest.raises(ValueError, match="unknown requirement 'gpu'"): C.meets("gpu", ts)


def test_sampled_self_consistency_end_to_end():
    """Problems are regenerated from trace metadata and m traces per problem are sampled with adalib.generate."""
    torch.manual_seed(0)
    lm = new_tiny_reasoner(seed=0)
    probs = get_family("chain_sum").generate(2, 1, seed=5)
    b = generate_batch(lm, probs, budget=16, probe_every=8, hidden=False)
    for m in b.meta: m["problem_seed"] = 5
    ts = TraceSet.from_frames(b.df, b.meta)
    assert [p.id for p in C.problems_of(ts)] == list(ts.meta["problem_id"])
    agree, smp = C.sample_self_consistency(ts, lm, m=2, seed=1, progress=False)
    assert smp.n == 4 and sorted(smp.meta["sample"]) == [1, 1, 2, 2]
    assert agree.shape == (len(ts.df),) and ((agree >= 0) & (agree <= 1)).all()
    np.testing.assert_array_equal(agree, C.sampled_agreement(ts, smp))


def test_bad_problems_without_metadata():
    with pytest.raises(ValueError, match=r"metadata column\(s\) \['problem_seed'\] missing"): C.problems_of(traces(hidden=False))


# ---------------------------------------------------------------- trivial baselines: ended, ended_level (label leak), tokens
def _naive_ended(ts, max_level=None):
    "Reference: loop over checkpoint rows, look up the trace's metadata by id."
    out = []
    for tid, tok in zip(ts.df["trace_id"], ts.df["tokens"]):
        m = ts.meta.loc[tid]
        e = m["stop_reason"] in ("eot", "eos") and tok >= m["reasoning_tokens"]
        if max_level is not None: e = e and m["difficulty"] <= max_level
        out.append(float(e))
    return np.array(out)


def test_trivial_baselines_match_a_naive_loop():
    ts = traces(hidden=False)
    meta = ts.meta.reset_index()
    rng = np.random.default_rng(3)
    meta["stop_reason"] = rng.choice(["eot", "eos", "budget"], ts.n)
    meta["reasoning_tokens"] = ts.df.groupby("trace_id", sort=True)["tokens"].max().to_numpy() - rng.integers(0, 2, ts.n)
    meta["difficulty"] = rng.integers(1, 6, ts.n)
    ts = TraceSet.from_frames(ts.df, meta)
    e, el = C.on_traces(ts, "ended"), C.on_traces(ts, "ended_level")
    np.testing.assert_array_equal(e, _naive_ended(ts))
    np.testing.assert_array_equal(el, _naive_ended(ts, max_level=3))
    np.testing.assert_array_equal(C.on_traces(ts, "tokens"), ts.df["tokens"].to_numpy(float))
    assert 0 < e.mean() < 1 and el.sum() < e.sum()
    # a trace cut at its budget never "ends", even at its last checkpoint
    budget = ts.meta.index[ts.meta["stop_reason"] == "budget"]
    assert (e[ts.df["trace_id"].isin(budget).to_numpy()] == 0).all()


def test_ended_level_is_flagged_as_label_leak():
    assert C.REGISTRY["ended_level"].leak and not C.REGISTRY["ended"].leak and not C.REGISTRY["tokens"].leak
    assert not any(e.leak for n, e in C.REGISTRY.items() if n != "ended_level")
    reg = C.registry_table().set_index("name")
    assert reg.loc["ended_level", "label_leak"] and "LABEL LEAK" in reg.loc["ended_level", "formula"]
    rep = C.evaluate_estimators(traces(hidden=False), names=["ended", "ended_level", "answer_prob"], n_boot=20, progress=False)
    assert rep.table.set_index("estimator")["label_leak"].to_dict() == {"ended": False, "ended_level": True, "answer_prob": False}
    assert rep.final.set_index("estimator").loc["ended_level", "label_leak"]


def test_baselines_need_their_metadata():
    ts = traces(hidden=False)
    bare = TraceSet.from_frames(ts.df, ts.meta.drop(columns=["stop_reason", "reasoning_tokens"]).reset_index())
    got = C.available(bare)
    assert "ended" not in got and "ended_level" not in got and "tokens" in got
