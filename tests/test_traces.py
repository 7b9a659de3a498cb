"Tests for adalib.traces: validation messages, Parquet shards, JSON-log import, padding, splits."
import json, os, time, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from adalib.traces import TraceSet, Padded, write_shard, synthetic_traces, validate_frame, hidden_path, TMP_MARK, SOLVABLE_FILE
from adalib import search
from adalib.shards import SOLVER_SOURCE


def good_df():
    return pd.DataFrame({"trace_id": ["a", "a", "a", "b", "b"], "step": [0, 1, 2, 0, 1],
                         "tokens": [10, 20, 30, 16, 32], "answer": ["1", "2", "3", "x", "y"],
                         "correct": [False, True, True, False, False], "sig_p": [.1, .5, .9, .2, .3]})


def raw_parquet(df, path):
    "Write a table bypassing write_shard's validation (simulates a file made by other tools)."
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return path


# ---------- the five validation errors: each names file, column and row ----------

def test_missing_column_names_file_and_column(tmp_path):
    p = raw_parquet(good_df().drop(columns="tokens"), tmp_path / "m.parquet")
    with pytest.raises(ValueError) as e: TraceSet.read(p)
    msg = str(e.value)
    assert str(p) in msg and "'tokens'" in msg and "missing" in msg and "row" in msg


def test_nan_signal_names_file_column_row(tmp_path):
    df = good_df(); df.loc[3, "sig_p"] = np.nan
    p = raw_parquet(df, tmp_path / "nan.parquet")
    with pytest.raises(ValueError) as e: TraceSet.read(p)
    msg = str(e.value)
    assert str(p) in msg and "column 'sig_p', row 3" in msg and "trace_id='b', step=0" in msg and "NaN" in msg


def test_non_increasing_tokens_names_file_column_row(tmp_path):
    df = good_df(); df.loc[2, "tokens"] = 20   # equal to previous step
    p = raw_parquet(df, tmp_path / "tok.parquet")
    with pytest.raises(ValueError) as e: TraceSet.read(p)
    msg = str(e.value)
    assert str(p) in msg and "column 'tokens', row 2" in msg and "strictly increasing" in msg


def test_duplicate_trace_step_names_file_column_rows(tmp_path):
    df = pd.concat([good_df(), good_df().iloc[[4]]], ignore_index=True)
    p = raw_parquet(df, tmp_path / "dup.parquet")
    with pytest.raises(ValueError) as e: TraceSet.read(p)
    msg = str(e.value)
    assert str(p) in msg and "column 'step', rows 4 and 5" in msg and "duplicate (trace_id, step) = ('b', 1)" in msg


@pytest.mark.parametrize("bad, row", [([0, 1, 1, 0, 0], 0), (["False", "True", "yes", "False", "False"], 0)])
def test_non_boolean_correct_names_file_column_row(tmp_path, bad, row):
    df = good_df(); df["correct"] = bad
    p = raw_parquet(df, tmp_path / "c.parquet")
    with pytest.raises(ValueError) as e: TraceSet.read(p)
    msg = str(e.value)
    assert str(p) in msg and f"column 'correct', row {row}" in msg and "not boolean" in msg


def test_non_boolean_correct_in_object_column_names_row():
    df = good_df(); df["correct"] = pd.Series([False, True, "yes", False, False], dtype=object)
    with pytest.raises(ValueError, match="f.parquet: column 'correct', row 2 .*'yes'.*not boolean"):
        TraceSet.from_frames(df, source="f.parquet")


def test_corrupt_parquet_names_file(tmp_path):
    p = tmp_path / "broken.parquet"
    good = write_shard(good_df(), None, tmp_path / "ok.parquet")
    p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match="broken.parquet: cannot read this parquet file"): TraceSet.read(p)
    (tmp_path / "garbage.parquet").write_text("not parquet at all")
    with pytest.raises(ValueError, match="garbage.parquet"): TraceSet.read(tmp_path / "garbage.parquet")
    # in a folder, the bad shard is named too
    with pytest.raises(ValueError, match="broken.parquet|garbage.parquet"): TraceSet.read(tmp_path)


