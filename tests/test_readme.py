"""The README's results section quotes only numbers that are in committed tables.

tools/make_readme.py generates the section from every study's tables/findings.csv; these tests re-read every
cited cell from the cited CSV, independently of the findings file, and compare it with the README text."""
import re, sys
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_readme  # noqa: E402
from adalib.plots import cited_row, VERDICTS  # noqa: E402

LINE = re.compile(r"^- \*(?P<verdict>[^*]+)\*: (?P<statement>.+): \*\*(?P<value>[^*]+)\*\*"
                  r"(?: \(95% CI (?P<lo>\S+) to (?P<hi>\S+)\))?\. \[`(?P<table>[^`]+)\.csv`\]\((?P<path>[^)]+)\)"
                  r"(?: · row `(?P<where>[^`]*)`)? · column `(?P<column>[^`]+)`$")

def results_lines():
    text = (ROOT / "README.md").read_text()
    assert make_readme.BEGIN in text and make_readme.END in text, "README has no generated results section"
    block = text.split(make_readme.BEGIN, 1)[1].split(make_readme.END, 1)[0]
    return [l for l in block.splitlines() if l.startswith("- ")]

def test_readme_is_generated_from_the_committed_tables():
    assert (ROOT / "README.md").read_text() == make_readme.render()

def test_every_number_in_the_results_section_equals_the_cited_csv_cell():
    lines = results_lines()
    assert len(lines) >= 10, f"expected the studies' findings in the README, found {len(lines)}"
    for l in lines:
        m = LINE.match(l)
        assert m, f"results line not in the generated form: {l}"
        path = ROOT / m["path"]
        assert path.exists(), f"README cites {m['path']}, which is not committed"
        row = cited_row(path.parent, m["table"], m["where"])
        assert m["value"] == make_readme.fmt(row[m["column"]]), l
        if m["lo"] is not None:
            f = pd.read_csv(path.parent / "findings.csv", keep_default_na=False, na_values=[""])
            rec = f[(f.table == m["table"]) & (f.column == m["column"]) & (f["where"].fillna("") == (m["where"] or ""))].iloc[0]
            test_lo, test_hi = (make_readme.fmt(v) for v in (rec.ci_low, rec.ci_high))
            assert (m["lo"], m["hi"]) == (test_lo, test_hi), l

def test_statements_type_no_results_and_verdicts_are_known():
    for l in results_lines():
        m = LINE.match(l)
        assert m["verdict"] in VERDICTS, l
        # a typed-in result (a decimal or a percentage) in the words would bypass the table; settings such as
        # "α = 0.1", "T=0.8", "slack 0.040" or "budget 0.9 per layer" name the experiment, not its result, and are allowed
        words = re.sub(r"(α|δ|λ|θ|alpha|delta|slack|budget|within|T|k|m|N)\s*=?\s*\d+(\.\d+)?|95% CI|(ASC|ESC|OptScale\S*|VoteShare|BestOfN|CNTP)\s?\([^)]*\)", "", m["statement"])
        assert not re.search(r"\d+\.\d+|\d+\s?%", words), f"statement types a number; cite it instead: {l}"

def test_findings_files_match_their_tables():
    out = ROOT / "outputs"
    n = 0
    for name, folder in make_readme.study_folders(out):
        p = folder / "tables" / "findings.csv"
        if not p.exists(): continue
        for r in pd.read_csv(p, keep_default_na=False, na_values=[""]).itertuples():
            row = cited_row(folder / "tables", r.table, r.where if isinstance(r.where, str) and r.where else None)
            assert make_readme.fmt(row[r.column]) == make_readme.fmt(r.value), (name, r.statement)
            n += 1
    assert n >= 10

def test_negative_results_are_stated():
    verdicts = [LINE.match(l)["verdict"] for l in results_lines()]
    assert {"not reproduced", "negative", "does not hold"} & set(verdicts), "the README states no negative result"

def test_fmt():
    assert [make_readme.fmt(v) for v in (0.123456, 3.0, 12, "ltt", float("nan"), 1234.5)] == ["0.123", "3", "12", "ltt", "n/a", "1.23e+03"]

def test_every_link_in_the_readme_points_to_a_committed_file():
    "Gallery images and table links must exist: a renamed figure must not leave a broken image in the README."
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:outputs|data|nbs)/[^)#\s]+)\)", text)
    assert len(links) >= 10, f"expected the gallery and table links, found {len(links)}"
    missing = sorted({l for l in links if not (ROOT / l).exists()})
    assert missing == [], f"README links to files that do not exist: {missing}"
