"Tests for the adalib command line (adalib.cli): calibrate -> apply on committed traces, fitted-rule reload, the bad-input sweep, the tutorial, JupyterLab."
import hashlib, json, os, re, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from adalib.cli import main, load_fitted, read_traces, check_request, UserError
from adalib.traces import TraceSet, synthetic_traces

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "data" / "traces" / "tiny-reasoner"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    "400 committed TinyReasoner traces as a shard, a folder and a reference-layout JSON log."
    d = tmp_path_factory.mktemp("cli")
    ts = TraceSet.read(TRACES)
    ts = ts.subset(ts.trace_ids[np.random.default_rng(0).permutation(ts.n)[:400]])
    (d / "folder").mkdir()
    ts.subset(ts.trace_ids[:200]).write(d / "folder" / "a.parquet"); ts.subset(ts.trace_ids[200:]).write(d / "folder" / "b.parquet")
    return {"ts": ts, "parquet": ts.write(d / "t.parquet"), "folder": d / "folder", "log": ts.to_json_log(d / "t.json"), "dir": d}


def run(argv, capsys):
    rc = main([str(a) for a in argv]); out = capsys.readouterr()
    return rc, out.out, out.err


def sha(paths):
    out = {}
    for p in paths:
        p = Path(p)
        for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []):
            if f.is_file(): out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("kind", ["parquet", "folder", "log"])
def test_inspect(small, kind, capsys):
    rc, out, err = run(["inspect", small[kind]], capsys)
    assert rc == 0 and "400 traces" in out and "solvable:" in out and "pass@4 (T=0.8, budget 128)" in out and "accuracy vs budget" in out and "answer_prob" in out


@pytest.mark.parametrize("rule", ["upper", "lower", "combined"])
def test_calibrate_apply_and_reload_identical_exits(small, rule, capsys):
    "calibrate -> fitted.json -> apply gives the exits of the in-memory FittedRule; inputs are untouched."
    d = small["dir"]; fj, ex = d / f"fit-{rule}.json", d / f"ex-{rule}.parquet"
    before = sha([small["log"], small["parquet"]])
    rc, out, err = run(["calibrate", small["log"], "--rule", rule, "--signal", "answer_prob", "--alpha", "0.35", "--alpha-lower", "0.2",
                        "--delta", "0.1", "--method", "ltt", "--out", fj], capsys)
    assert rc == 0 and "certified" in out.lower() and fj.exists(), err
    rc, out, err = run(["apply", fj, small["parquet"], "--out", ex], capsys)
    assert rc == 0 and "traces; exits:" in out
    got = pd.read_parquet(ex)
    from adalib.cli import fit, exits
    f = fit(small["ts"], rule, "answer_prob", "ltt", 0.35, 0.1, 0.2)
    want = exits(f, small["ts"])
    pd.testing.assert_frame_equal(got, want)
    pd.testing.assert_frame_equal(exits(load_fitted(fj), small["ts"]), want)
    assert sha([small["log"], small["parquet"]]) == before


def test_calibrate_infeasible_says_so(small, capsys):
    rc, out, err = run(["calibrate", small["parquet"], "--signal", "answer_prob", "--alpha", "0.1", "--method", "ucb", "--delta", "0.2"], capsys)
    assert rc == 0 and "Nothing was certified" in out and "runs to its budget" in out


def test_studies_subcommand_dispatches(capsys):
    rc, out, err = run(["studies", "list"], capsys)
    assert rc == 0 and "s04_risk_validity" in out


