"""Edit nbdev notebooks as plain text, keeping cell ids (so `adalib/*.py` does not churn).

    python tools/nbpy.py topy nbs/07b_stopping.ipynb  > /tmp/07b.py    # notebook -> percent script
    python tools/nbpy.py tonb /tmp/07b.py nbs/07b_stopping.ipynb      # percent script -> notebook

Each cell starts with a marker line:

    # %% [code] id=895ab45c
    # %% [markdown] id=7da53667
    # %% [code] id=56139d93 meta={"tags": ["parameters"]}

Markdown cells are written as-is (not commented). A new cell may omit `id=`; a fresh id is made
from the cell's content, so converting twice gives the same notebook. Outputs are dropped (the
notebooks are committed clean). Run `nbdev_clean` and `nbdev_export` afterwards as usual.
"""
import hashlib, json, re, sys
from pathlib import Path

MARK = re.compile(r"^# %% \[(code|markdown|raw)\](?: id=(\S+))?(?: meta=(.*))?$")


def to_py(nb_path) -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb["cells"]:
        head = f"# %% [{c['cell_type']}] id={c['id']}"
        if c.get("metadata"): head += " meta=" + json.dumps(c["metadata"], sort_keys=True)
        src = "".join(c["source"])
        out.append(head + "\n" + src + ("\n" if not src.endswith("\n") else ""))
    return "".join(out)


def _lines(src: str) -> list:
    ls = src.splitlines(keepends=True)
    if ls and ls[-1].endswith("\n"): ls[-1] = ls[-1][:-1]
    return ls


def to_nb(py_text: str, nb_path):
    p = Path(nb_path)
    meta = json.loads(p.read_text())["metadata"] if p.exists() else {
        "kernelspec": {"display_name": "python3", "language": "python", "name": "python3"}}
    cells, cur = [], None
    for line in py_text.splitlines(keepends=True):
        m = MARK.match(line.rstrip("\n"))
        if m:
            cur = {"type": m[1], "id": m[2], "meta": json.loads(m[3]) if m[3] else {}, "src": []}
            cells.append(cur)
        elif cur is None:
            if line.strip(): raise SystemExit(f"text before the first '# %% [...]' marker: {line!r}")
        else:
            cur["src"].append(line)
    seen, out = set(), []
    for i, c in enumerate(cells):
        src = "".join(c["src"]).rstrip("\n")
        cid = c["id"] or hashlib.sha1(f"{i}:{src}".encode()).hexdigest()[:8]
        if cid in seen: raise SystemExit(f"duplicate cell id {cid}; remove the id= of the copied cell")
        seen.add(cid)
        cell = {"cell_type": c["type"], "id": cid, "metadata": c["meta"], "source": _lines(src)}
        if c["type"] == "code": cell = {"cell_type": "code", "execution_count": None, "id": cid,
                                         "metadata": c["meta"], "outputs": [], "source": _lines(src)}
        out.append(cell)
    nb = {"cells": out, "metadata": meta, "nbformat": 4, "nbformat_minor": 5}
    p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "topy": sys.stdout.write(to_py(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "tonb": to_nb(Path(sys.argv[2]).read_text(), sys.argv[3])
    else: raise SystemExit(__doc__)
