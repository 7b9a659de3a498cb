"Search tasks: solver vs brute force, verifier, trace replay consistency, tokenizer round trip, bad input."
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from adalib.training import encode_example
from adalib.search import (Countdown, solve, brute_force_values, trace_lines, gold_answer, check_answer, forced_answer,
                           example_text, parse_line, parse_steps, replay_lines, to_expression, make_problems, make_grid,
                           search_stats, stats_table, word_tokenizer, count_tokens, reachable_counts, OPS, END_THINK, as_problem)

small = st.tuples(st.lists(st.integers(1, 12), min_size=2, max_size=4), st.integers(1, 150), st.sampled_from(["+-*", "+-*/"]))

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small)
def test_solver_matches_brute_force(case):
    nums, target, ops = case
    p = Countdown(nums, target, ops)
    s = solve(p)
    assert s.solvable == (target in brute_force_values(p.nums, ops))
    assert set(reachable_counts(p.nums, ops)) == brute_force_values(p.nums, ops)
    if s.solvable: assert check_answer(p, gold_answer(p))
    # node count = the lines of the search part of the trace
    lines = trace_lines(p)
    assert s.nodes == sum(parse_line(l)["kind"] in ("node", "leaf") for l in lines)

@settings(max_examples=60, deadline=None)
@given(small)
def test_trace_arithmetic_replay_and_forced_answer(case):
    nums, target, ops = case
    p = Countdown(nums, target, ops)
    lines = trace_lines(p)
    for line in lines:
        r = parse_line(line)
        for a, op, b, c in r["steps"]: assert OPS[op](a, b) == c and 1 <= c <= 999
        if r["kind"] == "leaf":
            c = r["steps"][-1][3]
            assert r["target"] == target and r["cmp"] == ("==" if c == target else "<" if c < target else ">")
    pr, co = example_text(p)
    think = co.split(f"\n{END_THINK}")[0]
    assert forced_answer(pr + think + "\n") == gold_answer(p)
    s = solve(p)
    if s.solvable:
        replay = [l for l in lines if l.startswith("verify")]
        assert replay == replay_lines(p, s.steps) and replay[-1].endswith(f"| {target} ok")
        assert parse_steps(" , ".join(replay)) == s.steps
    else:
        assert sum(parse_line(l)["backs"] for l in lines) >= 1 and "verify" not in co
    # every prefix has a well-formed forced answer; only a proven search says none
    for k in sorted(set(np.linspace(0, len(lines), 25).astype(int).tolist()) | {len(lines) - 1, len(lines)}):
        a = forced_answer(pr + "".join("\n" + l for l in lines[:k]) + "\n")
        assert a == "none" or parse_steps(a) or (a == "" and k == 0)
        if a == "none" and k > 0: assert not s.solvable and k == len(lines)

def test_verifier_accepts_and_rejects():
    p = Countdown((7, 5, 3, 2), 24)
    good = gold_answer(p)
    assert check_answer(p, good) and check_answer(p, " " + good + " ")
    assert not check_answer(p, "none") and not check_answer(p, "") and not check_answer(p, None)
    assert not check_answer(p, good.rsplit(" , ", 1)[0])            # stops early
    assert not check_answer(p, "7 + 5 = 12 , 12 * 2 = 24")          # 3 unused
    assert not check_answer(p, "7 + 7 = 14 , 14 + 5 = 19 , 19 + 5 = 24")   # reuses numbers
    assert not check_answer(p, "7 - 9 = -2")
    assert not check_answer(p, "7 / 2 = 3 , 5 * 3 = 15 , 15 + 9 = 24")     # / not allowed, inexact
    q = Countdown((8, 2, 3), 12, "+-*/")
    assert check_answer(q, "8 / 2 = 4 , 4 * 3 = 12") and not check_answer(Countdown((8, 2, 3), 12), "8 / 2 = 4 , 4 * 3 = 12")
    u = Countdown((1, 1, 1), 100)
    assert check_answer(u, "none") and check_answer(u, "none", solvable=False) and not check_answer(u, "none", solvable=True)

def test_reasoning_gym_scores_our_answers():
    rg = pytest.importorskip("reasoning_gym")
    scorer = rg.create_dataset("countdown", size=1, seed=0)
    for p in make_problems(30, 4, rng=np.random.default_rng(3)):
        expr = to_expression(solve(p).steps)
        entry = {"metadata": {"numbers": list(p.nums), "target": p.target}}
        assert scorer.score_answer(expr, entry) == 1.0, expr

def test_tokenizer_round_trip():
    tok = word_tokenizer()
    for p in make_grid(3, seed=4):
        text = "".join(example_text(p))
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) - 1 == count_tokens(text)
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert word_tokenizer().get_vocab() == tok.get_vocab()

def test_splits_disjoint_and_stats():
    test = make_grid(20, seed=0)
    train = make_grid(50, seed=1, exclude={p.key for p in test})
    assert not {p.key for p in test} & {p.key for p in train}
    assert len({p.key for p in train}) == len(train)
    t = stats_table(search_stats(test))
    assert {"n", "p50", "p90", "p90/p50"} <= set(t.columns)
    with pytest.raises(ValueError, match="no column"): stats_table(search_stats(test), "nope")

@pytest.mark.parametrize("kw, msg", [(dict(n=-1), "n must"), (dict(n_inputs=1), "n_inputs"), (dict(rarity=-0.1), "rarity"),
                                     (dict(p_unsolvable=2), "p_unsolvable"), (dict(value_range=(5, 2)), "value_range"),
                                     (dict(target_range=(1, 5000)), "target_range"), (dict(ops="+x"), "ops")])
def test_bad_parameters(kw, msg):
    args = dict(n=3, rng=np.random.default_rng(0)) | kw
    with pytest.raises(ValueError, match=msg): make_problems(**args)
    with pytest.raises(TypeError, match="numpy Generator"): make_problems(3, rng=42)
    with pytest.raises(ValueError, match="1..999"): Countdown((1, 2), 0)

def test_as_problem_fits_tiny_reasoner_layout():
    "training.encode_example (TinyReasoner's training layout) writes exactly example_text, in word tokens."
    tok = word_tokenizer()
    for i, p in enumerate(make_grid(2, seed=6)):
        pr, co = example_text(p)
        ids, n_prompt = encode_example(tok, as_problem(p, i))
        assert ids == tok(pr + co)["input_ids"] + [tok.eos_token_id] and n_prompt == len(tok(pr)["input_ids"])
        assert tok.unk_token_id not in ids
