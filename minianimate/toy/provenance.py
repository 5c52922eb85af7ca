"""Where a stored measurement comes from: the commit it ran on and the checkpoint files it read.

Every json under benchmarks/results/ carries `"provenance": provenance(...)`, so a figure can be traced to the
weights that made it (a retrained checkpoint has another sha256) and to the code (the commit; `dirty` if tracked
files differed from it when the measurement ran).
"""
import hashlib
import subprocess
from pathlib import Path

from minianimate.toy.models import CHECKPOINTS, FILES

REPOSITORY = Path(__file__).resolve().parent.parent.parent


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_hashes(*names: str, root: Path | str | None = None) -> dict[str, str]:
    """{file relative to the checkpoint folder: sha256} for the shipped files `names` (keys of FILES, e.g. 'base',
    'motion'); a folder ('base' is unet_base/) gives one entry per file in it."""
    root = Path(root or CHECKPOINTS)
    hashes = {}
    for name in names:
        path = root / FILES[name]
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        hashes.update({p.relative_to(root).as_posix(): sha256(p) for p in files if p.exists()})
    return hashes


def commit() -> dict:
    """{"commit": HEAD's sha} and "dirty": True when tracked files differ from it; {"commit": None} outside a git
    checkout (an installed package)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": head, **({"dirty": True} if dirty else {})}


def provenance(*names: str, root: Path | str | None = None, **extra) -> dict:
    """What to store beside a measurement: the commit, the sha256 of the checkpoint files `names` it read from `root`
    (the shipped folder by default), and any `extra` fields (a step, a note)."""
    return {**commit(), "checkpoints": checkpoint_hashes(*names, root=root), **extra}
