"The layout rules of ARCHITECTURE.md hold on the repository, and the checker catches each kind of breach."
import importlib.util, json
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_layout", ROOT / "tools" / "check_layout.py")
cl = importlib.util.module_from_spec(spec); spec.loader.exec_module(cl)


def test_repository_keeps_the_layout_rules():
    assert cl.problems() == []


def test_every_design_reference_points_into_architecture():
    arch = (ROOT / "ARCHITECTURE.md").read_text()
    assert "## Where does my change go" in arch
    stale = [str(p.relative_to(ROOT)) for p in ROOT.glob("nbs/**/*.ipynb") if "DESIGN §" in p.read_text()]
    assert stale == [], f"notebooks still cite 'DESIGN §' (a document outside the repository): {stale}"


def _fake_repo(tmp_path, module_src, study_src="x = 1"):
    (tmp_path / "adalib").mkdir(); (tmp_path / "nbs" / "studies").mkdir(parents=True)
    (tmp_path / "adalib" / "m.py").write_text(module_src)
    cell = {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "execution_count": None, "source": study_src}
    (tmp_path / "nbs" / "studies" / "s99_x.ipynb").write_text(json.dumps({"cells": [cell]}))
    return tmp_path


def test_checker_flags_long_module_long_function_and_study_logic(tmp_path):
    body = "def f():\n" + "    x = 1\n" * 70
    root = _fake_repo(tmp_path, body + "\n" * 450, "%matplotlib inline\ndef helper(): pass\ndef plot_ok(): pass")
    errs = cl.problems(root)
    assert any("adalib/m.py has" in e for e in errs)
    assert any(e.startswith("m.f has 71 lines") for e in errs)
    assert any("s99_x.ipynb defines helper" in e for e in errs) and not any("plot_ok" in e for e in errs)


def test_checker_accepts_a_clean_tree(tmp_path):
    assert cl.problems(_fake_repo(tmp_path, "def f():\n    return 1\n", "def plot_bars(ax): pass")) == []
