"""Speculative decoding (adalib.speculative): exactness against the target's own decoding.

Greedy: token-for-token identical to `transformers` greedy `generate`. Sampling: the distribution of
the first two generated tokens matches the target's exact joint distribution (enumerated over the whole
vocabulary), and an "always accept" rule fails the same test. Counters and the threshold rule's limits.
"""
import numpy as np
import pytest
import torch
from scipy import stats

from adalib.cascade import toy_pair
from adalib.models import toy_lm, char_tokenizer
from adalib.speculative import (FixedK, Threshold, AcceptanceHead, N_PROB_FEATURES, collect_rollouts, fit_head,
                                speculate, speculative_decode, run_settings, summarize, check_pair)

torch.set_num_threads(1)
PROMPTS = ["Q: 7+5\n<think>", "Q: abc\n<think>", "hello wor", "Q: 9-3-1\n<think>"]


@pytest.fixture(scope="module")
def pair():
    small, large = toy_pair(seed=1)
    return small, large


def _hf_greedy(lm, ids, n):
    eos = lm.tokenizer.eos_token_id
    out = lm.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                            pad_token_id=eos, top_p=None, top_k=None, temperature=None)
    return out[0, len(ids):].tolist()


def _head(draft, h_bias=0.0, seed=None):
    "A head for `draft`'s features: constant sigmoid(h_bias), or with seeded random weights (varying a_i)."
    d = draft.model.config.hidden_size + N_PROB_FEATURES
    w = np.zeros(d) if seed is None else np.random.default_rng(seed).normal(0, 0.3, d)
    return AcceptanceHead(w, h_bias, np.zeros(d), np.ones(d))


@pytest.mark.parametrize("which", ["self", "small", "unrelated"])
def test_greedy_identical_to_target(pair, which):
    small, large = pair
    draft = {"self": large, "small": small, "unrelated": toy_lm(7, hidden_size=32, tokenizer=large.tokenizer, init_std=1.0)}[which]
    head = _head(draft, 1.0, seed=0)
    pols = [FixedK(k) for k in (1, 3, 8)] + [Threshold(head, h, k_max=8) for h in (0.0, 0.5, 1.0)]
    for text in PROMPTS[:3]:
        ids = large.encode(text)
        ref = _hf_greedy(large, ids, 24)
        for pol in pols:
            r = speculative_decode(large.model, draft.model, ids, pol, max_new_tokens=24,
                                   eos_token_id=large.tokenizer.eos_token_id)
            assert r.tokens == ref, (which, str(pol), text)
            if which == "self": assert r.accepted == r.drafted


def _exact_joint(lm, ids):
    "Exact p(x1, x2 | ids) over the whole vocabulary, (V, V)."
    with torch.no_grad():
        p1 = torch.softmax(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].double(), -1)
        V = p1.shape[0]
        x = torch.cat([torch.tensor([ids]).repeat(V, 1), torch.arange(V)[:, None]], 1)
        p2 = torch.softmax(lm.model(input_ids=x).logits[:, -1].double(), -1)
    return (p1[:, None] * p2).numpy()


def _sampling_pvalue(target, draft, ids, joint, verify=None, n=2000):
    V = joint.shape[0]
    counts = np.zeros(V * V)
    for s in range(n):
        t = speculative_decode(target.model, draft.model, ids, FixedK(2), max_new_tokens=2, temperature=1.0,
                               seed=s, verify=verify).tokens
        counts[t[0] * V + t[1]] += 1
    exp = joint.ravel() * n
    big = exp >= 5                                     # chi-square cells: every pair expected >= 5 times, the rest lumped
    f_obs = np.append(counts[big], counts[~big].sum()); f_exp = np.append(exp[big], exp[~big].sum())
    tv = 0.5 * np.abs(counts / n - joint.ravel()).sum()
    return stats.chisquare(f_obs, f_exp * f_obs.sum() / f_exp.sum()).pvalue, tv


@pytest.fixture(scope="module")
def sampling_pair():
    tok = char_tokenizer()
    kw = dict(hidden_size=16, layers=1, heads=2, kv_heads=1, tokenizer=tok, init_std=0.5)
    target = toy_lm(3, bias={"a": 7, "b": 7, "c": 7, "d": 6}, **kw)
    draft = toy_lm(4, bias={"a": 9, "c": 5}, **kw)      # a very different proposal
    ids = target.encode("Q:")
    return target, draft, ids, _exact_joint(target, ids)


