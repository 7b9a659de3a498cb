"""Benchmark: replay every sampling rule over a study-size pool (600 problems x 32 samples) and 100 orderings.

Reports, side by side in one run (outputs/bench/sampling.json):
- the wall and CPU time of `tally` (the one pass over the sample index, vectorised over orderings and
  problems) and of each rule's replay on it, and their total;
- a naive reference: a plain Python loop over (ordering, problem) and samples for each rule (OptScale's
  fit by scipy.optimize on scipy.stats.truncnorm.logpdf), timed on a seeded subset of problems x orderings
  and scaled linearly to the full replay, after checking that it returns the same stopping points and
  answers (OptScale: the agreement rate, since two optimisers may round N* differently at a boundary);
- the risk-controlled sampler: calibration on the pool, and the split evaluation (200 splits, 3 alphas).
Usage: .venv/bin/python bench/bench_sampling.py [--quick]
"""
from __future__ import annotations
import argparse, json, os, platform, sys, time
from collections import Counter
from pathlib import Path
import numpy as np
from scipy import optimize, stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from adalib.sampling import (ASC, ESC, BestOfN, OptScale, RiskSampler, SCFixed, VoteShare, asc_stop_probability,  # noqa: E402
                             evaluate_risk_sampler, orderings, pool_arrays, summarise, synthetic_pool, tally)


def naive_rule(rule, seq, conf, ok, m):
    "One (ordering, problem): (samples used, answer code) of `rule`, by a plain loop over the samples."
    cnt, w, first, total, crew, best = Counter(), Counter(), {}, 0.0, -1, -1.0
    cap = rule.max_samples or m
    if isinstance(rule, OptScale): return naive_optscale(rule, seq, conf, m)
    for t in range(m):
        a, f = seq[t], conf[t]
        total += f
        if a >= 0:
            cnt[a] += 1; w[a] += f; first.setdefault(a, t)
            if f > best: crew, best = a, f
        lead = min(cnt, key=lambda x: (-cnt[x], first[x])) if cnt else -1
        n = t + 1
        if isinstance(rule, (SCFixed, BestOfN)):
            if n < rule.N: continue
            sel = getattr(rule, "select", "majority")
            good = [seq[i] for i in range(n) if ok[i]]
            return n, {"majority": lead, "crew": crew, "random": seq[0], "oracle": min(good) if good else lead}[sel]
        if isinstance(rule, ESC):
            win = seq[n - rule.window:n] if n % rule.window == 0 else None
            if win is not None and win[0] >= 0 and all(x == win[0] for x in win): return n, win[0]
        elif isinstance(rule, ASC):
            top = sorted(cnt.values(), reverse=True) + [0, 0]
            if n >= rule.min_samples and asc_stop_probability(top[0], top[1], rule.prior) >= rule.threshold: return n, lead
        elif isinstance(rule, VoteShare):
            wl = min(w, key=lambda x: (-w[x], first[x])) if w and max(w.values()) > 0 else -1
            share = (w[wl] / total if wl >= 0 and total > 0 else 0.0) if rule.weighted else cnt[lead] / n if lead >= 0 else 0.0
            if (n >= rule.min_samples and share >= rule.lam - 1e-12) or n == cap: return n, wl if rule.weighted else lead
        if n == cap: return n, lead
    return m, lead


def naive_optscale(rule, seq, conf, m):
    "OptScale for one (ordering, problem): scipy MLE (MAP with the rule's prior) of the truncated normal, N* by a loop, CRew pick."
    x = conf[:rule.n_init]
    pen = (lambda th: 0.0) if rule.prior is None else (lambda th: (th[0] - rule.prior[0]) ** 2 / (2 * rule.prior_scale[0] ** 2)
                                                        + (th[1] - np.log(rule.prior[1])) ** 2 / (2 * rule.prior_scale[1] ** 2))
    nll = lambda th: pen(th) - stats.truncnorm.logpdf(x, -th[0] / np.exp(th[1]), (1 - th[0]) / np.exp(th[1]), loc=th[0], scale=np.exp(th[1])).sum()
    th = optimize.minimize(nll, [x.mean(), np.log(x.std() + 0.05)], method="Nelder-Mead").x
    mu, sg = th[0], np.exp(th[1])
    F = stats.truncnorm.cdf(rule.target, -mu / sg, (1 - mu) / sg, loc=mu, scale=sg)
    n = next((N for N in range(1, m + 1) if 1 - F ** N >= rule.percentile), m)
    n = min(max(n, rule.n_init), m)
    ok = [t for t in range(n) if seq[t] >= 0]
    return n, seq[max(ok, key=lambda t: (conf[t], -t))] if ok else -1