def test_noncontiguous_steps_and_meta_mismatch(tmp_path):
    df = good_df(); df.loc[2, "step"] = 3
    with pytest.raises(ValueError, match="column 'step', row 2.*contiguous"): validate_frame(df, "f")
    with pytest.raises(ValueError, match="no metadata record for traces \\['b'\\]"):
        TraceSet.from_frames(good_df(), [{"trace_id": "a"}])
    with pytest.raises(ValueError, match="no checkpoint rows"):
        TraceSet.from_frames(good_df(), [{"trace_id": "a"}, {"trace_id": "b"}, {"trace_id": "c"}])


# ---------- shards ----------

def test_roundtrip_metadata_solvable_and_sorting(tmp_path):
    meta = [{"trace_id": "b", "model": "m", "difficulty": np.int64(2)}, {"trace_id": "a", "model": "m", "difficulty": 1}]
    df = good_df().sample(frac=1, random_state=0)
    p = write_shard(df, meta, tmp_path / "s.parquet")
    ts = TraceSet.read(p)
    assert list(ts.df["trace_id"]) == ["a", "a", "a", "b", "b"] and list(ts.df["step"]) == [0, 1, 2, 0, 1]
    assert ts.meta.loc["a", "solvable"] and not ts.meta.loc["b", "solvable"]
    assert ts.meta.loc["b", "difficulty"] == 2 and ts.signals == ["p"] and ts.n == 2 and ts.T == 3
    assert json.loads(pq.read_schema(p).metadata[b"adalib_meta"])[0]["trace_id"] == "a"


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "s.parquet"
    write_shard(good_df(), None, p)
    before = p.read_bytes()
    def boom(table, where, **kw):
        Path(where).write_bytes(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError): write_shard(good_df().assign(sig_p=0.5), None, p)
    assert p.read_bytes() == before                       # old shard untouched
    assert [f.name for f in tmp_path.iterdir()] == ["s.parquet"]   # temp file cleaned up


def test_folder_ignores_temp_files_with_warning_and_rejects_cross_shard_duplicates(tmp_path):
    ts = synthetic_traces(40, 6, seed=1)
    a, b = ts.split(0.25, seed=0)
    a.write(tmp_path / "000.parquet"); b.write(tmp_path / "001.parquet")
    leftover = tmp_path / f"002.parquet{TMP_MARK}77-abc"
    leftover.write_bytes(b"junk")
    with pytest.warns(UserWarning, match=leftover.name):
        back = TraceSet.read(tmp_path)
    pd.testing.assert_frame_equal(back.df, ts.df)
    pd.testing.assert_frame_equal(back.meta, ts.meta)
    a.write(tmp_path / "003.parquet")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="003.parquet.*also appears in .*000.parquet"):
        TraceSet.read(tmp_path)


def test_hidden_states_aligned_after_sort(tmp_path):
    df = good_df().iloc[::-1].reset_index(drop=True)
    h = np.c_[df["tokens"].to_numpy(), df["step"].to_numpy()].astype(np.float16)
    p = write_shard(df, None, tmp_path / "h.parquet", hidden=h)
    assert hidden_path(p).exists()
    ts = TraceSet.read(p, hidden=True)
    assert ts.hidden.dtype == np.float16 and ts.hidden.shape == (5, 2)
    assert (ts.hidden[:, 0] == ts.df["tokens"]).all() and (ts.hidden[:, 1] == ts.df["step"]).all()
    with pytest.raises(ValueError, match="hidden states must be"): write_shard(df, None, tmp_path / "x.parquet", hidden=h[:3])
    write_shard(df, None, tmp_path / "noh.parquet")
    with pytest.raises(FileNotFoundError, match="noh.hidden.npy"): TraceSet.read(tmp_path / "noh.parquet", hidden=True)


# ---------- padded arrays, splits, subsets ----------