def test_sampling_matches_target_distribution(sampling_pair):
    target, draft, ids, joint = sampling_pair
    p, tv = _sampling_pvalue(target, draft, ids, joint)
    assert p > 1e-3 and tv < 0.08, (p, tv)


def test_broken_rule_fails_the_same_check(sampling_pair):
    target, draft, ids, joint = sampling_pair
    always = lambda p, q, drafted, gen: (len(drafted), int(torch.multinomial(p[len(drafted)], 1, generator=gen)))
    p, tv = _sampling_pvalue(target, draft, ids, joint, verify=always)
    assert p < 1e-6, (p, tv)


def test_sampling_seeded(sampling_pair):
    target, draft, ids, _ = sampling_pair
    run = lambda s: speculative_decode(target.model, draft.model, ids, FixedK(3), max_new_tokens=12, temperature=1.0, seed=s).tokens
    assert run(5) == run(5) and any(run(5) != run(s) for s in range(6, 12))


def test_counters_consistent(pair):
    small, large = pair
    for k in (1, 3, 8):
        for text in PROMPTS:
            r = speculative_decode(large.model, small.model, large.encode(text), FixedK(k), max_new_tokens=25)
            assert r.target_calls == r.rounds and r.target_calls <= r.n
            assert r.accepted <= r.drafted and r.draft_calls == r.drafted
            assert r.n <= r.accepted + r.rounds and r.n == 25
            assert max(r.round_drafted) <= k and sum(r.round_drafted) == r.drafted
            assert all(a <= d for a, d in zip(r.round_accepted, r.round_drafted))


def test_threshold_limits(pair):
    small, large = pair
    head = _head(small, 1.0, seed=1)
    keys = ("tokens", "target_calls", "draft_calls", "drafted", "accepted", "rounds")
    for text in PROMPTS[:3]:
        row = lambda pol: speculate(large, small, text, pol, max_new_tokens=25)
        lo, k1 = row(Threshold(head, 0.0, k_max=8)), row(FixedK(1))
        hi, k8 = row(Threshold(head, 1.0, k_max=8)), row(FixedK(8))
        assert all(lo[c] == k1[c] for c in keys) and all(hi[c] == k8[c] for c in keys), text


def test_rollouts_train_a_head(pair):
    small, large = pair
    X, y, g, pos = collect_rollouts(large, large, PROMPTS[:2], k=4, max_new_tokens=12)   # self-draft: all accepted
    assert y.all() and len(X) == len(g) == len(pos) and X.shape[1] == large.model.config.hidden_size + N_PROB_FEATURES
    X, y, g, pos = collect_rollouts(large, small, PROMPTS[:2], k=4, max_new_tokens=12)
    assert pos[0] == 1 and all(pos[i + 1] in (1, pos[i] + 1) for i in range(len(y) - 1))   # rounds start at position 1
    assert all(y[i] or pos[i + 1] == 1 for i in range(len(y) - 1))   # nothing recorded after a rejection in its round
    assert not y.all()


def test_run_settings_and_summary(pair):
    small, large = pair
    runs = run_settings(large, small, PROMPTS[:3], [FixedK(2), FixedK(6)], max_new_tokens=15)
    assert runs.mismatch.sum() == 0 and set(runs.policy) == {"target", "K=2", "K=6"}
    s = summarize(runs, n_boot=100).set_index("policy")
    assert s.loc["target", "calls_per_token"] == 1 and (s.calls_per_token <= 1).all()
    manual = runs[runs.policy == "K=2"]
    assert s.loc["K=2", "calls_per_token"] == pytest.approx(manual.target_calls.sum() / manual.n_tokens.sum())


def test_bad_input(pair):
    small, large = pair
    other = toy_lm(0, tokenizer=large.tokenizer); other.model.resize_token_embeddings(130)
    with pytest.raises(ValueError, match="vocabularies differ"): check_pair(large, other)
    with pytest.raises(ValueError, match="prompt_ids is empty"): speculative_decode(large.model, small.model, [])
    with pytest.raises(ValueError, match="max_new_tokens"): speculative_decode(large.model, small.model, [1], max_new_tokens=0)
    with pytest.raises(ValueError, match="k must be"): FixedK(100)
    with pytest.raises(ValueError, match="h must be"): Threshold(_head(small), -0.1)
    with pytest.raises(ValueError, match="one class"): fit_head(np.zeros((4, 2)), [True] * 4)
