"""Fail if `nbdev_clean` or `nbdev_export` would change any file.

Run by `make test`. Works on a dirty tree too: it compares file hashes before and
after, so it reports exactly the notebooks that are not clean and the modules
that are out of sync with their notebooks.
"""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

def snapshot():
    files = sorted([*ROOT.glob("nbs/**/*.ipynb"), *ROOT.glob("adalib/**/*.py")])
    return {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

def main():
    before = snapshot()
    nbs = [str(p) for p in sorted(ROOT.glob("nbs/**/*.ipynb")) if ".ipynb_checkpoints" not in str(p)]
    for folder in sorted({str(Path(nb).parent) for nb in nbs}):  # one process per folder
        subprocess.run([str(BIN / "nbdev_clean"), "--fname", folder], check=True, cwd=ROOT)
    subprocess.run([str(BIN / "nbdev_export")], check=True, cwd=ROOT)
    after = snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        print("check-sync FAILED: these files changed under nbdev_clean/nbdev_export:")
        for c in changed:
            print("  ", c)
        print("Notebooks must be committed clean and adalib/ must be exported from them "
              "(never edited by hand). Review `git diff` and commit.")
        sys.exit(1)
    readme = subprocess.run([sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check"], cwd=ROOT)
    if readme.returncode: sys.exit(1)
    data = subprocess.run([sys.executable, str(ROOT / "tools" / "data_readme.py"), "--check"], cwd=ROOT)
    if data.returncode: sys.exit(1)
    print(f"check-sync ok: {len(nbs)} notebooks clean, library in sync")

if __name__ == "__main__":
    main()