def test_padded_repeats_last_value():
    ts = TraceSet.from_frames(good_df())
    P = ts.arrays()
    assert isinstance(P, Padded) and P.tokens.shape == (2, 3)
    assert P.mask.tolist() == [[True, True, True], [True, True, False]] and P.lengths.tolist() == [2 + 1, 2]
    assert P.tokens[1].tolist() == [16, 32, 32] and P.answers[1].tolist() == ["x", "y", "y"]
    assert P.signals["p"][1].tolist() == [.2, .3, .3] and P.correct[0].tolist() == [False, True, True]
    assert P.solvable.tolist() == [True, False] and P.trace_ids.tolist() == ["a", "b"]


def test_split_is_seeded_and_disjoint():
    ts = synthetic_traces(100, 5, seed=0)
    c1, t1 = ts.split(0.2, seed=7); c2, t2 = ts.split(0.2, seed=7); c3, _ = ts.split(0.2, seed=8)
    assert c1.n == 20 and t1.n == 80 and list(c1.trace_ids) == list(c2.trace_ids)
    assert set(c1.trace_ids) != set(c3.trace_ids) and not set(c1.trace_ids) & set(t1.trace_ids)
    assert len(c1.df) + len(t1.df) == len(ts.df)
    with pytest.raises(ValueError, match="cal_frac"): ts.split(1.0, seed=0)
    with pytest.raises(ValueError, match="unknown trace_id"): ts.subset(["nope"])
    with pytest.raises(ValueError, match="matched no traces"): ts.filter(model="other")
    with pytest.raises(ValueError, match="metadata column 'colour' unknown"): ts.filter(colour=1)


def test_synthetic_signals_plausible():
    ts = synthetic_traces(2000, 16, seed=0)
    P = ts.arrays()
    sig = P.signals["answer_prob"]
    sol = P.solvable
    first = np.argmax(P.correct & P.mask, axis=1)
    # solvable: confidence after becoming correct exceeds confidence before
    before = np.array([sig[i, :first[i]].mean() for i in np.flatnonzero(sol & (first > 1))])
    after = np.array([sig[i, first[i]:P.lengths[i]].mean() for i in np.flatnonzero(sol & (first > 1))])
    assert (after - before).mean() > 0.2
    # unsolvable: low, and correct at last checkpoint never
    assert sig[~sol][P.mask[~sol]].mean() < 0.25 and not P.correct[~sol, :][np.arange((~sol).sum()), P.lengths[~sol] - 1].any()
    assert (P.signals["eot_negent"] <= 0).all()
    ts_all = synthetic_traces(50, 4, seed=0, solvable_frac=1.0, ragged=False)
    assert ts_all.meta["solvable"].all() and (ts_all.arrays().lengths == 4).all()


def test_validation_is_vectorised_on_100k_rows():
    ts = synthetic_traces(10_000, 10, seed=0, ragged=False)
    assert len(ts.df) == 100_000
    df = ts.df.sample(frac=1, random_state=1)
    t0 = time.perf_counter(); ts2 = TraceSet.from_frames(df, ts.meta); dt = time.perf_counter() - t0
    pd.testing.assert_frame_equal(ts2.df, ts.df)
    assert dt < 5, f"validation of 100k rows took {dt:.1f}s"
    t0 = time.perf_counter(); ts.arrays(); assert time.perf_counter() - t0 < 5


def test_add_signal():
    ts = TraceSet.from_frames(good_df())
    ts.add_signal("sig_q", np.arange(5.0))
    assert ts.signals == ["p", "q"] and ts.df["sig_q"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="row 1 .*NaN"): ts.add_signal("r", [0, np.nan, 0, 0, 0])
    with pytest.raises(ValueError, match="one entry per checkpoint row"): ts.add_signal("r", [0, 1])


# ---------- JSON log importer ----------

LOG = {"model": "qwen", "results": [
    {"id": 7, "question": "1+1?", "answer": "2", "checkpoints": [
        {"checkpoint_idx": 1, "tokens_used": 100, "predicted_answer": "3", "confidence": 0.2, "is_correct": False, "entropy": 2.0, "eat": 0.1},
        {"checkpoint_idx": 2, "tokens_used": 200, "predicted_answer": "2", "confidence": 0.9, "is_correct": True, "entropy": 0.5, "eat": 0.4, "note": "x"}]},
    {"id": "q2", "question": "2+2?", "answer": "4", "checkpoints": [
        {"checkpoint_idx": 0, "tokens_used": 50, "predicted_answer": 5, "confidence": 0.1, "is_correct": False, "entropy": 1.0, "eat": 0.2}]}]}


