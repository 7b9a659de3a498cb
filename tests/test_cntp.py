"CNTP: plain sampling when the threshold never triggers; trials, their perplexities and the kept trial checked by cache-free recomputation."
import math, numpy as np, pytest, torch
from adalib.models import toy_lm
from adalib.tasks import make_grid
from adalib.generate import generate_batch
from adalib.cntp import cntp_decode, cntp_run, trials_for_entropy

torch.set_num_threads(1)

@pytest.fixture(scope="module")
def lm(): return toy_lm(seed=2)

@pytest.fixture(scope="module")
def probs(): return make_grid(families=["chain_sum", "spell_backward"], difficulties=[2], n=2, seed=4)

@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_never_triggers_is_generate_batch(lm, probs, temperature):
    for i, p in enumerate(probs):
        ref = generate_batch(lm, [p], budget=24, temperature=temperature, seed=100 + i, probes=False)
        out = cntp_decode(lm, p, budget=24, temperature=temperature, seed=100 + i, low=math.inf)
        assert out["tokens"] == ref.tokens[0] and out["stop_reason"] == ref.stop[0]
        # a finite threshold above every entropy the model reaches is the same (the vocabulary caps entropy at log V)
        high = cntp_decode(lm, p, budget=24, temperature=temperature, seed=100 + i, low=math.log(len(lm.tokenizer)) + 1)
        assert high["tokens"] == ref.tokens[0] and high["trial_events"] == 0

@torch.no_grad()
def _logprobs(lm, prefix, cont):
    "Log-probabilities of `cont` after `prefix`, from one forward pass without a cache."
    ids = torch.tensor([prefix + cont])
    logp = torch.log_softmax(lm.model(ids).logits[0].double(), -1)
    return [float(logp[len(prefix) - 1 + j, t]) for j, t in enumerate(cont)]

def test_trials_hand_checked(lm, probs):
    p, log = probs[1], []
    out = cntp_decode(lm, p, budget=30, temperature=1.0, seed=7, low=2.0, high=4.0, max_trials=4, log=log)
    assert out["trial_events"] == len(log) >= 2
    prompt = lm.tokenizer(lm.prompt(p))["input_ids"]
    pos, rebuilt = 0, []
    for e in log:
        prefix = prompt + out["tokens"][:e["step"]]
        assert e["n"] == int(trials_for_entropy(e["entropy"], 2.0, 4.0, 4)) >= 2
        for trial, ppl in zip(e["trials"], e["ppl"]):
            assert ppl == pytest.approx(math.exp(-np.mean(_logprobs(lm, prefix, trial))), rel=1e-4)
        assert e["chosen"] == int(np.argmin(e["ppl"]))
        assert out["tokens"][e["step"]:e["step"] + len(e["trials"][e["chosen"]])] == e["trials"][e["chosen"]]
        # every trial ends at a delimiter, the end of thinking, EOS, or the budget
        for t in e["trials"]:
            text = lm.tokenizer.decode(t, skip_special_tokens=False)
            assert text.endswith(("\n", lm.think_end)) or t[-1] == lm.tokenizer.eos_token_id or e["step"] + len(t) == 30
    # costs: plain tokens + every trial token
    plain = len(out["tokens"]) - sum(len(e["trials"][e["chosen"]]) for e in log)
    assert out["sampled_tokens"] == plain + sum(sum(e["lengths"]) for e in log)

def test_entropy_schedule():
    assert list(trials_for_entropy([0.5, 1.0, 1.01, 2.0, 3.0, 10.0], low=1.0, high=3.0, max_trials=5)) == [1, 1, 2, 3, 5, 5]

def test_bad_input(lm, probs):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cntp_decode(lm, probs[0], temperature=0.0)
    with pytest.raises(ValueError, match="must exceed"):
        cntp_decode(lm, probs[0], low=1.0, high=0.5)
    with pytest.raises(ValueError, match="delimiters"):
        cntp_decode(lm, probs[0], delimiters=[""])

def test_run_frame(lm, probs):
    df = cntp_run(lm, probs, budget=10, low=1.0, high=3.0, max_trials=3)
    assert list(df["problem_id"]) == [p.id for p in probs]
    assert (df["sampled_tokens"] >= df["reasoning_tokens"]).all()

def test_trials_ending_in_eos():
    "Every trial ends at EOS (never fed): the kept trial ends the trace without touching the cache."
    lm = toy_lm(seed=2, bias={"</s>": 30.0})
    p = make_grid(families=["chain_sum"], difficulties=[1], n=1, seed=4)[0]
    log = []
    out = cntp_decode(lm, p, budget=12, temperature=1.0, seed=1, low=-1.0, high=0.0, max_trials=3, log=log)
    assert out["stop_reason"] == "eos" and out["tokens"][-1] == lm.tokenizer.eos_token_id
    assert out["trial_events"] == len(log) >= 1
    assert all(t[-1] == lm.tokenizer.eos_token_id and len(t) == 1 for t in log[-1]["trials"])   # the path that once cropped +1
