"Symbolic-MoE routing (adalib.skills) against brute-force loops on random small answer matrices, property tests, bad input."
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from adalib.skills import (AnswerMatrix, aggregate, answer_matrix, curve_table, finetune, paired_difference, rank_experts,
                           read_cached, route_all, skill_profile, skill_scores, write_cached)


def random_matrix(rng, Q, E, prefix="q", n_codes=3, fams=("a", "b"), levels=(1, 2), grid=None):
    "A random AnswerMatrix whose correctness is a function of the answer (code 0 is right); conf on a grid of eighths if `grid`."
    qs = pd.DataFrame(dict(problem_id=[f"{prefix}{i}" for i in range(Q)], family=rng.choice(list(fams), Q),
                           difficulty=rng.choice(list(levels), Q)))
    codes = rng.integers(0, n_codes, (Q, E))
    conf = rng.integers(1, 9, (Q, E)) / 8 if grid else rng.random((Q, E))
    return AnswerMatrix(qs, [f"e{j}" for j in range(E)], codes, codes == 0, conf)


def brute_aggregate(m, sel, rank, weight):
    "One question at a time: tally the selected answers, keep the heaviest, ties to the best-ranked expert."
    out = []
    for q in range(m.shape[0]):
        tot = defaultdict(float)
        for e in range(m.shape[1]):
            if sel[q, e]: tot[m.codes[q, e]] += 1.0 if weight == "vote" else m.conf[q, e]
        best = max(tot.values())
        cands = [e for e in range(m.shape[1]) if sel[q, e] and tot[m.codes[q, e]] == best]
        out.append(bool(m.correct[q, min(cands, key=lambda e: rank[q, e])]))
    return np.array(out)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 8), st.integers(1, 6), st.sampled_from(["vote", "conf"]))
def test_aggregate_equals_brute_force_loop(seed, Q, E, weight):
    rng = np.random.default_rng(seed)
    m = random_matrix(rng, Q, E, grid=True)
    sel = rng.random((Q, E)) < 0.6
    sel[np.arange(Q), rng.integers(0, E, Q)] = True
    rank = rng.random((Q, E)).argsort(1).argsort(1)
    np.testing.assert_array_equal(aggregate(m, sel, rank, weight), brute_aggregate(m, sel, rank, weight))


def test_aggregate_batched_over_leading_axes_equals_one_by_one():
    rng = np.random.default_rng(3)
    m = random_matrix(rng, 7, 4, grid=True)
    sel = rng.random((5, 7, 4)) < 0.5; sel[..., 0] = True
    rank = rng.random((5, 7, 4)).argsort(-1).argsort(-1)
    out = aggregate(m, sel, rank, "conf")
    for s in range(5): np.testing.assert_array_equal(out[s], brute_aggregate(m, sel[s], rank[s], "conf"))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 6))
def test_rank_equals_sorted_loop(seed, Q, E):
    rng = np.random.default_rng(seed)
    scores, strength = rng.integers(0, 3, (Q, E)) / 2, rng.integers(0, 2, E) / 2   # many ties on purpose
    rank = rank_experts(scores, strength)
    for q in range(Q):
        order = sorted(range(E), key=lambda e: (-scores[q, e], -strength[e], e))
        assert [int(rank[q, e]) for e in order] == list(range(E))


def test_skill_profile_equals_brute_force_counts():
    rng = np.random.default_rng(5)
    m = random_matrix(rng, 40, 3, levels=(1, 2, 3))
    m.correct = rng.random((40, 3)) < 0.5
    prior = 1.5
    prof = skill_profile(m, ("family", "difficulty"), prior)
    g = m.correct.mean(0)
    for t in ("family", "difficulty"):
        for v in set(m.questions[t]):
            idx = [i for i in range(40) if m.questions[t].iloc[i] == v]
            for e, name in enumerate(m.experts):
                want = (sum(m.correct[i, e] for i in idx) + prior * g[e]) / (len(idx) + prior)
                assert prof.loc[(t, v), name] == pytest.approx(want)
            assert prof.loc[(t, v), "n"] == len(idx)


def test_unseen_tag_value_falls_back_to_global_strength():
    rng = np.random.default_rng(6)
    val = random_matrix(rng, 20, 3, levels=(1,))
    test = random_matrix(rng, 4, 3, prefix="t", levels=(9,))
    prof = skill_profile(val, ("difficulty",))
    np.testing.assert_allclose(skill_scores(prof, test.questions, test.experts), np.tile(val.correct.mean(0), (4, 1)))


def pair(seed, Qv=30, Qt=25, E=4):
    rng = np.random.default_rng(seed)
    return random_matrix(rng, Qv, E, "v"), random_matrix(rng, Qt, E, "t")


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_k_equal_to_n_experts_is_all_experts_voting(seed, E):
    val, test = pair(seed, E=E)
    r = route_all(val, test, [E], n_random=5).set_index(["method", "k"]).correct
    np.testing.assert_array_equal(r[("skill · conf", E)], r[("all · conf", E)])       # conf weights: no ties (continuous)
    np.testing.assert_array_equal(r[("global top-k · vote", E)], r[("all · vote", E)])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_oracle_is_at_least_every_method_on_every_question(seed, E):
    val, test = pair(seed, E=E)
    r = route_all(val, test, list(range(1, E + 1)), n_random=10)
    oracle = r[r.method.str.startswith("oracle")].correct.item()
    for c in r.correct: assert (np.asarray(c) <= oracle + 1e-12).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 5), st.integers(2, 6))