def write_json(tmp_path, obj, name="log.json"):
    p = tmp_path / name; p.write_text(json.dumps(obj)); return p


def test_json_log_import(tmp_path):
    ts = TraceSet.from_json_log(write_json(tmp_path, LOG), model="qwen")
    assert list(ts.trace_ids) == ["7", "q2"] and ts.T == 2
    d = ts.df
    assert d["step"].tolist() == [0, 1, 0] and d["checkpoint_idx"].tolist() == [1, 2, 0]
    assert d["tokens"].tolist() == [100, 200, 50] and d["answer"].tolist() == ["3", "2", "5"]
    assert d["sig_confidence"].tolist() == [0.2, 0.9, 0.1] and d["sig_neg_entropy"].tolist() == [-2.0, -0.5, -1.0]
    assert d["sig_eat"].tolist() == [0.1, 0.4, 0.2] and "sig_note" not in d and "sig_is_correct" not in d
    assert ts.meta.loc["7", "gold"] == "2" and ts.meta.loc["7", "question"] == "1+1?" and ts.meta.loc["7", "model"] == "qwen"
    assert ts.meta.loc["7", "solvable"] and not ts.meta.loc["q2", "solvable"] and ts.meta.loc["7", "final_answer"] == "2"
    # top-level list works the same
    ts2 = TraceSet.from_json_log(write_json(tmp_path, LOG["results"], "list.json"))
    pd.testing.assert_frame_equal(ts2.df, ts.df)


def test_json_item_without_checkpoints_is_skipped_with_warning(tmp_path):
    "The reference loader skips items without checks; so do we, and say which."
    bad = json.loads(json.dumps(LOG)); del bad["results"][1]["checkpoints"]
    p = write_json(tmp_path, bad)
    with pytest.warns(UserWarning, match=r"skipped 1 .*results\[1\]"): ts = TraceSet.from_json_log(p)
    assert list(ts.trace_ids) == ["7"]
    bad["results"][0]["checkpoints"] = []
    with pytest.raises(ValueError) as e: TraceSet.from_json_log(write_json(tmp_path, bad))
    assert str(p) in str(e.value) and "no list of items with checkpoints" in str(e.value)


def test_json_non_numeric_tokens(tmp_path):
    bad = json.loads(json.dumps(LOG)); bad["results"][0]["checkpoints"][1]["tokens_used"] = "two hundred"
    p = write_json(tmp_path, bad)
    with pytest.raises(ValueError) as e: TraceSet.from_json_log(p)
    assert str(p) in str(e.value) and "item 0 (id='7') checkpoint 1: field 'tokens_used' = 'two hundred' is not a number" in str(e.value)


def test_json_other_malformed(tmp_path):
    bad = json.loads(json.dumps(LOG)); del bad["results"][0]["checkpoints"][0]["confidence"]
    with pytest.raises(ValueError, match=r"item 0 \(id='7'\) checkpoint 0: field 'confidence' is missing, but other checkpoints record it"):
        TraceSet.from_json_log(write_json(tmp_path, bad))
    bad = json.loads(json.dumps(LOG)); bad["results"][0]["checkpoints"][0]["is_correct"] = "yes"
    with pytest.raises(ValueError, match="field 'is_correct' = 'yes' is not a boolean"): TraceSet.from_json_log(write_json(tmp_path, bad))
    bad = json.loads(json.dumps(LOG)); bad["results"][0]["checkpoints"][1]["tokens_used"] = 50
    with pytest.raises(ValueError, match="column 'tokens'.*strictly increasing"): TraceSet.from_json_log(write_json(tmp_path, bad))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"): TraceSet.from_json_log(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no list of items"): TraceSet.from_json_log(write_json(tmp_path, {"x": 1}))
    bad = json.loads(json.dumps(LOG)); del bad["results"][0]["checkpoints"][0]["tokens_used"]
    with pytest.raises(ValueError, match=r"item 0 \(id='7'\) checkpoint 0: field\(s\) \['tokens_used'\] missing"):
        TraceSet.from_json_log(write_json(tmp_path, bad))