def timed(f):
    t0, c0 = time.perf_counter(), time.process_time()
    out = f()
    return out, round(time.perf_counter() - t0, 3), round(time.process_time() - c0, 3)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a small pool, for a smoke run")
    args = ap.parse_args(argv)
    P, m, O = (60, 16, 10) if args.quick else (600, 32, 100)
    pa = pool_arrays(synthetic_pool(P, m, seed=0))
    od = orderings(P, m, O, seed=0)
    rules = [SCFixed(m), SCFixed(m // 4), ESC(5), ASC(0.95), VoteShare(0.8), VoteShare(0.8, weighted=True), OptScale(0.9, 0.9),
             OptScale(0.9, 0.9, prior=(0.7, 0.2)), BestOfN(m, "crew"), BestOfN(m, "random"), BestOfN(m, "oracle")]
    tl, t_wall, t_cpu = timed(lambda: tally(pa, od))
    res = dict(task="replay every sampling rule over one pool and many orderings", quick=args.quick, problems=P, samples=m,
               orderings=O, tally_wall_s=t_wall, tally_cpu_s=t_cpu, rules={})
    reps = {}
    for r in rules:
        reps[r.name], w, c = timed(lambda: r.replay(pa, od, tl))
        s = summarise(reps[r.name], n_boot=200)
        res["rules"][r.name] = dict(wall_s=w, cpu_s=c, accuracy=round(s["accuracy"], 4), mean_samples=round(s["mean_samples"], 3))
    res["all_rules_wall_s"] = round(t_wall + sum(v["wall_s"] for v in res["rules"].values()), 3)
    res["all_rules_cpu_s"] = round(t_cpu + sum(v["cpu_s"] for v in res["rules"].values()), 3)
    rng = np.random.default_rng(1)
    sub_p, sub_o = rng.choice(P, min(P, 30), replace=False), rng.choice(O, min(O, 4), replace=False)
    for r in rules:
        n_loops = len(sub_p) * len(sub_o) if not isinstance(r, OptScale) else 40       # scipy fits are slow: 40 of them
        pairs = [(o, p) for o in sub_o for p in sub_p][:n_loops]
        got, w, c = timed(lambda: [naive_rule(r, pa.answers[p, od[o, p]], pa.conf[p, od[o, p]], pa.correct[p, od[o, p]], m) for o, p in pairs])
        vec = [(int(reps[r.name].n_used[o, p]), int(reps[r.name].answer[o, p])) for o, p in pairs]
        agree = float(np.mean([g == v for g, v in zip(got, vec)]))
        sc = P * O / len(pairs)
        res["rules"][r.name].update(naive_loop_pairs=len(pairs), naive_loop_wall_s=w, naive_scaled_full_s=round(w * sc, 2),
                                    naive_scaled_full_cpu_s=round(c * sc, 2), agreement_with_naive=agree,
                                    speedup_cpu=round(c * sc / max(res["rules"][r.name]["cpu_s"] + t_cpu / len(rules), 1e-9), 1))
    res["naive_all_rules_scaled_cpu_s"] = round(sum(v["naive_scaled_full_cpu_s"] for v in res["rules"].values()), 1)
    res["speedup_all_rules_cpu"] = round(res["naive_all_rules_scaled_cpu_s"] / res["all_rules_cpu_s"], 1)
    rs, w, c = timed(lambda: RiskSampler(alpha=0.1).calibrate(pa, od, tl))
    res["risk_sampler_calibrate"] = dict(wall_s=w, cpu_s=c, lam=rs.lam, message=rs.message)
    ev, w, c = timed(lambda: evaluate_risk_sampler(pa, [0.05, 0.1, 0.2], n_splits=200, seed=0, n_orders=20))
    res["risk_sampler_evaluate_200_splits_3_alphas"] = dict(wall_s=w, cpu_s=c, rows=len(ev))
    res.update(note="the machine is shared: wall times include waiting for the CPU (see loadavg); cpu_s is this process's CPU time",
               loadavg=os.getloadavg(), threads=os.environ.get("OMP_NUM_THREADS"), python=platform.python_version(),
               numpy=np.__version__)
    out = Path("/tmp/sampling_quick.json") if args.quick else ROOT / "outputs" / "bench" / "sampling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
