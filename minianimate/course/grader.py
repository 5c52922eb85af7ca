"""The course's grader: a student's function against minianimate's own, on random inputs, one line per verdict.

`check("attention", attention)` runs the exercise's visible inputs (a few shapes and seeds) through the
student's function and through the library, compares them (shape, dtype, then values with `allclose`) and
returns a `Result` whose one-line repr says what is wrong and where. It never raises, so a notebook whose
functions still `raise NotImplementedError` runs to the end. `hidden=True` runs more seeds and shapes: what
`grade_notebook` (`python -m minianimate.course grade`) uses for the final score.

While the student's function runs, the library's own version of the exercise is unreachable (`unreachable`): it
raises `Delegated`, so `return block(x)` or `from minianimate.ddim import classifier_free_guidance` is the verdict
"the exercise must not call minianimate.ddim.classifier_free_guidance; write it yourself", not a pass.
"""
import functools
import importlib
import json
import linecache
import sys
import sysconfig
import traceback
import types
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import minianimate
from minianimate.course.exercises import EXERCISES, NOTEBOOKS

# Frames of these files are the library's, not the student's: an exception is reported at the student's line.
_NOT_STUDENT = tuple({str(Path(minianimate.__file__).parent),
                      *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib"))})
REPORT_TAG = "MINIANIMATE_COURSE_REPORT"


@dataclass
class Result:
    """One check's verdict. kind: passed, not implemented, missing, delegated (called the library's own version),
    exception, type, shape, dtype or values."""

    name: str
    kind: str
    message: str
    cases: int  # inputs compared before the verdict (all of them when passed)

    def __bool__(self) -> bool:
        return self.kind == "passed"

    def __repr__(self) -> str:
        return f"{'✓' if self else '✗'} {self.name}: {self.message}"


def check(name: str, fn, hidden: bool = False) -> Result:
    """Compare `fn` with minianimate's version of exercise `name` on every input; the first difference is the
    verdict. hidden=False: the notebook's few inputs; True: more seeds and shapes (the final grade)."""
    if name not in EXERCISES:
        return Result(name, "missing", f"no exercise called {name!r}; the exercises are {', '.join(EXERCISES)}", 0)
    exercise = EXERCISES[name]
    if not callable(fn):
        return Result(name, "missing", f"expected a function (or class), got {type(fn).__name__}", 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny inputs: one thread is fastest, and on a busy machine by far
    try:
        with torch.random.fork_rng():  # building the references draws from torch's global generator: restore it
            return _run(exercise, fn, hidden)
    finally:
        torch.set_num_threads(threads)


def _run(exercise, fn, hidden: bool) -> Result:
    name, n = exercise.name, 0
    itself = library_version(fn, exercise.forbid)
    if itself:
        return Result(name, "delegated", f"{name} is {itself} itself: the exercise must not call it; "
                                         f"write it yourself", 0)
    for n, case in enumerate(exercise.cases(hidden), 1):
        try:
            with unreachable(exercise.forbid, fn):
                got = case.run(fn)
        except Delegated as e:
            qualname, lineno, line = _student_frame(e)
            return Result(name, "delegated", f"the exercise must not call {e.name} (in {qualname}, line {lineno}: "
                                             f"{line}); write it yourself", n - 1)
        except NotImplementedError as e:
            frame = _student_frame(e)
            message = f"not implemented yet: {frame[0]} still raises NotImplementedError"
            return Result(name, "not implemented", message, n - 1)
        except Exception as e:  # a student's bug: report it, never raise
            qualname, lineno, line = _student_frame(e)
            text = str(e).strip().splitlines()[0][:160].rstrip(".") if str(e).strip() else ""
            return Result(name, "exception", f"raised {type(e).__name__} for {case.label}: {text} "
                                             f"(in {qualname}, line {lineno}: {line})", n - 1)
        verdict = compare(case.expected, got)
        if verdict:
            kind, headline, detail = verdict
            hint = f" Hint: {exercise.hint}" if kind == "values" and exercise.hint else ""
            return Result(name, kind, f"{headline} for {case.label}: {detail}.{hint}", n - 1)
    return Result(name, "passed", f"matches minianimate on {n} inputs ({exercise.reference})", n)


# --- the library's own versions of an exercise, out of reach while the student's function runs ----------------
class Delegated(Exception):
    """Raised by a library function that the running exercise must not call; `name` is its dotted name."""

    def __init__(self, name: str):
        super().__init__(f"the exercise must not call {name}; write it yourself")
        self.name = name


def resolve(dotted: str) -> tuple[object, str]:
    """'minianimate.ddim.DDIM.step' -> (the class DDIM, 'step'): the longest importable module, then attributes.
    The attribute must be the owner's own (in its __dict__), not inherited."""
    path, attr = dotted.rsplit(".", 1)
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        owner = functools.reduce(getattr, parts[i:], owner)
        if attr not in vars(owner):
            raise AttributeError(f"{path} defines no {attr!r} of its own (forbidden name {dotted!r})")
        return owner, attr
    raise ModuleNotFoundError(f"no module in {dotted!r}")


def _function(value):
    """The function behind a value: a bound method's, a classmethod's or a partial's; else the value itself."""
    if isinstance(value, functools.partial):
        return _function(value.func)
    return value.__func__ if isinstance(value, (types.MethodType, classmethod, staticmethod)) else value


def library_version(fn, names: tuple[str, ...]) -> str | None:
    """The dotted name in `names` that `fn` is (the library's function handed in as the student's), else None."""
    for dotted in names:
        owner, attr = resolve(dotted)
        if _function(fn) is _function(vars(owner)[attr]):
            return dotted.removesuffix(".__init__")
    return None


def _namespaces(fn) -> list[dict]:
    """The global namespaces the student's function (or class) looks its names up in."""
    fn = _function(fn)
    functions = [_function(f) for f in vars(fn).values()] if isinstance(fn, type) else [fn]
    return [f.__globals__ for f in functions if isinstance(f, types.FunctionType)]


@contextmanager
def unreachable(names: tuple[str, ...], fn=None):
    """While the block runs, each library function in `names` (dotted) raises `Delegated`, however the code reaches
    it: on its class, or under any name that holds it in its module, in a minianimate module, or in the namespace
    `fn` was written in (an import, an alias). Everything is put back when the block ends."""
    swaps, namespaces, undo = [], [], []  # (original, stub); dicts to search; (class or dict, key, value to restore)
    try:
        for dotted in names:
            owner, attr = resolve(dotted)
            swaps.append((_function(vars(owner)[attr]), _raiser(dotted.removesuffix(".__init__"))))
            if isinstance(owner, type):
                undo.append((owner, attr, _put(owner, attr, swaps[-1][1])))
            else:
                namespaces.append(vars(owner))
        namespaces += [vars(m) for key, m in list(sys.modules.items())
                       if key.split(".")[0] == "minianimate" and isinstance(m, types.ModuleType)]
        for namespace in {id(ns): ns for ns in namespaces + _namespaces(fn)}.values():
            for key, value in list(namespace.items()):
                for original, stub in swaps:
                    if _function(value) is original:
                        undo.append((namespace, key, _put(namespace, key, stub)))
        yield
    finally:
        for where, key, value in reversed(undo):
            _put(where, key, value)


def _put(where, key: str, value):
    """Set `key` of a namespace dict or a class to `value`; return what it held."""
    if isinstance(where, dict):
        old, where[key] = where[key], value
        return old
    old = vars(where)[key]
    setattr(where, key, value)
    return old


def _raiser(name: str):
    def unreachable_library_function(*args, **kwargs):
        raise Delegated(name)
    return unreachable_library_function


def compare(expected, got, what: str = "") -> tuple[str, str, str] | None:
    """None if `got` matches `expected` (a tensor, a list of lists of ints, or a dict of them), else
    (kind, headline, detail): ("shape", "wrong shape", "expected (2, 5, 8), got (2, 8, 5)")."""
    prefix = f"{what}: " if what else ""
    if got is None:
        return "not implemented", f"{prefix}returned None", f"not implemented yet? expected {_describe(expected)}"
    if isinstance(expected, dict):
        for key, value in expected.items():
            verdict = compare(value, got.get(key) if isinstance(got, dict) else got, key)
            if verdict:
                return verdict
        return None
    if isinstance(expected, list):
        try:
            got = [[int(i) for i in window] for window in got]
        except (TypeError, ValueError):
            return "type", f"{prefix}wrong type", f"expected a list of lists of frame indices, got {type(got).__name__}"
        if got != expected:
            kind = "shape" if len(got) != len(expected) else "values"
            return kind, f"{prefix}wrong windows", f"expected {_windows(expected)}, got {_windows(got)}"
        return None
    if not isinstance(got, torch.Tensor):
        return "type", f"{prefix}wrong type", f"expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return "shape", f"{prefix}wrong shape", f"expected {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        return "dtype", f"{prefix}wrong dtype", f"expected {expected.dtype}, got {got.dtype}"
    return _values(expected, got.detach(), prefix)


def _values(expected: torch.Tensor, got: torch.Tensor, prefix: str, atol: float = 1e-5, rtol: float = 1e-4):
    """allclose, and where not: how many elements, the worst one, how far."""
    expected, got = expected.double().cpu(), got.double().cpu()
    diff = (got - expected).abs().nan_to_num(float("inf"))
    tolerance = atol + rtol * expected.abs()
    bad = diff > tolerance
    if not bad.any():
        return None
    flat = int((diff - tolerance).flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), expected.shape)) if expected.ndim else ()
    where = f"{int(bad.sum())} of {bad.numel()} elements differ, the worst at {list(index)}: " if index else ""
    return "values", f"{prefix}wrong values", (
        f"{where}expected {expected[index].item():.5g}, got {got[index].item():.5g} "
        f"(|diff| {diff[index].item():.2g} > tolerance {tolerance[index].item():.1g})")


def _describe(expected) -> str:
    if isinstance(expected, torch.Tensor):
        return f"a tensor of shape {tuple(expected.shape)}"
    return "a list of windows" if isinstance(expected, list) else "a value"


def _windows(windows: list[list[int]]) -> str:
    """[[0..15], [8..23]]: contiguous runs shortened."""
    def one(w):
        return f"[{w[0]}..{w[-1]}]" if len(w) > 2 and w == list(range(w[0], w[0] + len(w))) else str(w)
    return f"{len(windows)} window{'' if len(windows) == 1 else 's'} [{', '.join(one(w) for w in windows)}]"


def _student_frame(error: BaseException) -> tuple[str, int, str]:
    """(function, line number, source line) of the deepest frame outside minianimate, torch and the stdlib."""
    frames = list(traceback.walk_tb(error.__traceback__))
    mine = [(f, n) for f, n in frames if not f.f_code.co_filename.startswith(_NOT_STUDENT)] or frames[-1:]
    frame, lineno = mine[-1]
    code = frame.f_code
    return (getattr(code, "co_qualname", code.co_name), lineno,
            linecache.getline(code.co_filename, lineno, frame.f_globals).strip() or "?")


# --- the final grade: run a notebook, then every hidden check in its kernel ---------------------------------
def report(names: list[str], namespace: dict) -> None:
    """Print one tagged JSON line: the hidden check of each exercise, on the functions defined in `namespace`.
    The cell `grade_notebook` appends to a student's notebook calls this."""
    results = []
    for name in names:
        fn = namespace.get(name)
        result = check(name, fn, hidden=True) if fn is not None else Result(name, "missing", "not defined", 0)
        results.append(asdict(result))
    print(REPORT_TAG, json.dumps(results))


def notebook_exercises(path: Path) -> list[str]:
    """The exercises of a course notebook, by its number: '02_temporal_tokens_alice.ipynb' -> notebook 02's."""
    number = Path(path).name[:2]
    for stem, names in NOTEBOOKS.items():
        if stem[:2] == number:
            return names
    raise ValueError(f"{path}: not a course notebook (its name must start with one of "
                     f"{', '.join(s[:2] for s in NOTEBOOKS)}, the number of the notebook it answers)")


def grade_notebook(path, timeout: int = 120, kernel: str = "python3") -> list[Result]:
    """Execute a student's notebook in a fresh Jupyter kernel `kernel`, which must import minianimate (a cell's error
    does not stop it; a cell may take `timeout` seconds), then run the hidden check of each exercise in that kernel."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    names = notebook_exercises(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("from minianimate.course.grader import report as _report\n"
                                              f"_report({names!r}, globals())"))
    try:
        NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except Exception as e:  # a cell over the timeout, a dead kernel
        return [Result(n, "exception", f"the notebook did not finish: {type(e).__name__}: "
                                       f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}", 0)
                for n in names]
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next((ln for ln in text.splitlines() if ln.startswith(REPORT_TAG)), None)
    if line is None:
        error = next((f"{o.ename}: {o.evalue}" for o in nb.cells[-1].outputs if o.output_type == "error"), "no output")
        if "No module named 'minianimate" in error:
            error += (f" (the kernel {kernel!r} runs a Python without minianimate: install it there, or grade with "
                      f"--kernel naming one that has it)")
        return [Result(n, "exception", f"the grading cell failed: {error[:300]}", 0) for n in names]
    return [Result(**r) for r in json.loads(line.removeprefix(REPORT_TAG))]


def score_table(graded: dict[str, list[Result]]) -> str:
    """One row per exercise: notebook, exercise, point, the verdict's line; the total at the end."""
    width = max([len("notebook")] + [len(Path(p).name) for p in graded])
    rows, total, points = [], 0, 0
    for path, results in graded.items():
        for r in results:
            verdict = f"{'✓' if r else '✗'} {r.message}"
            rows.append(f"{Path(path).name:<{width}}  {r.name:<24}  {int(bool(r))}/1     {verdict}")
            total, points = total + 1, points + bool(r)
    return "\n".join([f"{'notebook':<{width}}  {'exercise':<24}  points  verdict on the hidden inputs", *rows,
                      f"{'total':<{width}}  {'':<24}  {points}/{total}"])