# ---------- every reference layout (signal_util.load_log of xidulu/reasoning_risk_control) ----------

CK = [{"checkpoint_idx": 0, "tokens_used": 64, "predicted_answer": "3", "confidence": 0.2, "is_correct": False,
       "entropy_uni": 1.5, "eat_uni": 0.3, "eat_uni_forced": 0.1, "probe_confidence": 0.4, "entropy": 2.0},
      {"checkpoint_idx": 1, "tokens_used": 128, "predicted_answer": "4", "confidence": 0.9, "is_correct": True,
       "entropy_uni": 0.5, "eat_uni": 0.8, "eat_uni_forced": 0.6, "probe_confidence": 0.7, "entropy": 0.25}]
ITEM = {"id": "q0", "question": "2+2?", "gold_answer": "4", "actual_final_answer": "4", "solvable": False,
        "metadata": {"source": "gsm8k", "level": 2}, "checkpoints": CK}
ITEM2 = {"id": "q1", "question": "1+2?", "gold_answer": "3", "actual_final_answer": "5", "solvable": True,
         "metadata": {"source": "gsm8k", "level": 1}, "checkpoints": [dict(c, is_correct=False) for c in CK]}


def as_checks(item, key, correct_key="intermediate_correct"):
    "The same item in the intermediate_checks/checks layout (thinking_step, intermediate_correct)."
    out = {k: v for k, v in item.items() if k != "checkpoints"}
    out[key] = [{**{k: v for k, v in c.items() if k not in ("checkpoint_idx", "is_correct")},
                 "thinking_step": c["checkpoint_idx"], correct_key: c["is_correct"]} for c in item["checkpoints"]]
    return out


LAYOUTS = {
    "list_checkpoints": [ITEM, ITEM2],
    "dict_by_question_id": {"q0": {k: v for k, v in ITEM.items() if k != "id"}, "q1": {k: v for k, v in ITEM2.items() if k != "id"}},
    "dict_with_results_list": {"model": "m", "results": [ITEM, ITEM2]},
    "list_intermediate_checks": [as_checks(ITEM, "intermediate_checks"), as_checks(ITEM2, "intermediate_checks")],
    "list_checks_is_correct": [as_checks(ITEM, "checks", "is_correct"), as_checks(ITEM2, "checks", "is_correct")],
    "dict_intermediate_checks": {"q0": as_checks({k: v for k, v in ITEM.items() if k != "id"}, "intermediate_checks"),
                                 "q1": as_checks({k: v for k, v in ITEM2.items() if k != "id"}, "intermediate_checks")},
}


# line-delimited logs (.jsonl) are lists of items, so only the list layouts have a .jsonl form
@pytest.mark.parametrize("layout,ext", [(k, e) for k in sorted(LAYOUTS) for e in (".json", ".jsonl")
                                        if e == ".json" or not isinstance(LAYOUTS[k], dict)])
def test_every_reference_layout_imports(tmp_path, layout, ext):
    obj = LAYOUTS[layout]
    if ext == ".jsonl":
        p = tmp_path / "log.jsonl"; p.write_text("".join(json.dumps(it) + "\n" for it in obj))
    else: p = write_json(tmp_path, obj)
    ts = TraceSet.from_json_log(p)
    assert list(ts.trace_ids) == ["q0", "q1"] and ts.T == 2
    d = ts.df
    assert d["tokens"].tolist() == [64, 128] * 2 and d["correct"].tolist() == [False, True, False, False]
    assert "checkpoint_idx" not in d    # equal to step: redundant
    assert sorted(ts.signals) == ["confidence", "eat_uni", "eat_uni_forced", "neg_entropy", "neg_entropy_uni", "probe_confidence"]
    assert d["sig_neg_entropy_uni"].tolist() == [-1.5, -0.5] * 2 and d["sig_probe_confidence"].tolist() == [0.4, 0.7] * 2
    m = ts.meta
    assert m.loc["q0", "question"] == "2+2?" and m.loc["q0", "gold_answer"] == "4" and m.loc["q0", "gold"] == "4"
    assert m.loc["q1", "actual_final_answer"] == "5" and m.loc["q1", "metadata"] == {"source": "gsm8k", "level": 1}
    # the supplied solvable is kept (q0 is correct at its end but marked unsolvable, q1 the reverse)
    assert m["solvable"].tolist() == [False, True] and ts.solvable_source == "supplied"


