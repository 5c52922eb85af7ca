"""The course kit (course/, minianimate/course/): student notebooks built from the solutions, every solution passing,
every student check failing with its message, and the grader catching the plausible mistakes (mutants).
Delegations to the library's own versions: tests/test_course_cheats.py."""
import math
import re
import time
import tomllib
from functools import partial
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from IPython.core.inputtransformer2 import TransformerManager
from torch import nn

from minianimate.context import ContextWindows, context_windows as library_windows
from minianimate.course import check
from minianimate.course.__main__ import main
from minianimate.course.build import BEGIN, END, STUDENT_LINE, build, cut_solutions
from minianimate.course.exercises import EXERCISES, NOTEBOOKS, window_weights as reference_weights

ROOT = Path(__file__).resolve().parents[1]
SOURCE, STUDENT = ROOT / "course" / "source", ROOT / "course" / "student"
CHECK_CELL = re.compile(r'check\("(\w+)", (\w+)\)')


def run_notebook(path: Path) -> tuple[dict, dict]:
    """Run a course notebook's code cells in this process, as its kernel would (magics included).
    Returns the value of each `check(...)` cell, by exercise, and the notebook's namespace."""
    transform, namespace, checks = TransformerManager().transform_cell, {"__name__": "__main__"}, {}
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type == "code":
            match = CHECK_CELL.fullmatch(cell.source.strip())
            if match:
                checks[match[1]] = eval(cell.source, namespace)
            else:
                exec(compile(transform(cell.source), f"{path.name}, cell {i}", "exec"), namespace)
    return checks, namespace


# --- one source --------------------------------------------------------------------------------------------------
def test_student_notebooks_are_the_build_of_the_solution_notebooks(tmp_path):
    """Fails when course/student/ drifts from course/source/: run `make exercises` and commit the result."""
    built = build(SOURCE, tmp_path)
    assert sorted(p.name for p in built) == sorted(p.name for p in STUDENT.glob("*.ipynb"))
    for path in built:
        assert path.read_text() == (STUDENT / path.name).read_text(), f"{path.name}: run `make exercises`"


def test_build_cuts_each_solution_to_one_raise_at_its_indentation():
    source = f"def f(x):\n    '''doc'''\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n\nf(1)"
    assert cut_solutions(source) == f"def f(x):\n    '''doc'''\n    {STUDENT_LINE}\n\nf(1)"


@pytest.mark.parametrize("source", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}"])
def test_build_refuses_unmatched_markers(source):
    with pytest.raises(ValueError, match="line"):
        cut_solutions(source, "nb.ipynb, cell 3")


def test_build_out_writes_the_student_set_elsewhere_with_badges_to_that_repository(tmp_path, capsys):
    """`build --out DIR --github URL`: the teacher's repository gets the student notebooks, nothing of the solutions."""
    out = tmp_path / "animate-course" / "notebooks"
    out.mkdir(parents=True)
    (out / "99_my_extra.ipynb").write_text("{}")  # a teacher's own notebook: left alone
    assert main(["build", "--out", str(out), "--github", "https://github.com/uni/animate-course/tree/spring/notebooks"]
                ) == 0
    assert capsys.readouterr().out.count("wrote ") == len(NOTEBOOKS)
    assert sorted(p.stem for p in out.glob("*.ipynb")) == sorted([*NOTEBOOKS, "99_my_extra"])
    theirs, ours = "uni/animate-course/blob/spring/notebooks/", "minianimate/minianimate/blob/main/course/student/"
    for stem in NOTEBOOKS:
        text = (out / f"{stem}.ipynb").read_text()
        assert f"colab.research.google.com/github/{theirs}{stem}.ipynb" in text
        assert "course/source" not in text and BEGIN not in text and END not in text
        assert text.replace(theirs, ours) == (STUDENT / f"{stem}.ipynb").read_text(), f"{stem}: not just the badge"


