"""Tests of adalib.generate and adalib.shards: the Decoder reproduces the closure-based generate_batch
bit for bit (tests/fixtures/generate_ref.json), probes do not disturb the main generation, batching is
invisible, signals and hidden states match an independent full forward pass / transformers' own
greedy generate, shards resume after a kill, accuracy-vs-budget matches a brute-force loop, bad input."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from adalib.generate import SIGNALS, Decoder, generate_batch, trace_id
from adalib.generate import _join_cache, _kv, _rows_independent_from
from adalib.models import new_tiny_reasoner, toy_lm
from adalib.shards import accuracy_vs_budget, generate_run, model_loader, plan_shards, run_traces, shard_seed
from adalib.tasks import get_family
from adalib.tasks import Problem
from adalib.traces import TraceSet, synthetic_traces

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_generate_ref as REF   # noqa: E402

QS = [("3+4", "7"), ("9-2+1", "8"), ("5+5+5+5", "20"), ("1", "1"), ("long question 12345+6789", "x"),
      ("abc", "c"), ("zz", "z"), ("q", "q")]
PROBS = [Problem(f"toy-{i}", "toy", 1, q, g, {}, "") for i, (q, g) in enumerate(QS)]
KW = dict(score=lambda a, p: a == p.gold, extract=lambda t: t.split("\n")[0].strip())


@pytest.fixture(scope="module")
def lm():
    "Random tiny Llama biased towards '#', with a two-token end-of-thinking marker '##'."
    return toy_lm(0, bias={"#": 2.0}, think_end="##")


@pytest.fixture(scope="module")
def batch(lm):
    return generate_batch(lm, PROBS, budget=40, probe_every=4, **KW)


def test_rows_stop_all_three_ways(batch):
    assert set(batch.stop) == {"eos", "eot", "budget"}


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("every", [1, 3, 16])
def test_probes_do_not_disturb_main_tokens(lm, temperature, every):
    a = generate_batch(lm, PROBS, budget=40, probe_every=every, temperature=temperature, seed=11, **KW)
    b = generate_batch(lm, PROBS, budget=40, probes=False, temperature=temperature, seed=11, **KW)
    assert a.tokens == b.tokens and a.stop == b.stop
    assert len(a.df) > 0 and b.df.empty


@pytest.fixture(scope="module")
def ref_lms():
    return {k: f() for k, f in REF.LMS.items()}


@pytest.mark.parametrize("name", list(REF.CONFIGS))
def test_decoder_reproduces_the_recorded_generate_batch(ref_lms, name):
    """Tokens, stop reasons, answers, every signal (exact float repr), metadata and hidden-state bytes equal
    those of the closure-based generate_batch recorded before the Decoder refactor."""
    want = json.loads((ROOT / "tests" / "fixtures" / "generate_ref.json").read_text())[name]
    got = json.loads(json.dumps(REF.record(REF.run_config(name, ref_lms)), sort_keys=True))
    for k in ("tokens", "stop", "df", "meta", "hidden"):
        assert got[k] == want[k], f"{name}: {k} differs from the recorded output"


# ---- fused probes: answer steps ride on the main forwards -------------------------------------

# equal-length prompts (no left padding: an all-ones main mask) and early stops whose final probes mask
# later cache columns exercise the rule that a branch rides only where its attention takes the main rows' path
SAME = [Problem(f"same-{i}", "toy", 1, q, g, {}, "") for i, (q, g) in
        enumerate([("3+4", "7"), ("9-2", "7"), ("5+5", "10"), ("abc", "c"), ("zzz", "z"), ("qqq", "q"), ("1+1", "2"), ("x y", "y")])]


@pytest.mark.parametrize("name", ["greedy", "greedy_every3_cap3", "sampled", "forced_greedy", "ignore_eos_nohidden",
                                  "same_length"])
def test_fused_probes_equal_sequential_bit_for_bit(ref_lms, name):
    """probe_mode="fused" (answer steps as extra rows of the main forwards) gives exactly the tokens, answers, signal
    floats and hidden-state bytes of probe_mode="sequential" (each probe step a forward of its own), and it does ride."""
    lm_key, idx, kw = REF.CONFIGS[name] if name != "same_length" else ("hash", None, dict(budget=40, probe_every=4))
    probs = SAME if idx is None else [REF.PROBS[i] for i in idx]
    out, tim = {}, {}
    for mode in ("fused", "sequential"):
        tim[mode] = {}
        out[mode] = json.dumps(REF.record(generate_batch(ref_lms[lm_key], probs, probe_mode=mode, timings=tim[mode],
                                                         **kw, **REF.KW)), sort_keys=True)
    assert out["fused"] == out["sequential"]
    assert tim["fused"]["probe_steps_riding"] > 0 and tim["sequential"]["probe_steps_riding"] == 0
    assert tim["fused"]["probe_forwards"] + tim["fused"]["probe_steps_riding"] == tim["sequential"]["probe_forwards"]


def test_rows_independent_from_matches_brute_force():
    "Above the threshold every row of a matmul is bit-identical in every batch size up to 24 (F.linear, as the model)."
    for k, n in [(64, 192), (128, 384)]:
        m0 = _rows_independent_from(k, n)
        g = torch.Generator().manual_seed(1)
        w, x = torch.randn(n, k, generator=g), torch.randn(24, k, generator=g)
        ref = torch.nn.functional.linear(x, w)
        for m in range(m0, 24):
            assert torch.equal(torch.nn.functional.linear(x[:m], w), ref[:m]), (k, n, m)


def test_join_cache_appends_like_a_dynamic_cache(lm):
    "Two row groups joined for one forward: the result holds both groups' rows in order, then the new column."
    from transformers import DynamicCache
    m, g = lm.model, torch.Generator().manual_seed(0)
    caches = []
    for b in (2, 3):
        c = DynamicCache(config=m.config)
        with torch.no_grad():
            m.base_model(input_ids=torch.randint(5, 40, (b, 6), generator=g), past_key_values=c, use_cache=True)
        caches.append(c)
    j = _join_cache(m.config, [_kv(c) for c in caches])
    ids = torch.randint(5, 40, (5, 1), generator=g)
    with torch.no_grad():
        m.base_model(input_ids=ids, position_ids=torch.full((5, 1), 6), past_key_values=j, use_cache=True)
    for (k, v), (k0, v0), (k1, v1) in zip(_kv(j), _kv(caches[0]), _kv(caches[1])):
        assert k.shape[0] == 5 and k.shape[-2] == 7 and k.is_contiguous()
        assert torch.equal(k[:2, :, :6], k0) and torch.equal(k[2:, :, :6], k1)
        assert torch.equal(v[:2, :, :6], v0) and torch.equal(v[2:, :, :6], v1)


def test_decoder_methods_step_by_step(lm):
    "prefill / step / finish / flush / probe used by hand give the same checkpoints as run()."
    kw = dict(budget=8, probe_every=4, **KW)
    d = Decoder(lm, PROBS[:3], **kw).prefill()
    assert d.fwd.length == d.P and d.logits.shape[0] == 3
    s = 0
    for s in range(1, 9):
        if not d.step(s): break
        assert d.fwd.length == d.mask.shape[1]
        if s % 4 == 0 or s == 8 or 4 * len(d.stopped) >= len(d.live):
            n = d.fwd.length
            d.flush(s, s % 4 == 0 or s == 8)
            assert d.fwd.length == n and not d.stopped   # probes are cropped, stopped rows are gone
    for r in d.live.tolist():
        if d.active[r]: d.finish(r, 8, "budget")
    d.probe(d._pending(), d.s_fed)
    a, b = d.result(), generate_batch(lm, PROBS[:3], **kw)
    assert a.tokens == b.tokens and a.meta == b.meta
    pd.testing.assert_frame_equal(a.df, b.df)


def test_batched_equals_unbatched(lm, batch):
    for r, p in enumerate(PROBS):
        one = generate_batch(lm, [p], budget=40, probe_every=4, **KW)
        assert one.tokens[0] == batch.tokens[r], f"row {r}: padded batch changed the greedy tokens"
        assert one.meta[0] == batch.meta[r]
        mine = batch.df[batch.df.trace_id == one.df.trace_id[0]].reset_index(drop=True)
        assert one.df[["step", "tokens", "answer", "correct"]].equals(mine[["step", "tokens", "answer", "correct"]])
        np.testing.assert_allclose(one.df.filter(like="sig_").to_numpy(), mine.filter(like="sig_").to_numpy(), atol=1e-4)
        rows = (batch.df.trace_id == one.df.trace_id[0]).to_numpy()
        np.testing.assert_allclose(one.hidden.astype(float), batch.hidden[rows].astype(float), atol=2e-3)


def _full_forward_reference(lm, problem, reasoning, cap):
    """Independent reference without any cache: the probed answer by transformers' own greedy
    `generate`, and the signals from one plain forward pass over prompt + reasoning + forced + answer."""
    tok, model = lm.tokenizer, lm.model
    prompt = tok(lm.prompt(problem))["input_ids"]
    te = tok(lm.think_end, add_special_tokens=False)["input_ids"]
    ap = tok(lm.answer_prefix, add_special_tokens=False)["input_ids"]
    ctx = prompt + reasoning + te + ap
    with torch.no_grad():
        x = torch.tensor([ctx])  # explicit mask: a random model may emit <pad>, which generate() would otherwise mask out
        gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=cap, do_sample=False, top_k=None, top_p=None,
                             temperature=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(ctx):].tolist()
        ans = []
        for t in gen:
            ans.append(t)
            if t == tok.eos_token_id or "\n" in tok.decode([x for x in ans if x != tok.eos_token_id]): break
        out = model(torch.tensor([ctx + ans]), output_hidden_states=True)
    logp = torch.log_softmax(out.logits[0].double(), -1)
    ent = lambda i: float(-(logp[i].exp() * logp[i]).sum())
    n = len(ctx)
    lps = [float(logp[n - 1 + j, t]) for j, t in enumerate(ans)]
    text = tok.decode([t for t in ans if t != tok.eos_token_id])
    hidden = out.hidden_states[-1][0, len(prompt) + len(reasoning) - 1]
    return dict(answer=text.split("\n")[0].strip(), answer_prob=float(np.exp(np.mean(lps))), answer_negent=-ent(n - 1),
                eot_negent=-ent(len(prompt) + len(reasoning) + len(te) - 1)), hidden


def test_probe_matches_full_forward_and_hf_generate(lm, batch):
    checked = 0
    for r, p in enumerate(PROBS):
        rows = batch.df[batch.df.trace_id == trace_id("toy", p.id)]
        for i, row in rows.iterrows():
            ref, h = _full_forward_reference(lm, p, batch.tokens[r][:row.tokens], batch.meta[r]["answer_max_tokens"])
            assert row.answer == ref["answer"], (r, row.tokens)
            for k in ("answer_prob", "answer_negent", "eot_negent"):
                assert abs(row[f"sig_{k}"] - ref[k]) < 1e-3, (k, r, row.tokens)
            if row.tokens > 0:
                np.testing.assert_allclose(batch.hidden[i].astype(float), h.numpy(), atol=1e-2, rtol=1e-2)
            checked += 1
    assert checked == len(batch.df)


def test_window_signals_match_main_logits(lm, batch):
    "Window signals recomputed from one full forward pass over prompt + main tokens."
    tok = lm.tokenizer
    for r, p in enumerate(PROBS):
        prompt = tok(lm.prompt(p))["input_ids"]
        seq = prompt + batch.tokens[r]
        with torch.no_grad(): logits = lm.model(torch.tensor([seq])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        ent = -(logp.exp() * logp).sum(-1)
        rows = batch.df[batch.df.trace_id == trace_id("toy", p.id)]
        prev = 0
        for _, row in rows.iterrows():
            lo, hi = max(1, prev + 1), max(1, row.tokens)
            idx = [len(prompt) - 1 + s - 1 for s in range(lo, hi + 1)]   # logits that produced token s
            gen = [seq[len(prompt) + s - 1] for s in range(lo, hi + 1)]
            lp = torch.tensor([float(logp[i, t]) for i, t in zip(idx, gen)])
            assert abs(row.sig_win_negent + float(ent[idx].mean())) < 1e-3
            assert abs(row.sig_win_logprob - float(lp.mean())) < 1e-3
            assert abs(row.sig_win_minprob - float(lp.min().exp())) < 1e-3
            assert abs(row.sig_win_maxprob - float(logp[idx].exp().max(-1).values.mean())) < 1e-3
            prev = row.tokens


def test_checkpoint_structure(batch):
    assert list(batch.df.filter(like="sig_").columns) == [f"sig_{s}" for s in SIGNALS]
    for m in batch.meta:
        t = batch.df.loc[batch.df.trace_id == m["trace_id"], "tokens"].to_numpy()
        assert (np.diff(t) > 0).all() and t[-1] == m["reasoning_tokens"] and (t[:-1] % 4 == 0).all()
        assert m["stop_reason"] != "budget" or t[-1] == 40
    assert batch.hidden.dtype == np.float16 and batch.hidden.shape == (len(batch.df), 64)
    TraceSet.from_frames(batch.df, batch.meta, batch.hidden)   # validates


def test_sampling_is_seeded(lm):
    a = generate_batch(lm, PROBS, budget=12, temperature=1.0, seed=5, probes=False, **KW)
    b = generate_batch(lm, PROBS, budget=12, temperature=1.0, seed=5, probes=False, **KW)
    c = generate_batch(lm, PROBS, budget=12, temperature=1.0, seed=6, probes=False, **KW)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_accepts_adalib_models_lm():
    "An adalib.models.LM (random TinyReasoner) on a real task family with its reasoning-gym verifier."
    lm = new_tiny_reasoner("tiny-reasoner-small", seed=0)
    probs = get_family("chain_sum").generate(3, 1, seed=0)
    b = generate_batch(lm, probs, budget=8, probe_every=4)
    assert b.df["trace_id"].str.startswith("tiny-reasoner-small:chain_sum-d1-s0-").all()
    assert len(b.df) == 6 and b.hidden.shape[1] == lm.model.config.hidden_size
    c = generate_batch(lm, probs, budget=8, probes=False)
    assert c.tokens == b.tokens


def test_accuracy_vs_budget_matches_brute_force():
    ts = synthetic_traces(60, 9, seed=3)
    ts.meta["model"], ts.meta["task"], ts.meta["difficulty"] = "m", np.where(np.arange(ts.n) % 2, "a", "b"), 1
    budgets = [0, 5, 16, 40, 100, 10_000]
    got = accuracy_vs_budget(ts, budgets=budgets, by=["task"])
    for (task, b), row in got.set_index(["task", "budget"]).iterrows():
        ids = ts.meta.index[ts.meta.task == task]
        ok = []
        for t in ids:
            d = ts.df[ts.df.trace_id == t]
            d = d[d.tokens <= b]
            ok.append(bool(d.correct.iloc[-1]) if len(d) else False)
        assert row.accuracy == pytest.approx(np.mean(ok)) and row.n == len(ids)


# ---- shards and resume ------------------------------------------------------------------------

RUN_KW = dict(tasks=["chain_sum", "spell_backward"], difficulties=[1, 3], n_problems=4, batch_size=2,
              budget=32, probe_every=4, seed=7, problem_seed=3, progress=False)
SCRIPT = textwrap.dedent(f"""
    import sys, torch
    torch.set_num_threads(1)
    from adalib.shards import run_traces
    from adalib.models import toy_lm
    lm = toy_lm(0, bias={{"#": 2.0}}, think_end="##")
    run_traces(lm, sys.argv[1], **{RUN_KW!r})