def test_top1_with_a_tag_constant_profile_picks_the_argmax_expert(seed, E, m):
    rng = np.random.default_rng(seed)
    pattern = rng.random((m, E)) < rng.random(E)                 # the same correctness pattern in every (family, level) cell
    cells = [(f, d) for f in ("a", "b") for d in (1, 2)]
    qs = pd.DataFrame([dict(problem_id=f"v{i}", family=f, difficulty=d) for i, (f, d) in enumerate(c for c in cells for _ in range(m))])
    corr = np.tile(pattern, (len(cells), 1))
    val = AnswerMatrix(qs, [f"e{j}" for j in range(E)], np.where(corr, 0, 1), corr, rng.random(corr.shape))
    test = random_matrix(rng, 12, E, "t")
    r = route_all(val, test, [1], n_random=2).set_index(["method", "k"]).correct
    np.testing.assert_array_equal(r[("skill · vote", 1)], r[("best single", 1)])
    g = corr.mean(0)
    best = min(range(E), key=lambda e: (-g[e], e))
    np.testing.assert_array_equal(r[("best single", 1)], test.correct[:, best])


def test_random_k_is_the_mean_over_seeds_of_uniform_draws():
    val, test = pair(11, E=4)
    r = route_all(val, test, [1], n_random=4000, seed=1).set_index(["method", "k"]).correct
    np.testing.assert_allclose(r[("random k · vote", 1)], test.correct.mean(1), atol=0.04)   # one random expert: its mean accuracy


def test_curve_table_equals_pandas_groupby_means():
    val, test = pair(12)
    r = route_all(val, test, [1, 2], n_random=10)
    ct = curve_table(r, test.questions, n_boot=50)
    for row in r.itertuples():
        by = pd.Series(row.correct).groupby(test.questions.family.to_numpy()).mean()
        got = ct[(ct.method == row.method) & (ct.k == row.k)].set_index("family").accuracy
        assert got["all"] == pytest.approx(np.mean(row.correct))
        for f, v in by.items(): assert got[f] == pytest.approx(v)


def test_paired_difference_is_paired():
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.6
    d = paired_difference(a, a, n_boot=200)
    assert (d["diff"], d["diff_lo"], d["diff_hi"]) == (0.0, 0.0, 0.0)   # identical per question: zero width when paired
    b = a | (rng.random(200) < 0.2)
    d = paired_difference(b, a, n_boot=500)
    assert d["diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert d["diff_lo"] <= d["diff"] <= d["diff_hi"]
    assert d["diff_lo"] >= 0


def test_answer_matrix_round_trip():
    rng = np.random.default_rng(2)
    m = random_matrix(rng, 5, 3)
    long = pd.DataFrame([dict(problem_id=m.questions.problem_id[q], family=m.questions.family[q], difficulty=m.questions.difficulty[q],
                              expert=e, answer=str(m.codes[q, j]), correct=bool(m.correct[q, j]), conf=float(m.conf[q, j]))
                         for q in range(5) for j, e in enumerate(m.experts)]).sample(frac=1, random_state=0)
    back = answer_matrix(long.set_index("problem_id").loc[m.questions.problem_id].reset_index(), m.experts)
    np.testing.assert_array_equal(back.correct, m.correct)
    np.testing.assert_allclose(back.conf, m.conf)
    for q in range(5):
        for i in range(3):
            for j in range(3): assert (back.codes[q, i] == back.codes[q, j]) == (m.codes[q, i] == m.codes[q, j])


# ---------------------------------------------------------------- bad input
def test_bad_input_fails_with_one_line_messages(tmp_path):
    rng = np.random.default_rng(0)
    val, test = pair(0, E=3)
    df = pd.DataFrame(dict(problem_id=["q", "q"], family="f", difficulty=1, expert=["A", "A"], answer="1", correct=True, conf=0.5))
    cases = [
        (lambda: answer_matrix(df), "twice"),
        (lambda: answer_matrix(df.drop(columns="conf")), "lack columns"),
        (lambda: answer_matrix(df.iloc[:1], ["A", "B"]), "every expert must answer"),
        (lambda: answer_matrix(df.iloc[:1], ["B"]), "not in experts"),
        (lambda: skill_profile(val, prior=-1), "prior must be >= 0"),
        (lambda: skill_profile(val, tags=("topic",)), "not question columns"),
        (lambda: rank_experts(np.zeros((2, 3)), np.zeros(4)), "one value per expert"),
        (lambda: aggregate(test, np.ones((2, 2), bool)), "must end in the matrix shape"),
        (lambda: aggregate(test, np.zeros(test.shape, bool)), "selects no expert"),
        (lambda: aggregate(test, np.ones(test.shape, bool), weight="max"), "weight must be"),
        (lambda: route_all(val, test, [0]), "ks must be in 1..3"),
        (lambda: route_all(val, test, []), "ks must be in"),
        (lambda: route_all(val, test, [1], n_random=0), "n_random must be"),
        (lambda: route_all(val, val, [1]), "share questions"),
        (lambda: route_all(val, AnswerMatrix(test.questions, ["x", "y", "z"], test.codes, test.correct, test.conf), [1]), "different experts"),
        (lambda: curve_table(route_all(val, test, [1], n_random=2), test.questions, n_boot=0), "n_boot must be"),
        (lambda: curve_table(route_all(val, test, [1], n_random=2), test.questions, level=1.5), "level must be"),
        (lambda: paired_difference(np.ones(3), np.ones(4)), "same length"),
        (lambda: write_cached(tmp_path, {"a": 1}, {"x": 1}), "dict of name -> DataFrame"),
        (lambda: read_cached(tmp_path, {"a": object()}), "JSON-serialisable"),
        (lambda: finetune(object(), [], 1), "needs a TinyReasoner"),
    ]
    for f, msg in cases:
        with pytest.raises((ValueError, TypeError), match=msg) as e: f()
        assert "\n" not in str(e.value)
