"Tests for adalib.tasks: reasoning-gym adapters, CoT format, scoring, answer extraction, prompts."
import pytest
import reasoning_gym as rg
from hypothesis import given, settings, strategies as st

from adalib.tasks import (FAMILIES, Problem, chat_prompt, extract_answer, get_family, make_grid,
                          problems_frame, score)


@pytest.fixture(scope="module")
def grid():
    return make_grid(n=4, seed=11)


def test_at_least_three_families_one_non_arithmetic():
    assert len(FAMILIES) >= 3
    assert {"spell_backward", "letter_counting"} & set(FAMILIES)
    for f in FAMILIES.values():
        assert f.difficulties == sorted(f.difficulties) and f.difficulties[0] == 1
        assert set(f.trained) < set(f.difficulties), "some levels must stay untrained (the hard part)"


def test_gold_scores_true_wrong_false_and_agrees_with_reasoning_gym(grid):
    for p in grid:
        fam = get_family(p.family)
        ref = rg.get_score_answer_fn(p.family)  # reasoning-gym's own verifier, called directly
        wrong = p.gold[::-1] + "z" if p.family == "spell_backward" else str(int(p.gold) + 1)
        assert fam.score(p.gold, p) and ref(p.gold, p.entry) == 1.0
        assert not fam.score(wrong, p) and ref(wrong, p.entry) < 1.0
        assert not fam.score("", p) and not fam.score(None, p)
        assert score(p.gold, p)


def test_partial_credit_is_not_correct():
    # reasoning-gym gives partial (and, from float sums, sometimes > 1) reward to gold + junk
    for p in get_family("spell_backward").generate(6, 5, seed=2):
        assert rg.get_score_answer_fn("spell_backward")(p.gold + "x", p.entry) > 0.5
        assert not score(p.gold + "x", p)


def test_generation_is_deterministic_in_seed():
    for f in FAMILIES.values():
        a, b, c = f.generate(6, 2, seed=5), f.generate(6, 2, seed=5), f.generate(6, 2, seed=6)
        assert [(p.id, p.question, p.gold, p.cot) for p in a] == [(p.id, p.question, p.gold, p.cot) for p in b]
        assert [p.question for p in a] != [p.question for p in c]
        assert a[0].id == f"{f.name}-d2-s5-0"


def test_seeds_do_not_share_items():
    # reasoning-gym seeds item i with seed + i; our seed mixing must keep seeds 0 and 1 apart
    f = get_family("chain_sum")
    q0 = [p.entry["metadata"]["expression"] for p in f.generate(50, 5, seed=0)]
    q1 = [p.entry["metadata"]["expression"] for p in f.generate(50, 5, seed=1)]
    assert len(set(q0) & set(q1)) <= 1


def test_cot_last_step_ends_at_gold(grid):
    for p in grid:
        steps = p.cot.split("\n")
        if p.family == "spell_backward":
            L = len(p.gold)
            assert "".join(s[-1] for s in steps[L:]) == p.gold and steps[-1][-1] == p.gold[-1]
            assert [int(s[:-1]) for s in steps] == list(range(1, L + 1)) + list(range(L, 0, -1))
            assert "".join(s[-1] for s in steps[:L]) == p.entry["metadata"]["word"]
        else:
            assert steps[-1].rsplit("=", 1)[1] == p.gold
        assert p.gold not in ("",) and "</think>" not in p.cot


def test_chain_sum_steps_are_correct_arithmetic():
    for p in get_family("chain_sum").generate(20, 4, seed=3):
        for s in p.cot.split("\n"):
            lhs, rhs = s.split("=")
            assert eval(lhs) == int(rhs)  # our own literals only: digits and +/-
        assert len(p.cot.split("\n")) == 5  # difficulty 4 = 6 terms


def test_difficulty_knob_changes_size():
    for f in FAMILIES.values():
        n = [sum(len(p.cot.split("\n")) for p in f.generate(10, d, seed=0)) for d in f.difficulties]
        assert n == sorted(n) and n[0] < n[-1]


def test_bad_inputs_name_the_field():
    f = get_family("chain_sum")
    with pytest.raises(ValueError, match="difficulty=7"): f.generate(3, 7)
    with pytest.raises(TypeError, match="difficulty must be an int"): f.generate(3, "1")
    with pytest.raises(ValueError, match="n must be"): f.generate(-2, 1)
    with pytest.raises(TypeError, match="seed must be an int"): f.generate(2, 1, seed=0.5)
    with pytest.raises(ValueError, match="unknown task family 'sudoku'"): get_family("sudoku")
    p = get_family("letter_counting").generate(1, 1)[0]
    with pytest.raises(ValueError, match="belongs to family"): f.score("1", p)
    with pytest.raises(TypeError, match="answer must be a str"): get_family("letter_counting").score(3, p)


@pytest.mark.parametrize("text,expected", [
    ("12", "12"), ("  -7 \n junk", "-7"), ("nifle</s>", "nifle"), ("42<|im_end|>\n", "42"),
    ("Final answer: 13", "13"), ("**5**.", "5"), ("A: 9", "9"), ("\n\n3\n", "3"), ("", ""), ("7.", "7"),
    ("2.5", "2.5"), ("$8$", "8"), ("hello world.", "hello world"),
])
def test_extract_answer_cases(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_types():
    assert extract_answer(None) == ""
    with pytest.raises(TypeError, match="text must be a str"): extract_answer(5)


@settings(max_examples=100, deadline=None)
@given(st.integers(-10**6, 10**6), st.text(max_size=20))
def test_extract_answer_stops_at_newline(n, tail):
    assert extract_answer(f" {n}\n{tail}") == str(n)
    assert extract_answer(f"{n}</s>{tail}") == str(n)


def test_chat_prompt_styles(grid):
    p = grid[0]
    cot, direct = chat_prompt(p, "cot"), chat_prompt(p, "direct")
    assert [m["role"] for m in cot] == ["system", "user"]
    assert p.entry["question"] in cot[1]["content"] and "Final answer:" in cot[1]["content"]
    assert "only the final answer" in direct[1]["content"]
    with pytest.raises(ValueError, match="style"): chat_prompt(p, "fast")
    with pytest.raises(TypeError, match="problem must be a Problem"): chat_prompt({"question": "x"})


def test_problems_frame_and_grid_order(grid):
    df = problems_frame(grid)
    assert list(df.columns) == ["id", "family", "difficulty", "question", "gold", "cot", "n_steps"]
    assert df["id"].is_unique and len(df) == 4 * sum(len(f.difficulties) for f in FAMILIES.values())
    t = make_grid(n=2, difficulties="trained", seed=0)
    assert {(p.family, p.difficulty) for p in t} == {(f.name, d) for f in FAMILIES.values() for d in f.trained}
