"""Re-execute the notebooks in quick mode and store their outputs in place: `make notebooks`.

    python notebooks/run_notebooks.py                      # every notebook, in order
    python notebooks/run_notebooks.py 06 07                # some of them (by number or file name)

The stored outputs are what a reader sees on GitHub, so they come from one commit: the run refuses a working tree
whose tracked files differ from HEAD (commit first; `--dirty` runs anyway and says so in the metadata), and records
the commit in each notebook's metadata, `"minianimate": {"commit": ..., "quick": true}`. tests/test_notebooks.py
checks that every notebook carries the same clean commit and that its code cells are that commit's.
"""
import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_BYTES = 2_000_000  # a stored notebook stays readable on a web page


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()


def sources(text: str) -> list[str]:
    return [cell.source for cell in nbformat.reads(text, as_version=4).cells]


def provenance(allow_dirty: bool) -> dict:
    """The commit the outputs come from; refuses (or, with allow_dirty, records) tracked files that differ from it.
    A notebook whose cells are HEAD's and only its outputs differ (an earlier, interrupted run) does not count."""
    dirty = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if not (line.endswith(".ipynb") and (ROOT / line[3:]).exists()
                     and sources((ROOT / line[3:]).read_text()) == sources(git("show", f"HEAD:{line[3:]}")))]
    if dirty and not allow_dirty:
        sys.exit("error: tracked files differ from HEAD, so the outputs would come from no commit:\n  "
                 + "\n  ".join(dirty) + "\ncommit them first (or pass --dirty to run anyway)")
    return {"commit": git("rev-parse", "HEAD"), "quick": True, **({"dirty": True} if dirty else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="numbers or file names (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds a cell may take")
    parser.add_argument("--dirty", action="store_true", help="run on a working tree that differs from HEAD")
    args = parser.parse_args()
    paths = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if any(p.name.startswith(n) for n in args.notebooks)]
    stamp = provenance(args.dirty)
    os.environ["MINIANIMATE_QUICK"] = "1"  # the kernels inherit it: quick mode (and OMP_NUM_THREADS if set)
    total, failed = time.perf_counter(), []
    for path in paths:
        started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)  # no timestamps: the diff shows what changed
        try:
            NotebookClient(nb, timeout=args.timeout, kernel_name="python3", record_timing=False,
                           resources={"metadata": {"path": str(HERE)}}).execute()
        except (CellExecutionError, CellTimeoutError, DeadKernelError, AssertionError) as err:  # a dead kernel's
            failed.append(f"{path.name}: {type(err).__name__} {str(err).strip()[-200:]}")  # clean-up asserts
        nb.metadata["minianimate"] = stamp
        nbformat.write(nb, path)
        size = path.stat().st_size
        used = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel's CPU time: its wall time on an idle machine
        cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
        notes = ["over the 2 MB limit"] * (size > MAX_BYTES)
        notes += ["FAILED"] * bool(failed and failed[-1].startswith(path.name))
        print(f"{path.name}: {time.perf_counter() - started:.0f} s ({cpu_seconds:.0f} s of CPU), {size / 1e6:.2f} MB"
              + "".join(f"  ({note})" for note in notes), flush=True)
    print(f"{len(paths)} notebooks in {time.perf_counter() - total:.0f} s, commit {stamp['commit'][:12]}")
    if failed:
        sys.exit("failed:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
