"""Benchmark: calibrate a lower-threshold grid of 50,000 candidates (500 sigmoid shapes x 100 lower bounds) with LTT
on 1,000 traces x 128 checkpoints (issue 17: <= 1 s wall and >= 50x the Conformal Thinking reference algorithm).

Side by side in one run (outputs/bench/calibration.json):
- `Controller.calibrate` now (running counts + per-candidate histograms, `_select_lower_fast`), 2 threads and 1;
- the previous calibrate (the chunked stream over the (shapes, lows, traces) exits of `lower_exits_dense`), and
  the exits alone, new (`lower_exits`) and previous (`lower_exits_dense`);
- the CT reference algorithm (`lower_exits_per_trace`: a loop over traces, one (G, T) comparison each), timed on a
  seeded subset of traces and scaled to all; the per-candidate loop (`lower_exits_loop`), timed on a seeded subset
  of candidates and scaled to the grid; both checked equal to the fast exits on their subsets;
- where the time of the new calibrate goes: running counts (exits), histograms (losses and efficiency sums),
  p-values and certification, selection (exact efficiencies of the certified, argmin), the rest (smoothing, stats).
Wall times on a shared machine include waiting for a CPU (see loadavg); cpu_s is this process's CPU time.
Usage: .venv/bin/python bench/bench_calibration.py [--quick]
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import adalib.stopping as stopping  # noqa: E402
from adalib.exits import (_kmin_chunks, _q_table, lower_exit_sums, lower_exits, lower_exits_dense,  # noqa: E402
                          lower_exits_loop, lower_exits_per_trace, signal_values)
from adalib.risk import _certify  # noqa: E402
from adalib.stopping import Controller, LowerRule, trace_stats  # noqa: E402
from adalib.traces import synthetic_traces  # noqa: E402


def timed(f):
    "(result, wall s, cpu s) of f()."
    c0 = time.process_time(); t0 = time.perf_counter(); r = f()
    return r, time.perf_counter() - t0, time.process_time() - c0


def old_calibrate(ctrl, rule, P):
    "The previous calibrate: the chunked stream (`_select_lower_stream`) on the exits of `lower_exits_dense`."
    saved = stopping.lower_exits, stopping._select_lower_fast
    stopping.lower_exits, stopping._select_lower_fast = lower_exits_dense, stopping._select_lower_stream
    try: return ctrl.calibrate(rule, P)
    finally: stopping.lower_exits, stopping._select_lower_fast = saved


def breakdown(x, P, lows, shifts, slopes, u, ctrl):
    "CPU seconds of the new calibrate's parts (one thread), in the order `_select_lower_fast` runs them."
    L = np.asarray(P.lengths); S = trace_stats(P); n = len(L); cap = L - 1
    vals = S.wrong_upto / L[:, None]
    qu, inv = _q_table(P.tokens, shifts, slopes)
    _, _, t_counts = timed(lambda: [None for _ in _kmin_chunks(x, L, lows, qu, inv, u, range(len(shifts)))])
    (hits, sums), _, t_sums = timed(lambda: lower_exit_sums(x, P.tokens, L, lows, shifts, slopes, u, cap, S.solvable, vals))
    rh = hits.ravel() / n
    paths = [np.arange(p * len(lows), (p + 1) * len(lows)) for p in range(len(shifts))]
    (cert, _, _), _, t_cert = timed(lambda: _certify(rh, n, ctrl.alpha_lower, ctrl.delta, ctrl.method, ctrl.pvalue, 1.0, paths, len(shifts)))
    def sel():
        eff = sums.ravel() / n
        for p in np.unique(np.flatnonzero(cert) // len(lows)):
            js = np.flatnonzero(cert[p * len(lows):(p + 1) * len(lows)])
            step = np.minimum(lower_exits(x, P.tokens, L, lows[js], shifts[[p]], slopes[[p]], u)[0], cap)
            eff[p * len(lows) + js] = vals[np.arange(n), step].mean(1)
        return int(np.argmin(np.where(cert, eff, np.inf)))
    _, _, t_sel = timed(sel)
    return {"running_counts_exits_s": round(t_counts, 3), "histograms_losses_and_efficiency_s": round(t_sums - t_counts, 3),
            "pvalues_and_certification_s": round(t_cert, 3), "selection_s": round(t_sel, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small grid (CI smoke check), not the reported benchmark")
    ap.add_argument("--out", default=str(ROOT / "outputs" / "bench" / "calibration.json"))
    a = ap.parse_args(argv)
    n, T = (200, 32) if a.quick else (1000, 128)
    n_shift, n_slope, n_low = (5, 4, 10) if a.quick else (20, 25, 100)
    ts = synthetic_traces(n, T, seed=0, solvable_frac=0.5, ragged=False)
    P = ts.arrays()
    x = signal_values(P, "answer_prob", "ema", 0.5)
    wmax = float(P.tokens.max())
    sh, sl = np.meshgrid(np.linspace(0.05, 0.95, n_shift) * wmax, np.geomspace(1.0, 64.0, n_slope) / wmax, indexing="ij")
    shifts, slopes = sh.ravel(), sl.ravel()
    u = float(np.quantile(x[P.mask], 0.9))
    lows = np.linspace(float(x.min()) - 0.05, u, n_low)
    G = len(shifts) * len(lows)
    rule = LowerRule("answer_prob", "ema", 0.5, lows=lows, shifts=shifts, slopes=slopes, u=u)
    ctrl = Controller("ltt", alpha=0.1, delta=0.1, lower_loss="stop", n_jobs=2)   # the goal is stated for 2 cores
    load0 = os.getloadavg()
    import adalib.risk  # noqa: F401  (scipy.stats imported before timing)

    fitted, t_cal, c_cal = timed(lambda: ctrl.calibrate(rule, P))
    fitted1, t_cal1, c_cal1 = timed(lambda: ctrl.with_(n_jobs=1).calibrate(rule, P))
    old, t_old, c_old = timed(lambda: old_calibrate(ctrl, rule, P))
    ex, t_vec, c_vec = timed(lambda: lower_exits(x, P.tokens, P.lengths, lows, shifts, slopes, u))
    ex_old, t_dense, c_dense = timed(lambda: lower_exits_dense(x, P.tokens, P.lengths, lows, shifts, slopes, u))
    parts = breakdown(x, P, lows, shifts, slopes, u, ctrl)
    parts["rest_smoothing_stats_upper_s"] = round(max(0.0, c_cal1 - sum(parts.values())), 3)

    rng = np.random.default_rng(0)
    k_tr = 20 if a.quick else 50
    trs = rng.choice(n, k_tr, replace=False)
    ref2, t_ct_sub, c_ct_sub = timed(lambda: lower_exits_per_trace(x, P.tokens, P.lengths, lows, shifts, slopes, u, trs))
    equal_ct = bool((ref2 == ex[:, :, trs]).all())
    t_ct, c_ct = t_ct_sub * n / k_tr, c_ct_sub * n / k_tr
    k_cand = 20 if a.quick else 100
    pp, jj = np.divmod(rng.choice(G, k_cand, replace=False), len(lows))
    ref, t_loop_sub, c_loop_sub = timed(lambda: np.stack([lower_exits_loop(x, P.tokens, P.lengths, [lows[j]], [shifts[p]], [slopes[p]], u)[0, 0]
                                                          for p, j in zip(pp, jj)]))
    equal_loop = bool((ref == ex[pp, jj]).all())
    t_loop, c_loop = t_loop_sub * G / k_cand, c_loop_sub * G / k_cand
    same_fit = fitted.lower_params == old.lower_params == fitted1.lower_params and fitted.message == old.message
    ratio_ct, ratio_ct_cpu = t_ct / t_cal, c_ct / c_cal
    met = {"calibrate_at_most_1s_wall": t_cal <= 1.0, "at_least_50x_ct_reference_wall": ratio_ct >= 50,
           "at_least_50x_ct_reference_cpu": ratio_ct_cpu >= 50}
    dominant = max(parts, key=parts.get)
    res = {
        "task": "calibrate a lower-threshold grid (sigmoid shapes x lower bounds) with LTT, two-step setting with u fixed",
        "quick": a.quick, "n_traces": n, "checkpoints": T, "n_candidates": G, "grid": {"shapes": len(shifts), "lows": len(lows)},
        "goal": {"calibrate_wall_s_at_most": 1.0, "speedup_vs_ct_reference_at_least": 50, "met": met, "all_met": all(met.values())},
        "calibrate": {"wall_s": round(t_cal, 3), "cpu_s": round(c_cal, 3), "threads": 2,
                      "one_thread_wall_s": round(t_cal1, 3), "one_thread_cpu_s": round(c_cal1, 3)},
        "previous_calibrate": {"what": "chunked stream over the exits of lower_exits_dense (the committed path before issue 17)",
                               "wall_s": round(t_old, 3), "cpu_s": round(c_old, 3), "threads": 2},
        "exits_only": {"lower_exits_wall_s": round(t_vec, 3), "lower_exits_cpu_s": round(c_vec, 3),
                       "lower_exits_dense_wall_s": round(t_dense, 3), "lower_exits_dense_cpu_s": round(c_dense, 3),
                       "identical": bool((ex == ex_old).all())},
        "ct_reference": {"what": "lower_exits_per_trace: loop over traces, all candidates of a trace as one (G, T) comparison",
                         "traces_timed": k_tr, "timed_wall_s": round(t_ct_sub, 3), "scaled_to_all_traces_s": round(t_ct, 1),
                         "scaled_to_all_traces_cpu_s": round(c_ct, 1), "exits_equal_fast": equal_ct},
        "loop_reference": {"what": "lower_exits_loop, one candidate and one trace at a time", "candidates_timed": k_cand,
                           "timed_wall_s": round(t_loop_sub, 3), "scaled_to_full_grid_s": round(t_loop, 1),
                           "scaled_to_full_grid_cpu_s": round(c_loop, 1), "exits_equal_fast": equal_loop},
        "ratios": {"calibrate_vs_ct_reference": round(ratio_ct, 1), "calibrate_vs_ct_reference_cpu": round(ratio_ct_cpu, 1),
                   "calibrate_vs_loop": round(t_loop / t_cal, 1), "calibrate_vs_previous_calibrate": round(t_old / t_cal, 2),
                   "calibrate_vs_previous_calibrate_cpu": round(c_old / c_cal, 2),
                   "exits_vs_dense_exits": round(t_dense / t_vec, 2)},
        "breakdown_one_thread_cpu_s": parts,
        "dominant_part": dominant,
        "same_fit_as_previous_calibrate": same_fit,
        "fitted": {"feasible": fitted.feasible, "lower": fitted.lower_params, "message": fitted.message},
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_start": [round(v, 2) for v in load0],
                    "loadavg_at_end": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
                    "numpy": np.__version__, "platform": platform.platform()},
    }
    if not all(met.values()):
        res["shortfall"] = {"dominant_part": dominant, "tried": TRIED}
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    if not (equal_loop and equal_ct and res["exits_only"]["identical"] and same_fit):
        print("ERROR: fast exits or fit differ from the references", file=sys.stderr); return 1
    return 0


TRIED = ("sigmoid evaluated once per distinct token count and gathered (was: expit on every (shape, trace, step)); "
         "first guess from a bucket table with end buckets, exact check of l_k and l_(k-1) from sentinel-padded tables "
         "(np.take with mode='clip': no buffering, 14x faster than the default); step-major layout so the running minimum "
         "runs over rows; (shape, trace) pairs of 8 shapes as columns, in blocks of 16 steps, pairs whose running count "
         "reached 0 dropped from later blocks (70% of the elements here); losses and efficiencies as per-candidate "
         "histograms of the running counts (no (shapes, lows, traces) exits); chunks of 1-8 shapes without dropping, "
         "and trace blocks, were slower. What remains is ~25 numpy passes over the ~30% live (shape, trace, step) "
         "elements plus Python overhead per block; the histograms still count every (shape, trace, step), the ~70% "
         "zeros included (counting only live pairs, inside the step blocks, is the next step). On this shared 2-core "
         "machine wall time is mostly waiting for a CPU (compare cpu_s with wall_s and loadavg), and the CPU ratio to "
         "the CT reference is the fairer one")

if __name__ == "__main__":
    sys.exit(main())