def test_python_m_entry_point(small):
    r = subprocess.run([sys.executable, "-m", "adalib.cli", "inspect", str(small["parquet"])], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "400 traces" in r.stdout
    r = subprocess.run([sys.executable, "-m", "adalib.cli", "inspect", "/no/such.json"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


# ---------- the bad-input sweep: one line naming problem and fix, exit code 2, inputs untouched ----------

def _good_log(d, **kw):
    ts = synthetic_traces(60, 6, seed=0, **kw); return ts, ts.to_json_log(d / "good.json")


def make_bad(case, d):
    "(argv, expected message part, files that must stay untouched) for one bad input."
    ts, log = _good_log(d)
    cal = lambda path, *extra: ["calibrate", path, "--signal", "answer_prob", "--alpha", "0.3", *extra]
    raw = ts.df.copy()
    if case == "missing_file": return cal(d / "nope.json"), "no such file or folder", []
    if case == "empty_json": (d / "e.json").write_text(""); return cal(d / "e.json"), "the file is empty", [d / "e.json"]
    if case == "empty_parquet": (d / "e.parquet").write_bytes(b""); return ["inspect", d / "e.parquet"], "the file is empty", [d / "e.parquet"]
    if case == "truncated_json":
        (d / "t.json").write_text(log.read_text()[:500]); return cal(d / "t.json"), "not valid JSON", [d / "t.json"]
    if case == "truncated_parquet":
        b = ts.write(d / "full.parquet").read_bytes(); (d / "t.parquet").write_bytes(b[: len(b) // 2])
        return ["inspect", d / "t.parquet"], "cannot read this parquet file", [d / "t.parquet"]
    if case == "parquet_wrong_dtypes":
        pq.write_table(pa.Table.from_pandas(raw.assign(correct=raw["correct"].astype(int)), preserve_index=False), d / "w.parquet")
        return cal(d / "w.parquet"), "is not boolean", [d / "w.parquet"]
    if case == "parquet_string_tokens":
        pq.write_table(pa.Table.from_pandas(raw.assign(tokens="many"), preserve_index=False), d / "s.parquet")
        return ["inspect", d / "s.parquet"], "is not an integer", [d / "s.parquet"]
    if case in ("nan_signal", "inf_signal"):
        pq.write_table(pa.Table.from_pandas(raw.assign(sig_answer_prob=np.where(np.arange(len(raw)) == 3, np.nan if case == "nan_signal" else np.inf, raw["sig_answer_prob"])), preserve_index=False), d / "n.parquet")
        return cal(d / "n.parquet"), "NaN/inf", [d / "n.parquet"]
    if case == "nan_in_json_log":
        (d / "n.json").write_text(log.read_text().replace('"answer_prob": ', '"answer_prob": NaN, "x": ', 1))
        return cal(d / "n.json"), "NaN or Infinity", [d / "n.json"]
    if case == "unknown_signal": return ["calibrate", log, "--signal", "nope", "--alpha", "0.3"], "unknown signal 'nope'", [log]
    if case == "single_checkpoint":
        one = TraceSet(raw[raw["step"] == 0], ts.meta.drop(columns="solvable").reset_index()); p = one.write(d / "one.parquet")
        return cal(p), "single checkpoint", [p]
    if case in ("all_correct", "all_wrong"):
        p = TraceSet(raw.assign(correct=case == "all_correct"), ts.meta.drop(columns="solvable").reset_index()).write(d / "c.parquet")
        return cal(p), "is correct, so every threshold" if case == "all_correct" else "is wrong, so every threshold", [p]
    if case == "alpha_zero": return ["calibrate", log, "--signal", "answer_prob", "--alpha", "0"], "--alpha must be a number in (0, 1)", [log]
    if case == "alpha_above_one": return ["calibrate", log, "--signal", "answer_prob", "--alpha", "1.5"], "--alpha must be a number in (0, 1)", [log]
    if case == "delta_one": return ["calibrate", log, "--signal", "answer_prob", "--alpha", "0.2", "--delta", "1"], "--delta must be a number in (0, 1)", [log]
    if case == "alpha_lower_negative":
        return ["calibrate", log, "--rule", "lower", "--signal", "answer_prob", "--alpha", "0.2", "--alpha-lower", "-0.1"], "--alpha-lower must be", [log]
    if case == "alpha_below_certifiable": return ["calibrate", log, "--signal", "answer_prob", "--alpha", "0.01"], "cannot be certified by ltt with n=60", [log]
    if case == "alpha_not_a_number": return ["calibrate", log, "--signal", "answer_prob", "--alpha", "ten"], "invalid float value", [log]
    if case == "missing_fitted": return ["apply", d / "nofit.json", log], "no such file", [log]
    if case == "empty_fitted": (d / "f.json").write_text(""); return ["apply", d / "f.json", log], "not valid JSON", [d / "f.json", log]
    if case == "truncated_fitted":
        assert main(["calibrate", str(log), "--signal", "answer_prob", "--alpha", "0.5", "--out", str(d / "ok.json")]) == 0
        (d / "f.json").write_text((d / "ok.json").read_text()[:300]); return ["apply", d / "f.json", log], "not valid JSON", [d / "f.json", log]
    if case == "not_a_fitted_rule": (d / "f.json").write_text("[1, 2]"); return ["apply", d / "f.json", log], "not a fitted rule", [d / "f.json", log]
    if case == "apply_unknown_signal":
        assert main(["calibrate", str(log), "--signal", "answer_prob", "--alpha", "0.5", "--out", str(d / "ok.json")]) == 0
        other = synthetic_traces(20, 4, seed=1, signals=("other",)).write(d / "o.parquet")
        return ["apply", d / "ok.json", other], "unknown signal 'answer_prob'", [d / "ok.json", other]
    if case == "out_overwrites_input": return cal(log, "--out", log), "would overwrite an input", [log]
    if case == "unknown_file_type": (d / "t.csv").write_text("a,b\n"); return ["inspect", d / "t.csv"], "unknown trace file type", [d / "t.csv"]
    raise KeyError(case)


CASES = ["missing_file", "empty_json", "empty_parquet", "truncated_json", "truncated_parquet", "parquet_wrong_dtypes", "parquet_string_tokens",
         "nan_signal", "inf_signal", "nan_in_json_log", "unknown_signal", "single_checkpoint", "all_correct", "all_wrong", "alpha_zero",
         "alpha_above_one", "delta_one", "alpha_lower_negative", "alpha_below_certifiable", "alpha_not_a_number", "missing_fitted",
         "empty_fitted", "truncated_fitted", "not_a_fitted_rule", "apply_unknown_signal", "out_overwrites_input", "unknown_file_type"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, capsys):
    argv, msg, inputs = make_bad(case, tmp_path)
    before = sha(inputs); capsys.readouterr()
    try: rc = main([str(a) for a in argv])
    except SystemExit as e: rc = e.code          # argparse usage errors
    err = capsys.readouterr().err
    lines = [l for l in re.split(r"[\r\n]", err) if l.strip() and "%|" not in l]   # tqdm bars are cleared with \r
    assert rc == 2, (case, err)
    assert len(lines) == 1 and lines[0].startswith("adalib: error: ") and msg in lines[0], (case, err)
    assert "Traceback" not in err
    assert sha(inputs) == before, f"{case}: an input file changed"


@pytest.mark.parametrize("case", ["alpha_zero", "unknown_signal", "all_wrong", "single_checkpoint", "alpha_below_certifiable"])
def test_bad_input_public_api(case, tmp_path):
    "The same checks through the Python API raise a ValueError (UserError) with the same message."
    argv, msg, _ = make_bad(case, tmp_path)
    ts = read_traces(argv[1])
    opt = dict(zip(argv[2::2], argv[3::2]))
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        check_request(ts, opt["--signal"], "ltt", float(opt["--alpha"]), float(opt.get("--delta", 0.1)))


# ---------- the tutorial runs (papermill, adalib kernel) ----------

def test_tutorial_runs_through_papermill(tmp_path):
    pm = pytest.importorskip("papermill")
    from adalib.studies import ensure_kernel
    nb = ROOT / "nbs" / "tutorials" / "calibrate_your_traces.ipynb"
    out = tmp_path / "tutorial.ipynb"
    pm.execute_notebook(str(nb), str(out), parameters={"n_traces": 300}, kernel_name=ensure_kernel("adalib"),
                        cwd=str(nb.parent), progress_bar=False)
    text = out.read_text()
    assert "identical exits" in text and "image/png" in text


# ---------- JupyterLab: `make lab` serves the adalib kernel ----------

def test_jupyterlab_lists_adalib_kernel(tmp_path):
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[dev]' pins it)")
    from adalib.studies import ensure_kernel
    ensure_kernel("adalib")
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    token = "adalib-test"
    cmd = [sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1", f"--port={port}", "--no-browser", f"--IdentityProvider.token={token}",
           f"--notebook-dir={ROOT / 'nbs'}", "--MappingKernelManager.default_kernel_name=adalib", "--ServerApp.port_retries=0", *(["--allow-root"] if os.geteuid() == 0 else [])]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        specs, t0 = None, time.time()
        while time.time() - t0 < 90 and specs is None:
            if proc.poll() is not None: pytest.fail(f"jupyter lab exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/kernelspecs?token={token}", timeout=5) as r: specs = json.loads(r.read())
            except OSError: time.sleep(1)
        assert specs is not None, "jupyter lab did not answer within 90 s"
        assert "adalib" in specs["kernelspecs"] and specs["default"] == "adalib"
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