@pytest.mark.parametrize("args, error", [
    (["--out", str(SOURCE)], "is the solution folder: the student notebooks would overwrite the solutions"),
    (["--github", "github.com/uni/course"], "is not a GitHub folder address; expected https://github.com/ORG/REPO"),
])
def test_build_refuses_an_out_or_github_it_cannot_use(args, error, tmp_path, capsys):
    assert main(["build", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1, err


def test_what_you_built_links_to_the_repository_on_github():
    """Every file a course notebook's prose names is a link to it on GitHub, and the file exists."""
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    for path in sorted(SOURCE.glob("*.ipynb")) + sorted(STUDENT.glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
        assert "What you built" in cells[-1].source and f"]({url}/blob/main/" in cells[-1].source, path.name
        for name in re.findall(r"`((?:minianimate|notebooks|course|tests)/[\w/.-]+)`", prose):
            assert f"[`{name}`]({url}/blob/main/{name})" in prose, f"{path.name}: {name} is not a link to {url}"
            assert (ROOT / name).is_file(), f"{path.name} links to {name}, which the repository does not have"


def test_notebooks_hold_every_exercise_in_the_course_order():
    assert [p.stem for p in sorted(SOURCE.glob("*.ipynb"))] == list(NOTEBOOKS)
    for stem, names in NOTEBOOKS.items():
        cells = nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4).cells
        assert [m[1] for c in cells if (m := CHECK_CELL.fullmatch(c.source.strip()))] == names
    assert len(EXERCISES) >= 8


def test_no_solution_reaches_a_student_notebook():
    for path in STUDENT.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert BEGIN not in code and END not in code, path.name
        assert code.count(STUDENT_LINE) >= len(NOTEBOOKS[path.stem]), path.name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


def test_every_student_notebook_has_its_colab_badge_and_install_cell():
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_repo = url.removeprefix("https://github.com/")
    for path in sorted(STUDENT.glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        text = "".join(c.source for c in cells)
        first_code = next(c for c in cells if c.cell_type == "code").source
        assert f"colab.research.google.com/github/{owner_repo}/blob/main/course/student/{path.name}" in text
        assert f"%pip install -q git+{url}" in first_code, path.name
        assert set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", text)) <= {url}, path.name


# --- the notebooks, run -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", list(NOTEBOOKS))
def test_every_solution_passes_every_check_visible_and_hidden(stem):
    start = time.perf_counter()
    checks, namespace = run_notebook(SOURCE / f"{stem}.ipynb")
    assert list(checks) == NOTEBOOKS[stem] and all(checks.values()), checks
    for name in NOTEBOOKS[stem]:
        assert check(name, namespace[name], hidden=True), check(name, namespace[name], hidden=True)
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("stem", list(NOTEBOOKS))
def test_every_student_notebook_runs_to_the_end_with_each_check_failing_with_its_message(stem):
    checks, _ = run_notebook(STUDENT / f"{stem}.ipynb")
    assert list(checks) == NOTEBOOKS[stem]
    for name, result in checks.items():
        assert result.kind == "not implemented", result
        assert re.fullmatch(rf"✗ {name}: not implemented yet: {name}(\.\w+)? still raises NotImplementedError",
                            repr(result)), result


def test_grade_runs_a_notebook_in_a_kernel_and_prints_the_score_table(tmp_path, capsys):
    """One exercise of two done: 1/2, with each verdict on its line."""
    nb = nbformat.read(STUDENT / "06_ddim_and_guidance.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "def classifier_free_guidance" in c.source)
    cell.source = cell.source.replace(STUDENT_LINE, "return eps_uncond + scale * (eps_cond - eps_uncond)")
    nbformat.write(nb, tmp_path / "06_ddim_alice.ipynb")
    assert main(["grade", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"06_ddim_alice\.ipynb +ddim_step +0/1 +✗ not implemented yet", table), table
    assert re.search(r"classifier_free_guidance +1/1 +✓ matches minianimate on 50 inputs", table), table
    assert table.splitlines()[-1].split() == ["total", "1/2"]


def test_grade_refuses_a_kernel_jupyter_does_not_know_and_says_how_to_register_one(capsys):
    assert main(["grade", "--kernel", "no-such-kernel", str(STUDENT / "01_attention.ipynb")]) == 2
    err = capsys.readouterr().err
    assert "no Jupyter kernel called 'no-such-kernel' (there are: " in err
    assert "-m ipykernel install --user --name no-such-kernel" in err and len(err.strip().splitlines()) == 1, err


def test_grade_refuses_a_notebook_that_is_not_a_course_notebook(tmp_path, capsys):
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "homework.ipynb")
    assert main(["grade", str(tmp_path / "homework.ipynb")]) == 2
    assert "not a course notebook" in capsys.readouterr().err


# --- correct implementations, with a switch for each plausible mistake -------------------------------------------
def attention(q, k, v, softmax_dim=-1, scaled=True):
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scaled else 1)
    return scores.softmax(dim=softmax_dim) @ v


def to_temporal_tokens(x, num_frames, pattern="(b f) c h w -> (b h w) f c"):
    return rearrange(x, pattern, f=num_frames)


def positional_encoding(num_frames, dim, interleaved=True):
    angles = torch.arange(num_frames)[:, None] * torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    if not interleaved:
        return torch.cat([angles.sin(), angles.cos()], dim=-1)
    return rearrange(torch.stack([angles.sin(), angles.cos()], dim=-1), "f half two -> f (half two)")


def temporal_block(block, x, encode_before_norm=False):
    for norm, attn in [(block.norm1, block.attn1), (block.norm2, block.attn2)]:
        x = x + attn(norm(block.pos_embed(x)) if encode_before_norm else block.pos_embed(norm(x)))
    return x + block.ff(block.norm3(x))


def motion_module(module, x, num_frames, over="frames", norm_per_frame=False):
    b, height, width = x.shape[0] // num_frames, *x.shape[-2:]
    h = module.norm(x) if norm_per_frame else rearrange(
        module.norm(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames)), "b c f h w -> (b f) c h w")
    if over == "frames":
        h = rearrange(h, "(b f) c h w -> (b h w) f c", b=b)
    else:  # the mistake: attention among the pixels of each frame
        h = rearrange(h, "n c h w -> n (h w) c")
    h = module.proj_out(module.temporal(module.proj_in(h)))
    if over == "frames":
        return x + rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width)
    return x + rearrange(h, "n (h w) c -> n c h w", h=height)


def inflate(unet, sample, timestep, context, condition_fold="(b f)"):
    b, _, f = sample.shape[:3]
    t = repeat(torch.as_tensor(timestep).reshape(-1).expand(b), f"b -> {condition_fold}", f=f)
    out = unet(rearrange(sample, "b c f h w -> (b f) c h w"), t,
               repeat(context, f"b l d -> {condition_fold} l d", f=f))
    return rearrange(out, "(b f) c h w -> b c f h w", f=f)


class LoRALinear(nn.Module):
    def __init__(self, base, rank, alpha, scale_by_rank=True, skip_when_merged=True):
        super().__init__()
        self.base, self.scale = base, alpha / rank if scale_by_rank else alpha
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        self.merged, self.skip_when_merged = False, skip_when_merged

    def forward(self, x):
        in_the_weight = self.merged and self.skip_when_merged
        return self.base(x) + (0 if in_the_weight else self.scale * self.up(self.down(x)))

    @torch.no_grad()
    def merge(self):
        self.base.weight += self.scale * self.up.weight @ self.down.weight
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        self.base.weight -= self.scale * self.up.weight @ self.down.weight
        self.merged = False


def ddim_step(eps, t, x, ddim, abar="alphas_cumprod"):
    schedule = ddim.alphas_cumprod if abar == "alphas_cumprod" else 1 - ddim.betas  # the mistake: one step's alpha
    prev_t = t - ddim.num_train_timesteps // ddim.num_inference_steps
    a_t, a_prev = schedule[t], schedule[prev_t] if prev_t >= 0 else ddim.final_alpha_cumprod
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


def classifier_free_guidance(eps_uncond, eps_cond, scale, swapped=False):
    if swapped:  # the mistake: guidance from the conditional branch, towards the unconditional one
        eps_uncond, eps_cond = eps_cond, eps_uncond
    return eps_uncond + scale * (eps_cond - eps_uncond)


def clip_loss(model, x0, ddim, generator, noise_per_frame=True, timestep_per_frame=False):
    b, c, f, h, w = x0.shape
    noise = torch.randn((b, c, f if noise_per_frame else 1, h, w), generator=generator).expand(x0.shape)
    t = torch.randint(0, ddim.num_train_timesteps, (b * f if timestep_per_frame else b,), generator=generator)
    abar = ddim.alphas_cumprod[t].reshape(b, 1, -1, 1, 1)
    return F.mse_loss(model(abar.sqrt() * x0 + (1 - abar).sqrt() * noise, t), noise)


def context_windows(frames, window, overlap, flush_end=True):
    if window >= frames:
        return [list(range(frames))]
    starts = list(range(0, frames - window + 1, window - overlap))
    if flush_end and starts[-1] + window < frames:
        starts.append(frames - window)
    return [list(range(s, s + window)) for s in starts]


def window_weights(frames, window, overlap, normalised=True):
    weights = torch.zeros(len(context_windows(frames, window, overlap)), frames)
    for row, idx in enumerate(context_windows(frames, window, overlap)):
        weights[row, idx] = torch.minimum(torch.arange(1.0, len(idx) + 1), torch.arange(len(idx), 0.0, -1))
    return weights / weights.sum(0) if normalised else weights


def from_temporal_tokens(tokens, height, width):
    return rearrange(tokens, "(b h w) f c -> (b f) c h w", h=height, w=width)


CORRECT = {name: globals()[name] for name in EXERCISES}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_correct_implementations_pass_every_hidden_check(name):
    assert check(name, CORRECT[name], hidden=True)


# mistake -> (exercise, the mutant, the kind of verdict the grader must give)
MUTANTS = {
    "softmax over the wrong axis": ("attention", partial(attention, softmax_dim=-2), "values"),
    "no 1/sqrt(d) scale": ("attention", partial(attention, scaled=False), "values"),
    "attention in float32 whatever the inputs": ("attention", lambda q, k, v: attention(q.float(), k.float(),
                                                                                         v.float()), "dtype"),
    "tokens over space, not frames": ("to_temporal_tokens",
                                      partial(to_temporal_tokens, pattern="(b f) c h w -> (b f) (h w) c"), "shape"),
    "frames folded as (f b)": ("to_temporal_tokens",
                               partial(to_temporal_tokens, pattern="(f b) c h w -> (b h w) f c"), "values"),
    "sin and cos in two halves": ("positional_encoding", partial(positional_encoding, interleaved=False), "values"),
    "encoding added before the norm": ("temporal_block", partial(temporal_block, encode_before_norm=True), "values"),
    "motion module attends over space": ("motion_module", partial(motion_module, over="space"), "values"),
    "GroupNorm per frame, not per clip": ("motion_module", partial(motion_module, norm_per_frame=True), "values"),
    "timestep and text tiled (f b), not per frame (b f)": ("inflate", partial(inflate, condition_fold="(f b)"),
                                                           "values"),
    "LoRA scaled by alpha, not alpha / rank": ("LoRALinear", partial(LoRALinear, scale_by_rank=False), "values"),
    "merged LoRA adds its update twice": ("LoRALinear", partial(LoRALinear, skip_when_merged=False), "values"),
    "DDIM with alpha, not alpha-bar": ("ddim_step", partial(ddim_step, abar="alpha"), "values"),
    "guidance on the wrong branch": ("classifier_free_guidance", partial(classifier_free_guidance, swapped=True),
                                     "values"),
    "one noise for all frames": ("clip_loss", partial(clip_loss, noise_per_frame=False), "values"),
    "one timestep per frame": ("clip_loss", partial(clip_loss, timestep_per_frame=True), "exception"),
    "last window not flush with the end": ("context_windows", partial(context_windows, flush_end=False), "shape"),
    "weights not normalised per frame": ("window_weights", partial(window_weights, normalised=False), "values"),
}


@pytest.mark.parametrize("mistake", list(MUTANTS))
def test_the_grader_catches_the_mistake(mistake):
    name, mutant, kind = MUTANTS[mistake]
    for hidden in (False, True):
        result = check(name, mutant, hidden=hidden)
        assert result.kind == kind, result
        verb = "raised" if kind == "exception" else "wrong"
        assert "\n" not in repr(result) and re.match(rf"✗ {name}: ([\w.() ]+: )?{verb} ", repr(result)), result


# --- the verdicts' words ------------------------------------------------------------------------------------------
def test_wrong_values_say_where_and_how_far():
    result = check("attention", partial(attention, scaled=False))
    assert re.fullmatch(r"✗ attention: wrong values for q \(2, 5, 8\), k \(2, 5, 8\), v \(2, 5, 8\), seed 0: "
                        r"\d+ of 80 elements differ, the worst at \[\d, \d, \d\]: expected -?[\d.]+, got -?[\d.]+ "
                        r"\(\|diff\| [\d.e-]+ > tolerance [\d.e-]+\)\. Hint: .+", repr(result)), result


def test_wrong_shape_and_dtype_say_expected_and_got():
    shape = check("to_temporal_tokens", MUTANTS["tokens over space, not frames"][1])
    assert "wrong shape for x (6, 4, 2, 5), num_frames 3, seed 0: expected (20, 3, 4), got (6, 10, 4)" in repr(shape)
    dtype = repr(check("attention", MUTANTS["attention in float32 whatever the inputs"][1]))
    assert "wrong dtype for q (1, 2, 3, 8) float64" in dtype and "expected torch.float64, got torch.float32" in dtype


def test_an_exception_is_reported_with_the_students_line():
    def attention(q, k, v):
        scores = q @ k  # k not transposed
        return scores.softmax(-1) @ v

    result = check("attention", attention)
    assert result.kind == "exception"
    assert re.search(r"raised RuntimeError for q \(2, 5, 8\).*\(in .*attention, line \d+: scores = q @ k  # k not "
                     r"transposed\)$", repr(result)), result


def test_an_empty_body_and_a_wrong_name_are_verdicts_not_errors():
    def attention(q, k, v):
        ...

    assert "returned None for q (2, 5, 8)" in repr(check("attention", attention))
    assert check("attention", attention).kind == "not implemented"
    assert check("atention", attention).kind == "missing" and check("attention", None).kind == "missing"


def test_a_check_leaves_torchs_global_generator_as_it_was():
    state = torch.get_rng_state()
    check("inflate", CORRECT["inflate"])
    assert torch.equal(torch.get_rng_state(), state)


# --- the references that are the library's line, not a library function ------------------------------------------
def test_the_token_references_are_what_the_motion_module_does():
    from minianimate.course.exercises import randomize
    from minianimate.motion_module import MotionModule

    module, x = randomize(MotionModule(16, heads=2, groups=4), seed=0), torch.randn(2 * 3, 16, 4, 5)
    with torch.no_grad():
        h = module.norm(rearrange(x, "(b f) c h w -> b c f h w", f=3))
        tokens = module.temporal(module.proj_in(to_temporal_tokens(rearrange(h, "b c f h w -> (b f) c h w"), 3)))
        assert torch.allclose(x + from_temporal_tokens(module.proj_out(tokens), 4, 5), module(x, 3), atol=1e-6)


def test_the_window_weights_reference_is_how_context_windows_fuse():
    frames, window, overlap = 40, 16, 4
    predictions = []

    def model(x, t, context):  # a different random prediction per window
        predictions.append(torch.randn(x.shape))
        return predictions[-1]

    fused = ContextWindows(model, window, overlap)(torch.zeros(1, 2, frames, 1, 1), 0, torch.zeros(1, 1, 1))
    weights = reference_weights(frames, window, overlap)
    expected = torch.zeros(1, 2, frames, 1, 1)
    for w, (idx, eps) in enumerate(zip(library_windows(frames, window, overlap), predictions)):
        expected[:, :, idx] += weights[w, idx].reshape(1, 1, -1, 1, 1) * eps
    assert torch.allclose(fused, expected, atol=1e-6)


def test_the_attention_reference_is_what_attention_computes():
    from minianimate.attention import Attention

    attn = Attention(8, heads=1, head_dim=8)
    with torch.no_grad():
        for linear in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            linear.weight.copy_(torch.eye(8))
        attn.to_out[0].bias.zero_()
        x = torch.randn(2, 5, 8)
        assert torch.allclose(attn(x), F.scaled_dot_product_attention(x, x, x), atol=1e-6)