def test_reference_log_round_trip_is_lossless(tmp_path):
    "reference log -> TraceSet -> to_json_log gives the same items; TraceSet -> log -> TraceSet gives the same set."
    p = write_json(tmp_path, [ITEM, ITEM2])
    ts = TraceSet.from_json_log(p)
    back = json.loads(ts.to_json_log(tmp_path / "out.json").read_text())
    for orig, got in zip([ITEM, ITEM2], back):
        assert got["checkpoints"] == orig["checkpoints"]
        for k, v in orig.items():
            if k != "checkpoints": assert got[k] == v, k
        assert got["solvable_source"] == "supplied"
    ts2 = TraceSet.from_json_log(tmp_path / "out.json")
    pd.testing.assert_frame_equal(ts2.df, ts.df); pd.testing.assert_frame_equal(ts2.meta, ts.meta)


@pytest.mark.parametrize("ext", [".json", ".jsonl"])
def test_traceset_json_round_trip_with_extras(tmp_path, ext):
    "Extra columns and signals that would not read back by name travel in adalib_columns/adalib_signals."
    ts = synthetic_traces(30, 5, seed=1)
    ts.df["probe_tokens"] = np.arange(len(ts.df), dtype=np.int64)
    ts.add_signal("entropy_raw", np.linspace(0, 1, len(ts.df)))      # contains 'entropy' but is not negated
    back = TraceSet.from_json_log(ts.to_json_log(tmp_path / f"t{ext}"))
    pd.testing.assert_frame_equal(back.df, ts.df[back.df.columns]); assert set(back.df.columns) == set(ts.df.columns)
    pd.testing.assert_frame_equal(back.meta, ts.meta)
    assert back.solvable_source == ts.solvable_source == "last_checkpoint"


def test_supplied_solvable_survives_construction_write_and_read(tmp_path):
    ts = synthetic_traces(40, 6, seed=3)
    meta = ts.meta.drop(columns="solvable").reset_index()
    supplied = ~ts.meta["solvable"].to_numpy()        # the opposite of 'correct at the last checkpoint'
    meta["solvable"] = supplied
    s = TraceSet.from_frames(ts.df, meta)
    assert (s.meta["solvable"].to_numpy() == supplied).all() and s.solvable_source == "supplied"
    assert (s.arrays().solvable == supplied).all()
    for back in (TraceSet.read(s.write(tmp_path / "s.parquet")), TraceSet.read(tmp_path),
                 TraceSet.from_json_log(s.to_json_log(tmp_path / "s.json"))):
        assert (back.meta["solvable"].to_numpy() == supplied).all() and back.solvable_source == "supplied"
    # a named source (solver / pass@k) is kept too, and a partial supply falls back per trace
    meta["solvable_source"] = "pass@k"
    assert TraceSet.read(TraceSet.from_frames(ts.df, meta).write(tmp_path / "k" / "k.parquet")).solvable_source == "pass@k"
    part = meta.drop(columns="solvable_source").astype({"solvable": object}); part.loc[:9, "solvable"] = None
    p = TraceSet.from_frames(ts.df, part)
    assert p.solvable_source == "mixed" and (p.solvable_sources.iloc[:10] == "last_checkpoint").all()
    assert (p.meta["solvable"].to_numpy()[:10] == ts.meta["solvable"].to_numpy()[:10]).all()
    # nothing supplied: the old definition, marked as such
    assert ts.solvable_source == "last_checkpoint"


