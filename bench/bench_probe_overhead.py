"""Probe overhead: generating N reasoning tokens with checkpoint probes every 16 tokens vs plain
generation of the same N tokens, side by side in one run (interleaved repetitions), on TinyReasoner
and SmolLM2-135M. Writes outputs/bench/probe_overhead.json.

Both arms use `adalib.generate.generate_batch` with `ignore_eos=True`, so every row generates exactly
N tokens; the plain arm has `probes=False` (main generation only). transformers' own greedy
`model.generate` of the same N tokens is timed too, as a reference for the plain arm. The probed
arm also reports where its time goes (forward passes of the main generation, forward passes of
the probes, and the probes' Python bookkeeping: answer decoding checks, scoring, signals).

Usage: .venv/bin/python bench/bench_probe_overhead.py [--threads 1] [--reps 3] [--quick]
"""
import argparse, json, os, platform, statistics, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from adalib.generate import generate_batch            # noqa: E402
from adalib.models import load_smollm2, load_tiny_reasoner, new_tiny_reasoner  # noqa: E402
from adalib.tasks import get_family                   # noqa: E402


def hf_generate(lm, problems, n):
    tok = lm.tokenizer
    prompts = [tok(lm.prompt(p))["input_ids"] for p in problems]
    L = max(map(len, prompts))
    ids = torch.full((len(prompts), L), tok.pad_token_id); mask = torch.zeros_like(ids)
    for i, x in enumerate(prompts):
        ids[i, L - len(x):] = torch.tensor(x); mask[i, L - len(x):] = 1
    with torch.no_grad():
        lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=tok.pad_token_id, top_p=None, top_k=None, temperature=None)


def bench(lm, n_tokens, batch, every, reps, trained):
    problems = get_family("chain_sum").generate(batch, 2, seed=0)
    kw = dict(budget=n_tokens, probe_every=every, ignore_eos=True)
    generate_batch(lm, problems[:2], budget=4, probe_every=2)          # warm-up
    plain, probed, hf, tim = [], [], [], []
    for _ in range(reps):                                               # interleaved, side by side
        t = time.perf_counter(); generate_batch(lm, problems, probes=False, **kw); plain.append(time.perf_counter() - t)
        d = {}
        t = time.perf_counter(); b = generate_batch(lm, problems, timings=d, **kw); probed.append(time.perf_counter() - t)
        tim.append(d)
        t = time.perf_counter(); hf_generate(lm, problems, n_tokens); hf.append(time.perf_counter() - t)
    med = statistics.median
    n_ck = len(b.df)
    probe_forward = med([d["probe_forward_s"] for d in tim])
    probe_total = med([d["probe_total_s"] for d in tim])
    out = dict(model=lm.name, trained=trained, n_tokens=n_tokens, batch=batch, probe_every=every, reps=reps,
               plain_s=med(plain), probed_s=med(probed), ratio=med(probed) / med(plain),
               hf_generate_s=med(hf), plain_vs_hf_generate=med(plain) / med(hf),
               plain_runs_s=plain, probed_runs_s=probed, hf_generate_runs_s=hf,
               breakdown_probed=dict(main_forward_s=med([d["main_forward_s"] for d in tim]),
                                     probe_forward_s=probe_forward, probe_bookkeeping_s=probe_total - probe_forward,
                                     rest_s=med(probed) - med([d["main_forward_s"] for d in tim]) - probe_total,
                                     main_forwards=tim[0]["main_forwards"], probe_forwards=tim[0]["probe_forwards"],
                                     checkpoints_per_row=n_ck / batch,
                                     probe_forwards_per_checkpoint=tim[0]["probe_forwards"] / (n_ck / batch)))
    out.update(measured_at=time.strftime("%Y-%m-%d %H:%M:%S"), load_average=os.getloadavg(), torch_threads=torch.get_num_threads())
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("runs_s")}, indent=1), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small N and batch (a check that the script runs)")
    ap.add_argument("--models", nargs="+", default=["tiny-reasoner", "smollm2-135m"])
    ap.add_argument("--merge", action="store_true", help="keep the other models' results already in --out")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "probe_overhead.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = {}
    n_t, b_t, n_s, b_s = (32, 4, 16, 2) if a.quick else (128, 16, 64, 4)
    if "tiny-reasoner" in a.models:
        try:
            tiny, trained = load_tiny_reasoner(), True
        except FileNotFoundError:
            tiny, trained = new_tiny_reasoner("tiny-reasoner", seed=0), False   # same compute, random weights
        results["tiny-reasoner"] = bench(tiny, n_t, b_t, 16, a.reps, trained)
    if "smollm2-135m" in a.models:
        results["smollm2-135m"] = bench(load_smollm2(), n_s, b_s, 16, a.reps, True)
    rec = dict(bench="probe_overhead", goal_ratio_at_most=1.5, torch_threads=a.threads, torch=torch.__version__,
               python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(),
               load_average=os.getloadavg(), quick=a.quick, results=results,
               note=("ratio = median wall time with probes every 16 tokens / without, same N tokens, same batch; "
                     "each repetition runs plain, probed and transformers.generate back to back. The CPU is shared, "
                     "so absolute times vary; the ratio is measured side by side."))
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    if a.merge and out.exists():
        old = json.loads(out.read_text())
        rec["results"] = {**old.get("results", {}), **results}
    out.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
