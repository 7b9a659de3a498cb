"The search reasoner: a tiny model overfits a few problems, forced-answer scoring agrees with the verifier, reuse, bad input."
import json
import numpy as np
import pandas as pd
import pytest
import torch
from adalib import search, searchlm
from adalib.models import LM_META


@pytest.fixture(scope="module")
def two_number():
    "Four 2-number problems (short traces: a handful of lines)."
    return search.make_problems(4, n_inputs=2, value_range=(2, 9), target_range=(1, 81), p_unsolvable=0.25,
                                rng=np.random.default_rng(3))


def test_tiny_model_overfits_a_few_problems(two_number):
    torch.set_num_threads(1)
    lm, hist = searchlm.train_search_lm("search-toy", two_number, two_number, 300, batch_size=8, lr=1e-2, max_think=64,
                                        forced_share=0.3, ema_decay=0.9, eval_every=100, eval_from=200, val_budget=64,
                                        progress=False)
    assert hist.loss.tail(20).mean() < 0.2 * hist.loss.head(5).mean()
    tr, ck = searchlm.probe_runs(lm, two_number, budget=64, probe_every=8)
    assert tr.final_correct.mean() >= 0.75, tr[["key", "final_answer", "text"]]
    assert (tr.stop == "eot").all()   # it ends its thinking as the traces do
    assert hist.attrs["selected"]["mean"] == pytest.approx(tr.final_correct.mean())


def test_forced_scoring_agrees_with_the_verifier_on_gold_texts():
    tok = search.word_tokenizer()
    rng = np.random.default_rng(0)
    for p in search.make_grid(6, seed=4, levels={1: search.LEVELS[1], 2: search.LEVELS[2]}):
        P = search.as_problem(p)
        ids, n_pr, think = searchlm.encode_search(tok, p, max_think=10_000)
        for k in sorted({0, len(think), *rng.integers(0, len(think) + 1, 8).tolist()}):
            fx, n0 = searchlm.forced_example(tok, ids[:n_pr], think, k)
            ans = tok.decode(fx[n0:], skip_special_tokens=True).strip()
            assert ans == search.forced_answer(tok.decode(ids[:n_pr] + think[:k], skip_special_tokens=True))
            assert searchlm.score_answer(ans, P) == search.check_answer(p, ans)
        assert searchlm.score_answer(ans, P)   # the whole gold trace answers correctly


def test_correct_at_matches_a_loop():
    rng = np.random.default_rng(1)
    ck = pd.DataFrame(dict(trace_id=np.repeat(list("abcde"), 6), tokens=np.tile(np.arange(8, 56, 8), 5),
                           correct=rng.random(30) < 0.5))
    got = searchlm.correct_at(ck, [0, 10, 24, 100]).set_index(["trace_id", "budget"]).correct
    for t in "abcde":
        for b in [0, 10, 24, 100]:
            rows = ck[(ck.trace_id == t) & (ck.tokens <= b)]
            assert got[(t, b)] == (bool(rows.correct.iloc[-1]) if len(rows) else False)


def _params(**kw):
    return dict(dict(size="search-toy", steps=2, batch_size=2, lr=3e-3, max_think=16, forced_share=0.3, curriculum=0.0,
                     ema_decay=0.9, eval_every=2, eval_from=0, val_budget=8, seed=0, n_train=2, n_val=1, n_test=1,
                     threads=1), **kw)


def test_reuse_only_when_params_and_format_match(tmp_path, monkeypatch):
    folder = tmp_path / "search-reasoner"
    _, _, r = searchlm.fit_or_load(folder, _params(), progress=False)
    assert not r and json.loads((folder / LM_META).read_text())["trace_format"] == search.TRACE_FORMAT
    assert searchlm.fit_or_load(folder, _params(), progress=False)[2]
    assert not searchlm.fit_or_load(folder, _params(lr=1e-3), progress=False)[2]        # a parameter changed
    assert searchlm.fit_or_load(folder, _params(lr=1e-3), progress=False)[2]
    monkeypatch.setattr(search, "TRACE_FORMAT", search.TRACE_FORMAT + 1)               # the trace layout changed
    assert not searchlm.fit_or_load(folder, _params(lr=1e-3), progress=False)[2]