def test_committed_traces_solvable_from_independent_evidence():
    "Committed trace folders with `_solvable.parquet` take `solvable` from it (pass@k of fresh samples, or an exact solver), never from the trace itself."
    root = Path(__file__).resolve().parents[1] / "data" / "traces"
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        ts = TraceSet.read(d)
        f = d / SOLVABLE_FILE
        if not f.exists():
            assert ts.solvable_source == "last_checkpoint"; continue
        tab = pd.read_parquet(f).set_index("problem_id")
        hit = ts.meta["problem_id"].isin(tab.index).to_numpy()
        assert (ts.meta["solvable"].to_numpy()[hit] == tab.loc[ts.meta["problem_id"][hit], "solvable"].to_numpy()).all()
        if (tab["source"] == SOLVER_SOURCE).all():   # an exact solver's label, re-derived here from the problem itself
            assert hit.all() and (ts.solvable_sources == SOLVER_SOURCE).all()
            gold = ts.meta.set_index("problem_id")["gold"]
            assert (tab["solvable"] == (gold.reindex(tab.index) != "none")).all()   # solvable iff the solver's answer is a path
            lvl1 = tab[tab["difficulty"] == 1]
            seed_ = int(lvl1.index[0].split("-")[2][1:])
            regen = {p.id: p for p in search.COUNTDOWN.generate(int(lvl1.index.str.rsplit("-", n=1).str[-1].astype(int).max()) + 1, 1, seed=seed_)}
            for pid, r in lvl1.sample(50, random_state=0).iterrows():   # the label re-derived by the solver from the regenerated problem
                md = regen[pid].entry["metadata"]
                assert search.solve(search.Countdown(tuple(md["numbers"]), md["target"], md["ops"])).solvable == r["solvable"]
            sampled = tab["passk_n_correct"].notna()
            assert sampled.sum() >= 4 * 100 and (tab.loc[sampled, "k"] >= 4).all()   # pass@4 beside it, on the stated subset
            continue
        assert hit.any() and (ts.solvable_sources[hit].str.startswith("pass@")).all()
        assert (tab["solvable"] == (tab["n_correct"] > 0)).all() and (tab["k"] >= 4).all()


def test_solvable_file_survives_write_and_read(tmp_path):
    "A `_solvable.parquet` beside the shards is attached by read; writing the set and reading it back keeps it."
    ts = synthetic_traces(12, 4, seed=5)
    meta = ts.meta.reset_index().drop(columns="solvable"); meta["problem_id"] = [f"p{i % 4}" for i in range(12)]
    TraceSet.from_frames(ts.df, meta).write(tmp_path / "a" / "x.parquet")
    sol = np.array([True, False, False, True])
    pd.DataFrame({"problem_id": [f"p{i}" for i in range(4)], "solvable": sol, "source": "pass@4 (T=0.8, budget 8)"}).to_parquet(tmp_path / "a" / SOLVABLE_FILE)
    back = TraceSet.read(tmp_path / "a")
    want = sol[back.meta["problem_id"].str[1:].astype(int).to_numpy()]
    assert (back.meta["solvable"].to_numpy() == want).all() and back.solvable_source == "pass@4 (T=0.8, budget 8)"
    assert (back.arrays().solvable == want).all()
    again = TraceSet.read(back.write(tmp_path / "b" / "y.parquet"))
    assert (again.meta["solvable"].to_numpy() == want).all() and again.solvable_source == back.solvable_source


def test_json_log_streams_once(tmp_path, monkeypatch):
    "A .json log is parsed once, item by item (ijson) — never read into one string first."
    ijson = pytest.importorskip("ijson")
    p = write_json(tmp_path, [ITEM, ITEM2] * 1)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read_text used")))
    monkeypatch.setattr(json, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("json.load used")))
    assert TraceSet.from_json_log(p).n == 2


@pytest.mark.parametrize("content, msg", [("", "the file is empty"), ('[{"id": "q0", "checkpoints": [{"tokens_u', "not valid JSON"),
                                          ("42", "not a list")])
def test_json_empty_or_truncated(tmp_path, content, msg):
    p = tmp_path / "x.json"; p.write_text(content)
    with pytest.raises(ValueError, match=msg) as e: TraceSet.from_json_log(p)
    assert str(p) in str(e.value)
    with pytest.raises(FileNotFoundError, match="not found"): TraceSet.from_json_log(tmp_path / "missing.json")
