"Sample pools: resume gives identical bytes; answer_prob equals an independent recomputation from the model's logits."
import numpy as np, pandas as pd, pytest, torch
from adalib.models import toy_lm
from adalib.tasks import make_grid
from adalib.pools import sample_pool, read_pool, prompt_hidden

torch.set_num_threads(1)
KW = dict(m=4, budget=10, temperature=1.0, seed=3, batch_size=8, progress=False)

@pytest.fixture(scope="module")
def lm(): return toy_lm(seed=1)

@pytest.fixture(scope="module")
def probs(): return make_grid(families=["chain_sum", "letter_counting"], difficulties=[1], n=3, seed=5)

def test_resume_identical_bytes(lm, probs, tmp_path):
    res = sample_pool(lm, probs, out_dir=tmp_path, **KW)
    files = sorted(p for p in tmp_path.iterdir() if p.name != "_run.json")
    assert len(res["written"]) == res["shards"] == 4 and len(files) == 8
    before = {p.name: p.read_bytes() for p in files}
    victim = res["written"][2]
    victim.unlink(); victim.with_suffix(".prompt.npy").unlink()
    again = sample_pool(lm, probs, out_dir=tmp_path, **KW)
    assert again["written"] == [victim] and len(again["skipped"]) == 3
    assert {p.name: p.read_bytes() for p in files} == before

def test_other_parameters_refused(lm, probs, tmp_path):
    sample_pool(lm, probs, out_dir=tmp_path, max_shards=1, **KW)
    with pytest.raises(ValueError, match="other parameters.*another out_dir"):
        sample_pool(lm, probs, out_dir=tmp_path, **{**KW, "m": 2})

def test_bad_input(lm, probs, tmp_path):
    with pytest.raises(ValueError, match="temperature > 0"):
        sample_pool(lm, probs, out_dir=tmp_path, **{**KW, "temperature": 0.0})
    with pytest.raises(ValueError, match="name is required"):
        sample_pool(lambda: lm, probs, out_dir=tmp_path, **KW)
    with pytest.raises(FileNotFoundError, match="sample_pool"):
        read_pool(tmp_path / "nothing")

@torch.no_grad()
def _answer_from_logits(lm, problem, reasoning):
    "Independent greedy answer and exp(mean log p) of its tokens, by full recomputation without a cache."
    tok = lm.tokenizer
    ids = tok(lm.prompt(problem))["input_ids"] + tok(reasoning + lm.think_end + lm.answer_prefix, add_special_tokens=False)["input_ids"]
    cap, ans, lps = len(tok(str(problem.gold), add_special_tokens=False)["input_ids"]) + 3, [], []
    for _ in range(cap):
        logp = torch.log_softmax(lm.model(torch.tensor([ids + ans])).logits[0, -1].double(), -1)
        t = int(logp.argmax()); lps.append(float(logp[t]))
        if t == tok.eos_token_id: break
        ans.append(t)
        if lm.answer_stop in tok.decode(ans): break
    return tok.decode(ans), float(np.exp(np.mean(lps)))

def test_answer_prob_matches_logits(lm, probs, tmp_path):
    sample_pool(lm, probs, out_dir=tmp_path, **KW)
    pool = read_pool(tmp_path)
    by_id = {p.id: p for p in probs}
    for i in (0, 7, 13):
        row = pool.iloc[i]
        text, prob = _answer_from_logits(lm, by_id[row.problem_id], row.reasoning)
        from adalib.tasks import extract_answer
        assert extract_answer(text) == row.answer
        assert row.answer_prob == pytest.approx(prob, rel=1e-4)

def test_hidden_is_prompt_state(lm, probs, tmp_path):
    sample_pool(lm, probs, out_dir=tmp_path, **KW)
    pool, H = read_pool(tmp_path, hidden=True)
    assert list(H.index) == list(pool["problem_id"].drop_duplicates())
    np.testing.assert_allclose(H.loc[probs[4].id].to_numpy(), prompt_hidden(lm, [probs[4]])[0].astype(np.float32))
    assert pool.groupby("problem_id")["sample"].apply(list).map(lambda s: s == [0, 1, 2, 3]).all()
