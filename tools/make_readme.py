"""Write README.md from nbs/index.ipynb (markdown cells verbatim, code cells as fenced blocks).

nbdev_readme needs Quarto, which this project does not install; this does the same job for the
README. `make test` (tools/check_sync.py) fails if README.md is out of date.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    parts = ["<!-- generated from nbs/index.ipynb by tools/make_readme.py; edit the notebook, not this file -->"]
    for c in nb["cells"]:
        src = "".join(c["source"]).strip()
        if not src or src.startswith("#| hide"): continue
        parts.append(src if c["cell_type"] == "markdown" else f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if (ROOT / "README.md").read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run `.venv/bin/python tools/make_readme.py`")
            sys.exit(1)
    else:
        (ROOT / "README.md").write_text(text)