def test_bad_input_raises(two_number):
    with pytest.raises(ValueError, match="size must be one of"): searchlm.new_search_lm("big")
    with pytest.raises(ValueError, match="n_test"): searchlm.split_problems(1, 1, -2)
    with pytest.raises(ValueError, match="forced_share"): searchlm.example_pool(search.word_tokenizer(), two_number, forced_share=1)
    with pytest.raises(ValueError, match="steps"): searchlm.train_search_lm("search-toy", two_number, two_number, 0)
    with pytest.raises(ValueError, match="non-empty"): searchlm.train_search_lm("search-toy", two_number, [], 2)
    with pytest.raises(ValueError, match="problems is empty"): searchlm.probe_runs(searchlm.new_search_lm("search-toy"), [])
    with pytest.raises(ValueError, match="budgets"): searchlm.correct_at(pd.DataFrame(columns=["trace_id", "tokens", "correct"]), [])
    with pytest.raises(ValueError, match="params lacks"): searchlm.fit_or_load("/tmp/nowhere", {"size": "search-toy"})
    with pytest.raises(ValueError, match="not a Countdown problem"): searchlm.as_countdown(object())


def test_reuse_refuses_another_difficulty_grid(tmp_path, monkeypatch):
    folder = tmp_path / "search-reasoner"
    searchlm.fit_or_load(folder, _params(), progress=False)
    assert searchlm.fit_or_load(folder, _params(), progress=False)[2]
    monkeypatch.setattr(search, "LEVELS", {**search.LEVELS, 1: {**search.LEVELS[1], "value_range": (1, 9)}})
    assert not searchlm.fit_or_load(folder, _params(), progress=False)[2]   # other training problems: retrained


def test_held_out_problems_never_meet_training_problems():
    sp = searchlm.split_problems(60, 10, 10, seed=3)
    train = {p.key for p in sp["train"] + sp["val"]}
    for d in search.LEVELS:
        drawn = search.COUNTDOWN.generate(40, d, seed=11)
        assert {p.entry["metadata"]["key"] for p in drawn}.isdisjoint(train)
        assert all(search.key_split(p.entry["metadata"]["key"]) == "test" for p in drawn)
    # the same grid without the split filter does meet training keys: the filter is what keeps them apart
    loose = {p.key for p in search.make_grid(400, seed=3, levels={1: search.LEVELS[1]})}
    assert loose & train


def test_countdown_runs_through_the_trace_machinery_with_solver_labels(tmp_path):
    from adalib.shards import run_traces, run_problems, solver_solvability, SOLVER_SOURCE
    from adalib.traces import TraceSet, SOLVABLE_FILE
    torch.set_num_threads(1)
    lm = searchlm.new_search_lm("search-toy", seed=0, max_positions=64)
    lm.name = "toy-search"
    spec = dict(tasks=["countdown"], difficulties=[1, 3], n_problems=3, problem_seed=5)
    res = run_traces(lm, tmp_path / "toy-search", batch_size=4, budget=12, probe_every=4, answer_max_tokens=6,
                     hidden=True, progress=False, **spec)
    assert res["shards"] == 2 and len(res["written"]) == 2
    probs = run_problems(spec)
    solver_solvability(probs).to_parquet(tmp_path / "toy-search" / SOLVABLE_FILE, index=False)
    ts = TraceSet.read(tmp_path / "toy-search", hidden=True)
    assert ts.n == 6 and ts.solvable_source == SOLVER_SOURCE
    want = {p.id: p.entry["metadata"]["solvable"] for p in probs}
    assert all(ts.meta["solvable"].to_numpy() == ts.meta["problem_id"].map(want).to_numpy())
    # a probe answer is scored by the verifier: the gold answer of every problem is right, a wrong path is not
    for p in probs:
        assert search.COUNTDOWN.score(p.gold, p) and not search.COUNTDOWN.score("1 + 1 = 2", p)
