"Tests for adalib.models and adalib.training: loading (safetensors/GGUF only, clear errors), TinyReasoner, forced-answer eval."
import json, os, subprocess, sys, textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adalib.models import (LM, char_tokenizer, forced_answer_eval, load_model, load_tiny_reasoner, new_tiny_reasoner, save_lm,
                           smollm2_path)
from adalib.training import encode_example, encode_examples, train_tiny_reasoner
from adalib.tasks import get_family, make_grid

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY_DIMS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("m") / "tiny"
    save_lm(new_tiny_reasoner(TINY_DIMS, seed=0), d, note="test")
    return d


def test_tokenizer_chars_and_markers():
    tok = char_tokenizer()
    ids = tok("Q: 1+2\n<think>1+2=3</think> A: 3\n")["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "<s>" and toks.count("<think>") == 1 and toks.count("</think>") == 1
    assert len(ids) == 1 + len("Q: 1+2\n") + 1 + len("1+2=3") + 1 + len(" A: 3\n")
    assert tok.pad_token_id != tok.eos_token_id


def test_encode_example_masks_prompt():
    tok = char_tokenizer()
    p = get_family("chain_sum").generate(1, 2, seed=0)[0]
    ids, n_prompt = encode_example(tok, p)
    assert tok.decode(ids[:n_prompt]) == f"<s>Q: {p.question}\n<think>"
    assert tok.decode(ids[n_prompt:]) == f"{p.cot}</think> A: {p.gold}\n</s>"
    probs = [q for f in ("chain_sum", "spell_backward", "letter_counting") for q in get_family(f).generate(5, 3, seed=1)]
    assert encode_examples(tok, probs) == [encode_example(tok, q) for q in probs] and encode_examples(tok, []) == []


def test_save_load_roundtrip(small_dir):
    files = sorted(p.name for p in small_dir.iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files and "adalib_lm.json" in files
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    lm = load_model(small_dir)
    ref = new_tiny_reasoner(TINY_DIMS, seed=0)
    assert isinstance(lm, LM) and lm.kind == "tiny" and lm.think_end == "</think>" and lm.answer_prefix == " A: "
    x = torch.tensor([lm.encode("Q: 3+4\n<think>")])
    with torch.no_grad():
        assert torch.equal(lm.model(x).logits, ref.model(x).logits)
    assert load_tiny_reasoner(small_dir).n_params == ref.n_params
    p = get_family("spell_backward").generate(1, 1)[0]
    assert lm.prompt(p) == f"Q: {p.question}\n<think>"


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_model(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./definitely/not/here")


def test_corrupt_safetensors_names_the_file(small_dir, tmp_path):
    import shutil
    bad = tmp_path / "bad"; shutil.copytree(small_dir, bad)
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated
    with pytest.raises(ValueError, match=f"corrupt.*{w}"):
        load_model(bad)
    w.write_bytes(b"not a safetensors file at all")  # garbage
    with pytest.raises(ValueError, match=f"corrupt.*{w}"):
        load_model(bad)


def test_pickle_only_folder_is_refused(tmp_path):
    d = tmp_path / "pickled"; d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match="only safetensors or GGUF"):
        load_model(d)
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_model(d)


def test_corrupt_gguf_names_the_file(tmp_path):
    g = tmp_path / "broken.gguf"
    g.write_bytes(b"GGUF" + b"\x00" * 60)
    with pytest.raises(ValueError, match=f"GGUF weights file {g}"):
        load_model(g)
    with pytest.raises(ValueError, match=f"GGUF weights file {g}"):
        load_model(tmp_path)  # a folder with one .gguf file loads that file


def test_empty_folder_and_bad_types(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights in"):
        load_model(tmp_path)
    with pytest.raises(TypeError, match="name_or_path"):
        load_model(3)
    f = tmp_path / "weights.pt"; f.write_bytes(b"x")
    with pytest.raises(ValueError, match="only safetensors"):
        load_model(f)


def test_safetensors_with_wrong_tensors_names_file(small_dir, tmp_path):
    import shutil
    d = tmp_path / "wrong"; shutil.copytree(small_dir, d)
    save_file({"something": torch.zeros(3)}, str(d / "model.safetensors"))  # a valid file with the wrong tensors
    with pytest.raises(ValueError, match=f"{d / 'model.safetensors'} lack"):
        load_model(d)


def test_training_reduces_loss_and_is_seeded():
    probs = make_grid(["chain_sum"], [1], n=40, seed=3)
    lm1, h1 = train_tiny_reasoner(TINY_DIMS, probs, 40, seed=1, batch_size=16, lr=1e-2, progress=False)
    _, h2 = train_tiny_reasoner(TINY_DIMS, probs, 40, seed=1, batch_size=16, lr=1e-2, progress=False)
    assert list(h1.columns) == ["step", "loss", "lr", "tokens"] and len(h1) == 40
    assert h1["loss"].equals(h2["loss"])
    assert h1["loss"].tail(5).mean() < 0.7 * h1["loss"].head(5).mean()
    with pytest.raises(ValueError, match="problems is empty"):
        train_tiny_reasoner(TINY_DIMS, [], 5)
    with pytest.raises(ValueError, match="steps"):
        train_tiny_reasoner(TINY_DIMS, probs, 0)


def test_forced_answer_eval_shapes_and_budgets(small_dir):
    lm = load_model(small_dir)
    probs = make_grid(n=2, difficulties=[1, 4], seed=0)
    df = forced_answer_eval(lm, probs, [0, 3, 10], batch_size=4, max_answer_tokens=5, progress=False)
    assert len(df) == 3 * len(probs)
    assert set(df["budget"]) == {0, 3, 10} and (df["tokens"] <= df["budget"]).all()
    assert (df.loc[df.budget == 0, "tokens"] == 0).all()
    # greedy decoding: the tokens used never shrink as the budget grows
    assert (df.sort_values(["problem_id", "budget"]).groupby("problem_id")["tokens"].diff().fillna(0) >= 0).all()
    assert df["correct"].dtype == bool
    d = forced_answer_eval(lm, probs, [5], style="direct", batch_size=4, max_answer_tokens=3, progress=False)
    assert set(d["budget"]) == {0} and len(d) == len(probs)
    with pytest.raises(ValueError, match="style"):
        forced_answer_eval(lm, probs, [1], style="x")


def test_forced_answer_matches_manual_decoding(small_dir):
    "The batched, left-padded evaluator gives the same answers as a one-at-a-time greedy loop."
    lm = load_model(small_dir)
    probs = make_grid(n=2, difficulties=[1, 5], seed=4)
    df = forced_answer_eval(lm, probs, [6], batch_size=8, max_answer_tokens=4, progress=False)
    tok = lm.tokenizer
    stop = {tok.convert_tokens_to_ids("</think>"), tok.eos_token_id}
    for p, ans in zip(probs, df["answer"]):
        ids = lm.encode(lm.prompt(p))
        with torch.no_grad():
            for _ in range(6):
                t = int(lm.model(torch.tensor([ids])).logits[0, -1].argmax())
                if t in stop: break
                ids.append(t)
            ids += lm.encode("</think> A: ", special=False)
            out = []
            for _ in range(4):
                t = int(lm.model(torch.tensor([ids])).logits[0, -1].argmax())
                if t in (tok.eos_token_id, tok.convert_tokens_to_ids("\n")): break
                out.append(t); ids.append(t)
        from adalib.tasks import extract_answer
        assert extract_answer(tok.decode(out)) == ans


def test_trained_checkpoints_show_test_time_scaling():
    """The committed TinyReasoner (data/models/tiny-reasoner): reasoning helps on the trained levels, the
    untrained (longer) levels stay mostly unsolved, and the small size shares the tokenizer.
    (s01's full profile targets >= 90% on trained levels; the committed checkpoint falls short, see
    outputs/s01_reasoner/tables/must_show.md, so this checks the weaker properties the studies rely on.)"""
    path = ROOT / "data" / "models" / "tiny-reasoner"
    assert (path / "model.safetensors").exists(), f"missing {path}: run `adalib studies run --profile full --only s01`"
    lm = load_tiny_reasoner(path)
    small = load_tiny_reasoner(ROOT / "data" / "models" / "tiny-reasoner-small")
    assert small.tokenizer.get_vocab() == lm.tokenizer.get_vocab() and small.n_params < 0.35 * lm.n_params
    assert json.loads((path / "adalib_lm.json").read_text())["kind"] == "tiny"
    probs = make_grid(n=8, seed=987654)  # a seed used nowhere else
    df = forced_answer_eval(lm, probs, [0, 192], progress=False)
    trained = df[df.difficulty <= 3].groupby("budget")["correct"].mean()
    untrained = df[df.difficulty >= 4].groupby("budget")["correct"].mean()
    assert trained[0] < 0.2 and trained[192] >= 0.5 and trained[192] > trained[0] + 0.4, trained
    assert untrained[192] < trained[192] - 0.2, (trained, untrained)


def test_smollm2_loads_offline_without_network(tmp_path):
    """SmolLM2 loads from the wheel's GGUF with HF_HUB_OFFLINE=1 and every proxy pointing nowhere; the
    first load fills an empty model cache, the second reads it and gives the same tokens and logits."""
    code = textwrap.dedent("""
        import os, torch; torch.set_num_threads(1)
        from adalib.models import load_smollm2, cache_dir, smollm2_path
        from adalib.tasks import make_grid
        assert not (cache_dir() / "models").exists()
        lm = load_smollm2()
        entries = [p.name for p in (cache_dir() / "models").iterdir()]
        assert len(entries) == 1 and entries[0].startswith("smollm2-135m-"), entries
        again = load_smollm2()
        assert again.source == lm.source == str(smollm2_path()) and again.kind == lm.kind == "chat"
        prompt = lm.prompt(make_grid(["chain_sum"], [1], n=1)[0], "cot")
        assert again.prompt(make_grid(["chain_sum"], [1], n=1)[0], "cot") == prompt
        assert again.encode(prompt) == lm.encode(prompt)
        ids = torch.tensor([lm.encode("The capital of France is", special=False)])
        with torch.no_grad(): a, b = lm.model(ids).logits, again.model(ids).logits
        assert torch.equal(a, b), (a - b).abs().max()
        # one row, one token: torch's CPU matrix-vector kernel, whose rounding depends on the weights'
        # memory alignment (GGUF-dequantised vs memory-mapped safetensors); cold and warm must agree here too
        with torch.no_grad(): a1, b1 = lm.model(ids[:, -1:]).logits, again.model(ids[:, -1:]).logits
        assert torch.equal(a1, b1), ("single-row forward differs between the cold and the warm load", (a1 - b1).abs().max())
        t = int(a[0, -1].argmax())
        print("OK", lm.name, lm.kind, repr(lm.tokenizer.decode([t])), lm.n_params)
    """)
    dead = "http://127.0.0.1:9"
    env = {**os.environ, "ADALIB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HTTPS_PROXY": dead, "HTTP_PROXY": dead,
           "https_proxy": dead, "http_proxy": dead, "ALL_PROXY": dead, "all_proxy": dead, "NO_PROXY": "", "no_proxy": ""}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [l for l in r.stdout.splitlines() if l.startswith("OK")][0]
    assert "smollm2-135m chat" in line and int(line.split()[-1]) > 100_000_000
    assert smollm2_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
