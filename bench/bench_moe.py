"""Wall-clock of nested-expert routing on CPU: SmolLM2-135M converted to nested experts (our DynaMoE
reconstruction, adalib.moe), at ~50% of the dense FFN FLOPs, vs the dense forward pass.

Measured side by side in one process, alternating the variants in every repeat so they share the
machine's load; medians are reported. Writes outputs/bench/moe.json.

    .venv/bin/python bench/bench_moe.py [--threads 1] [--repeats 7] [--quick]
"""
import argparse, json, os, platform, sys, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch

from adalib import moe
from adalib.models import load_smollm2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--fraction", type=float, default=0.5, help="target FFN FLOP fraction of the routed model")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "outputs" / "bench" / "moe.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads); torch.manual_seed(0)
    win, n_cal, n_eval = (32, 2, 1) if a.quick else (128, 8, 4)
    widths = [192, 384, 768, 1152, 1536]

    t0 = time.perf_counter()
    lm = load_smollm2(); model, tok = lm.model, lm.tokenizer
    load_s = time.perf_counter() - t0

    def windows(pkgs, n):
        ids = tok(moe.package_docs(pkgs), add_special_tokens=False)["input_ids"][: n * win]
        return torch.tensor(ids).view(n, win)
    cal = windows(["torch", "transformers", "pandas", "tqdm"], n_cal)
    held = windows(["requests", "huggingface-hub", "tokenizers"], n_eval)

    X, R = moe.collect_ffn_inputs(model, [cal], with_residual=True)
    moe.nested_from_dense(model, X, widths)
    routers = moe.fit_routers(model, X, R)
    ths = moe.calibrate_layer_thetas(model, routers, X, a.fraction)
    d_ff = model.config.intermediate_size
    router_pol = [("router", r, t) for r, t in zip(routers, ths)]

    # realized FLOP fraction of the routed pass on the benchmark input
    moe.set_policy(model, router_pol, mode="sliced")
    with torch.no_grad(), moe.tracking(model): model(input_ids=held)
    frac = moe.flop_fraction(model)
    shares = moe.expert_shares(model).mean(0).tolist()
    static_w = int(round(a.fraction * d_ff))

    variants = {"dense": (None, "masked"), "router_sliced": (router_pol, "sliced"),
                "static_half_sliced": (("static", static_w), "sliced"), "router_masked": (router_pol, "masked")}

    def fwd():
        with torch.no_grad(): model(input_ids=held)

    # whole-model forward, alternating variants
    times = {k: [] for k in variants}
    for k, (pol, mode) in variants.items():   # warm-up
        moe.set_policy(model, pol, mode); fwd()
    for _ in range(a.repeats):
        for k, (pol, mode) in variants.items():
            moe.set_policy(model, pol, mode)
            t = time.perf_counter(); fwd(); times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}

    # FFN-only, one middle layer, on that layer's dense inputs for the benchmark tokens
    moe.set_policy(model, None)
    Xh = moe.collect_ffn_inputs(model, [held])
    li = len(Xh) // 2; ffn = moe.nested_layers(model)[li]; x = Xh[li][None]
    ffn_times = {"dense": [], "router_sliced": [], "static_half_sliced": []}
    pols = {"dense": None, "router_sliced": ("router", routers[li], ths[li]), "static_half_sliced": ("static", static_w)}
    for _ in range(3 * a.repeats):
        for k, p in pols.items():
            ffn.policy, ffn.mode = p, "sliced"
            t = time.perf_counter()
            with torch.no_grad(): ffn(x)
            ffn_times[k].append(time.perf_counter() - t)
    ffn_med = {k: float(np.median(v)) for k, v in ffn_times.items()}

    # where the routed time goes: per-part timers summed over layers, for one routed forward
    moe.set_policy(model, router_pol, "sliced")
    split_runs = []
    for _ in range(a.repeats):
        tms = [dict() for _ in moe.nested_layers(model)]
        for f, tm in zip(moe.nested_layers(model), tms): f.timer = tm
        t = time.perf_counter(); fwd(); total = time.perf_counter() - t
        parts = {p: sum(tm.get(p, 0.0) for tm in tms) for p in ("routing", "gather_scatter", "matmul")}
        parts["rest_of_model"] = total - sum(parts.values()); parts["total"] = total
        split_runs.append(parts)
    for f in moe.nested_layers(model): f.timer = None
    split = {p: float(np.median([r[p] for r in split_runs])) for p in split_runs[0]}
    moe.set_policy(model, None, "sliced")
    tms = [dict() for _ in moe.nested_layers(model)]
    for f, tm in zip(moe.nested_layers(model), tms): f.timer = tm
    t = time.perf_counter(); fwd(); dense_total = time.perf_counter() - t
    for f in moe.nested_layers(model): f.timer = None
    dense_split = {"ffn_matmul": sum(tm.get("matmul", 0.0) for tm in tms), "total": dense_total}
    dense_split["rest_of_model"] = dense_total - dense_split["ffn_matmul"]

    res = {
        "what": "SmolLM2-135M dense vs nested experts (our DynaMoE reconstruction) routed by adalib.moe difficulty routers "
                "with per-layer thresholds calibrated (on other text) to the target FFN FLOP fraction; sliced = tokens sorted by "
                "width, each neuron block applied to the prefix of tokens that need it (only the needed FLOPs); masked = "
                "full-width compute with zeroed neurons (no saving, for reference); static_half = every token at width "
                "target_fraction*d_ff. Forward times alternate the variants in each repeat (medians); the time split is "
                "from separate timed passes with per-part timers.",
        "device": "cpu", "threads": a.threads, "tokens_per_forward": int(held.numel()), "batch": list(held.shape),
        "repeats": a.repeats, "quick": a.quick, "target_fraction": a.fraction,
        "routed_ffn_flop_fraction": frac, "static_width": static_w, "expert_widths": widths, "mean_expert_shares": shares,
        "forward_median_s": med,
        "speedup_dense_over_router_sliced": med["dense"] / med["router_sliced"],
        "speedup_dense_over_static_half_sliced": med["dense"] / med["static_half_sliced"],
        "speedup_dense_over_router_masked": med["dense"] / med["router_masked"],
        "paired_speedup_median_dense_over_router_sliced": float(np.median(np.array(times["dense"]) / np.array(times["router_sliced"]))),
        "paired_speedup_median_dense_over_static_half_sliced": float(np.median(np.array(times["dense"]) / np.array(times["static_half_sliced"]))),
        "forward_times_s": times,
        "ffn_layer": li, "ffn_only_median_s": ffn_med,
        "ffn_only_speedup_dense_over_router_sliced": ffn_med["dense"] / ffn_med["router_sliced"],
        "ffn_only_speedup_dense_over_static_half_sliced": ffn_med["dense"] / ffn_med["static_half_sliced"],
        "routed_time_split_s": split, "dense_time_split_s": dense_split,
        "model_load_s": load_s, "python": platform.python_version(), "torch": torch.__version__,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("routed_ffn_flop_fraction", "forward_median_s", "speedup_dense_over_router_sliced",
                                          "paired_speedup_median_dense_over_router_sliced", "paired_speedup_median_dense_over_static_half_sliced",
                                          "speedup_dense_over_static_half_sliced", "ffn_only_speedup_dense_over_router_sliced",
                                          "routed_time_split_s", "dense_time_split_s")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