""")


def _loaded(folder):
    ts = TraceSet.read(folder, hidden=True)
    return ts.df, ts.meta, ts.hidden


def test_interrupted_run_resumes_identically(tmp_path, lm):
    "Kill a run (subprocess) right after its first shard; rerunning completes it exactly as an uninterrupted run."
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cut)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not list(cut.glob("*.parquet")):
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() - t0 < 180, "no shard appeared within 180 s"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait()
    n_before = len(list(cut.glob("*.parquet")))
    assert 1 <= n_before < 8, f"the kill must land mid-run, found {n_before} of 8 shards"
    res = run_traces(lm, cut, **RUN_KW)
    assert len(res["skipped"]) == n_before and len(res["written"]) == 8 - n_before
    run_traces(lm, full, **RUN_KW)
    a, b = _loaded(full), _loaded(cut)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert a[2].tobytes() == b[2].tobytes()
    assert sorted(x.name for x in full.glob("*.parquet")) == sorted(x.name for x in cut.glob("*.parquet"))
    assert len(a[1]) == 16 and not a[1].index.duplicated().any()


def test_shard_plan_and_seeds(tmp_path):
    plan = plan_shards("m", tmp_path, ["chain_sum"], [1, 2], n_problems=5, batch_size=4, samples=2, seed=0, problem_seed=1)
    assert [(s.difficulty, s.index, len(s.problems)) for s in plan] == [(1, 0, 4), (1, 1, 4), (1, 2, 2), (2, 0, 4), (2, 1, 4), (2, 2, 2)]
    assert plan[0].samples == [0, 1, 0, 1] and plan[0].problems[0] is plan[0].problems[1]
    assert plan[1].path.name == "chain_sum-d1-001.parquet"
    seeds = {s.seed for s in plan}
    assert len(seeds) == 6 and shard_seed(0, "m", "chain_sum", 1, 0) == plan[0].seed
    assert shard_seed(1, "m", "chain_sum", 1, 0) != plan[0].seed


# ---- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(budget=0), "budget must be an int >= 1"),
    (dict(probe_every=0), "probe_every must be an int >= 1"),
    (dict(temperature=-1.0), "temperature must be a float >= 0"),
    (dict(answer_max_tokens=0), "answer_max_tokens must be an int >= 1"),
    (dict(samples=[0]), "samples has 1 entries for 8 problems"),
    (dict(probe_mode="batched"), "probe_mode must be 'fused' or 'sequential'"),
])
def test_bad_generation_parameters(lm, kw, match):
    with pytest.raises(ValueError, match=match):
        generate_batch(lm, PROBS, **{**dict(budget=8), **kw}, **KW)


def test_empty_problems(lm):
    with pytest.raises(ValueError, match="problems is empty"):
        generate_batch(lm, [], **KW)


def test_not_an_lm():
    with pytest.raises(TypeError, match="attribute 'think_end' missing"):
        generate_batch(SimpleNamespace(model=None, tokenizer=None, name="x"), PROBS, **KW)


def test_samples_need_temperature(lm, tmp_path):
    with pytest.raises(ValueError, match="set temperature > 0"):
        run_traces(lm, tmp_path, ["chain_sum"], [1], 2, samples=3, temperature=0.0, progress=False)


def test_changed_parameters_are_refused(lm, tmp_path):
    kw = dict(tasks=["chain_sum"], difficulties=[1], n_problems=2, batch_size=2, budget=4, probe_every=2, progress=False)
    run_traces(lm, tmp_path, **kw)
    with pytest.raises(ValueError, match="other parameters.*probe_every"):
        run_traces(lm, tmp_path, **{**kw, "probe_every": 4})


def test_unknown_task(lm, tmp_path):
    with pytest.raises(ValueError, match="unknown task family 'sudoku'"):
        run_traces(lm, tmp_path, ["sudoku"], [1], 2, progress=False)


def test_missing_difficulties(lm, tmp_path):
    with pytest.raises(ValueError, match="difficulties for task 'chain_sum' are missing"):
        run_traces(lm, tmp_path, ["chain_sum"], {"spell_backward": [1]}, 2, progress=False)


def test_accuracy_vs_budget_bad_column():
    ts = synthetic_traces(5, 3, seed=0)
    with pytest.raises(ValueError, match="metadata column\\(s\\) \\['family'\\] unknown"):
        accuracy_vs_budget(ts, by=["family"])


def test_generate_run_renames_the_checkpoint(tmp_path):
    loaders = {"toy": lambda: toy_lm(0, bias={"#": 2.0}, think_end="##")}
    spec = dict(model="toy", tasks=["chain_sum"], difficulties=[1], n_problems=2, batch_size=1, budget=4, probe_every=2)
    log = generate_run("toy-forced", {**spec, "force_thinking": False}, tmp_path, loaders=loaders)
    assert log == {"model": "toy-forced", "shards": 2, "written_now": 2, "already_there": 0}
    assert set(TraceSet.read(tmp_path / "toy-forced").meta["model"]) == {"toy-forced"}
    with pytest.raises(ValueError, match="run 'x' names model 'nope'; known: \\['toy'\\]"):
        model_loader("x", "nope", loaders=loaders)


def test_loader_needs_a_name(tmp_path):
    with pytest.raises(ValueError, match="name is required when lm is a loader"):
        run_traces(lambda: None, tmp_path, ["chain_sum"], [1], 2, progress=False)


def test_loader_is_called_only_for_missing_shards(lm, tmp_path):
    kw = dict(tasks=["chain_sum"], difficulties=[1], n_problems=2, batch_size=1, budget=4, probe_every=2, progress=False)
    calls = []
    loader = lambda: calls.append(1) or lm
    res = run_traces(loader, tmp_path, name="toy", **kw)
    assert calls == [1] and res["loaded"] and len(res["written"]) == 2
    (tmp_path / "chain_sum-d1-001.parquet").unlink()
    res = run_traces(loader, tmp_path, name="toy", **kw)
    assert calls == [1, 1] and [p.name for p in res["written"]] == ["chain_sum-d1-001.parquet"]
    res = run_traces(loader, tmp_path, name="toy", **kw)
    assert calls == [1, 1] and not res["loaded"]


def test_force_thinking_reaches_the_budget(tmp_path):
    "Budget forcing: a toy that usually ends its thinking at once thinks to the budget; the run file records it."
    lm = toy_lm(0, bias={"</think>": 4.0, "</s>": 2.0})
    kw = dict(tasks=["chain_sum"], difficulties=[1], n_problems=4, batch_size=4, budget=24, probe_every=8,
              progress=False, hidden=False)
    free = run_traces(lm, tmp_path / "free", **kw)
    forced = run_traces(lm, tmp_path / "forced", force_thinking=True, **kw)
    a, b = TraceSet.read(tmp_path / "free"), TraceSet.read(tmp_path / "forced")
    assert (a.meta.stop_reason != "budget").sum() >= 2
    assert (b.meta.stop_reason == "budget").all() and (b.meta.reasoning_tokens == 24).all()
    assert json.loads((tmp_path / "forced" / "_run.json").read_text())["force_thinking"] is True
    assert "force_thinking" not in json.loads((tmp_path / "free" / "_run.json").read_text())
    with pytest.raises(ValueError, match="other parameters"):   # a forced run cannot resume into a free folder
        run_traces(lm, tmp_path / "free", force_thinking=True, **kw)
