"""Benchmark: calibrate a lower-threshold grid of >= 50,000 candidates on 1,000 traces x 128 checkpoints.

Reports, side by side in one run (outputs/bench/calibration.json):
- the wall time of `Controller.calibrate` on the whole grid (exits, losses, p-values, selection);
- the wall time of the vectorised exit computation alone (`lower_exits`);
- the straightforward per-trace reference loop (`lower_exits_loop`: one candidate and one trace at a
  time), timed on a seeded random subset of candidates and scaled linearly to the full grid, after
  checking that its exits equal the vectorised ones on that subset;
- a second baseline, a per-trace loop vectorised over the whole grid (one (G, T) comparison per
  trace), timed on a subset of traces and scaled linearly.
Usage: .venv/bin/python bench/bench_calibration.py [--quick]
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from pathlib import Path
import numpy as np
from scipy.special import expit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from adalib.exits import lower_exits, lower_exits_loop, signal_values  # noqa: E402
from adalib.stopping import Controller, LowerRule  # noqa: E402
from adalib.traces import synthetic_traces  # noqa: E402


def per_trace_grid_loop(x, tok, lengths, lows, shifts, slopes, u, traces):
    "Baseline 2: loop over traces; for each, all candidates at once as a (G, T) boolean argmax."
    la = np.asarray(lows)[None, :, None]
    c = np.asarray(slopes)[:, None, None]; sh = np.asarray(shifts)[:, None, None]
    out = np.empty((len(shifts), len(lows), len(traces)), dtype=np.int64)
    for k, i in enumerate(traces):
        L = lengths[i]
        g = u - (u - la) * expit(-c * (tok[i, :L][None, None, :] - sh))    # (P, L, T), the same form as lower_exits_loop
        hit = x[i, :L][None, None, :] <= g
        out[:, :, k] = np.where(hit.any(-1), hit.argmax(-1), L)
    return out


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

    import adalib.risk  # noqa: F401  (import scipy.stats before timing)
    c0 = time.process_time(); t0 = time.perf_counter(); fitted = ctrl.calibrate(rule, P); t_cal = time.perf_counter() - t0; c_cal = time.process_time() - c0
    c0 = time.process_time(); t0 = time.perf_counter(); fitted1 = ctrl.with_(n_jobs=1).calibrate(rule, P)
    t_cal1 = time.perf_counter() - t0; c_cal1 = time.process_time() - c0
    same_threads = fitted1.lower_params == fitted.lower_params
    c0 = time.process_time(); t0 = time.perf_counter(); ex = lower_exits(x, P.tokens, P.lengths, lows, shifts, slopes, u)
    t_vec = time.perf_counter() - t0; c_vec = time.process_time() - c0

    rng = np.random.default_rng(0)
    k_cand = 20 if a.quick else 100
    pick = rng.choice(G, k_cand, replace=False)
    pp, jj = np.divmod(pick, len(lows))
    c0 = time.process_time(); t0 = time.perf_counter()
    ref = np.stack([lower_exits_loop(x, P.tokens, P.lengths, [lows[j]], [shifts[p]], [slopes[p]], u)[0, 0] for p, j in zip(pp, jj)])
    t_loop_sub = time.perf_counter() - t0; c_loop_sub = time.process_time() - c0
    equal_loop = bool((ref == ex[pp, jj]).all())
    t_loop = t_loop_sub * G / k_cand

    k_tr = 20 if a.quick else 50
    trs = rng.choice(n, k_tr, replace=False)
    c0 = time.process_time(); t0 = time.perf_counter(); ref2 = per_trace_grid_loop(x, P.tokens, P.lengths, lows, shifts, slopes, u, trs)
    t_grid_sub = time.perf_counter() - t0; c_grid_sub = time.process_time() - c0
    equal_grid = bool((ref2 == ex[:, :, trs]).all())
    t_grid = t_grid_sub * n / k_tr

    res = {
        "task": "calibrate a lower-threshold grid (sigmoid shapes x lower bounds) with LTT, two-step setting with u fixed",
        "quick": a.quick, "n_traces": n, "checkpoints": T, "n_candidates": G,
        "grid": {"shapes": len(shifts), "lows": len(lows)},
        "calibrate_wall_s": round(t_cal, 3),
        "calibrate_cpu_s": round(c_cal, 3),
        "calibrate_threads": 2,
        "calibrate_1thread_wall_s": round(t_cal1, 3), "calibrate_1thread_cpu_s": round(c_cal1, 3),
        "threads_give_same_result": same_threads,
        "vectorised_exits_wall_s": round(t_vec, 3),
        "vectorised_exits_cpu_s": round(c_vec, 3),
        "note": "the machine is shared: wall times include waiting for the CPU (see loadavg); cpu_s is this process's CPU time",
        "loop_reference": {"what": "lower_exits_loop, one candidate and one trace at a time",
                           "candidates_timed": k_cand, "timed_wall_s": round(t_loop_sub, 3),
                           "scaled_to_full_grid_s": round(t_loop, 1), "timed_cpu_s": round(c_loop_sub, 3),
                           "scaled_to_full_grid_cpu_s": round(c_loop_sub * G / k_cand, 1), "exits_equal_vectorised": equal_loop},
        "loop_per_trace_over_grid": {"what": "loop over traces, all candidates of a trace as one (G, T) comparison",
                                     "traces_timed": k_tr, "timed_wall_s": round(t_grid_sub, 3),
                                     "scaled_to_all_traces_s": round(t_grid, 1), "timed_cpu_s": round(c_grid_sub, 3),
                                     "scaled_to_all_traces_cpu_s": round(c_grid_sub * n / k_tr, 1), "exits_equal_vectorised": equal_grid},
        "speedup_calibrate_vs_loop_exits": round(t_loop / t_cal, 1),
        "speedup_exits_vs_loop_exits": round(t_loop / t_vec, 1),
        "speedup_calibrate_vs_per_trace_grid_loop": round(t_grid / t_cal, 1),
        "speedup_calibrate_vs_loop_exits_cpu": round(c_loop_sub * G / k_cand / c_cal, 1),
        "goal": {"calibrate_under_10s_wall": t_cal < 10, "calibrate_under_10s_cpu": c_cal < 10, "at_least_20x_vs_loop": t_loop / t_cal >= 20},
        "fitted": {"feasible": fitted.feasible, "lower": fitted.lower_params, "message": fitted.message},
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_start": [round(v, 2) for v in load0],
                    "loadavg_at_end": [round(v, 2) for v in os.getloadavg()], "python": platform.python_version(),
                    "numpy": np.__version__, "platform": platform.platform()},
    }
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    if not (equal_loop and equal_grid):
        print("ERROR: vectorised exits differ from the reference loops", file=sys.stderr); return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
