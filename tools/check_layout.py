"""Check the size and placement rules of ARCHITECTURE.md ("Rules the layout keeps").

    python tools/check_layout.py          # prints the report, exits 1 on a violation

- every library module (adalib/*.py, `_modidx.py` excepted) has at most MAX_MODULE lines;
- every function or method has at most MAX_FUNC lines, unless it is named in ALLOW_LONG with a reason;
- study notebooks (nbs/studies/*.ipynb) define no function or class except plotting glue: a function
  whose name starts with `plot_` (small figure helpers); all other logic lives in the library.
"""
import ast, json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE, MAX_FUNC = 520, 60  # "about 500" lines per module (a class is not split to save a dozen lines)
# "module.qualname": why it may be longer than MAX_FUNC lines
ALLOW_LONG: dict = {}


def module_sizes(root=ROOT) -> dict:
    return {p.name: len(p.read_text().splitlines()) for p in sorted((root / "adalib").glob("*.py"))
            if p.name != "_modidx.py"}


def long_functions(root=ROOT, limit=MAX_FUNC) -> dict:
    "qualified name -> line count of every function/method over `limit` lines in adalib/."
    out = {}
    for p in sorted((root / "adalib").glob("*.py")):
        tree = ast.parse(p.read_text())
        def walk(node, prefix):
            for ch in ast.iter_child_nodes(node):
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{ch.name}"
                    if not isinstance(ch, ast.ClassDef):
                        n = ch.end_lineno - ch.lineno + 1
                        if n > limit: out[f"{p.stem}.{name}"] = n
                    walk(ch, name + ".")
        walk(tree, "")
    return out


def study_definitions(root=ROOT) -> dict:
    "study -> names of functions/classes it defines that are not plotting glue (`plot_*`)."
    out = {}
    for nb in sorted((root / "nbs" / "studies").glob("*.ipynb")):
        names = []
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] != "code": continue
            src = "".join(c["source"])
            src = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, ast.ClassDef) or (
                        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("plot_")):
                    names.append(node.name)
        if names: out[nb.stem] = names
    return out


def problems(root=ROOT) -> list:
    errs = [f"adalib/{m} has {n} lines (limit {MAX_MODULE}): split it by concern"
            for m, n in module_sizes(root).items() if n > MAX_MODULE]
    errs += [f"{f} has {n} lines (limit {MAX_FUNC}): split it into named helpers, or add it to "
             f"tools/check_layout.py ALLOW_LONG with the reason" for f, n in long_functions(root).items() if f not in ALLOW_LONG]
    errs += [f"nbs/studies/{s}.ipynb defines {', '.join(ns)}: move the logic into a library notebook "
             f"(only `plot_*` glue may live in a study)" for s, ns in study_definitions(root).items()]
    return errs


if __name__ == "__main__":
    errs = problems()
    for e in errs: print(e)
    print(f"check-layout: {len(errs)} problem(s); modules: " +
          ", ".join(f"{m} {n}" for m, n in module_sizes().items()))
    sys.exit(1 if errs else 0)
