"""The course cannot be passed by calling the library: each exercise's own version in minianimate (or torch) raises
while the student's function runs, so a delegation is the verdict "the exercise must not call X; write it yourself".
The shipped solutions still pass (tests/test_course.py runs every solution notebook through every check)."""
import dataclasses
import re

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minianimate.context
import minianimate.ddim
import minianimate.sampling
from minianimate.context import context_windows as library_windows, fuse_weights
from minianimate.course import check
from minianimate.course.__main__ import main
from minianimate.course.build import STUDENT_LINE
from minianimate.course.exercises import EXERCISES, window_weights as reference_weights
from minianimate.course.grader import Delegated, resolve, unreachable
from minianimate.ddim import classifier_free_guidance as library_guidance
from minianimate.inflation import MotionUNet
from minianimate.lora import LowRank
from minianimate.motion_module import MotionModule, PositionalEncoding, TemporalTransformerBlock
from minianimate.stages import diffusion_loss
from test_course import STUDENT


# --- the delegations: each the library's own version of the exercise, called instead of written ------------------
class LoRALinear(nn.Module):
    """The notebook's __init__; the update and its merge from the library's LowRank, which reads these attributes."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base, self.rank, self.alpha, self.merged = base, rank, alpha, False
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)

    def forward(self, x):
        return self.base(x) + (0 if self.merged else LowRank.forward(self, x))

    @torch.no_grad()
    def merge(self):
        self.base.weight += LowRank.delta_weight(self)
        self.merged = True

    @torch.no_grad()
    def unmerge(self):
        self.base.weight -= LowRank.delta_weight(self)
        self.merged = False


class NoText:
    def encode_prompt(self, prompts):
        return None


def pyramid_window_weights(frames, window, overlap):
    """window_weights with the library's pyramid (fuse_weights) instead of one's own."""
    windows = library_windows(frames, window, overlap)
    weights = torch.zeros(len(windows), frames)
    for row, idx in enumerate(windows):
        weights[row, idx] = fuse_weights(window)[: len(idx)]
    return weights / weights.sum(0)


# description -> (exercise, the delegation, the library function the verdict names)
CHEATS = {
    "attention: torch's fused attention": (
        "attention", lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        "torch.nn.functional.scaled_dot_product_attention"),
    "attention: torch's fused attention, handed in as is": (
        "attention", F.scaled_dot_product_attention, "torch.nn.functional.scaled_dot_product_attention"),
    "positional_encoding: the library's table": (
        "positional_encoding", lambda num_frames, dim: PositionalEncoding(dim, num_frames).pe[0],
        "minianimate.motion_module.PositionalEncoding"),
    "positional_encoding: the table inside a motion module": (
        "positional_encoding",
        lambda num_frames, dim: MotionModule(dim, 1, num_frames, 1).transformer_blocks[0].pos_embed.pe[0],
        "minianimate.motion_module.PositionalEncoding"),
    "temporal_block: return block(x)": (
        "temporal_block", lambda block, x: block(x), "minianimate.motion_module.TemporalTransformerBlock.forward"),
    "temporal_block: the class's forward": (
        "temporal_block", lambda block, x: TemporalTransformerBlock.forward(block, x),
        "minianimate.motion_module.TemporalTransformerBlock.forward"),
    "motion_module: return module(x, num_frames)": (
        "motion_module", lambda module, x, num_frames: module(x, num_frames),
        "minianimate.motion_module.MotionModule.forward"),
    "inflate: MotionUNet.from_unet": (
        "inflate", lambda unet, sample, t, context: MotionUNet.from_unet(unet)(sample, t, context),
        "minianimate.inflation.MotionUNet.from_unet"),
    "LoRALinear: LowRank's forward and delta_weight": ("LoRALinear", LoRALinear, "minianimate.lora.LowRank.forward"),
    "ddim_step: ddim.step": ("ddim_step", lambda eps, t, x, ddim: ddim.step(eps, t, x), "minianimate.ddim.DDIM.step"),
    "classifier_free_guidance: imported in place of one's own": (
        "classifier_free_guidance", library_guidance, "minianimate.ddim.classifier_free_guidance"),
    "classifier_free_guidance: called under an alias": (
        "classifier_free_guidance", lambda uncond, cond, scale: library_guidance(uncond, cond, scale),
        "minianimate.ddim.classifier_free_guidance"),
    "classifier_free_guidance: from another module that imported it": (
        "classifier_free_guidance",
        lambda uncond, cond, scale: minianimate.sampling.classifier_free_guidance(uncond, cond, scale),
        "minianimate.ddim.classifier_free_guidance"),
    "clip_loss: diffusion_loss": (
        "clip_loss", lambda model, x0, ddim, generator: diffusion_loss(
            model, NoText(), x0, [""] * len(x0), ddim, generator, len(x0), text_dropout=0.0),
        "minianimate.stages.diffusion_loss"),
    "context_windows: imported in place of one's own": (
        "context_windows", library_windows, "minianimate.context.context_windows"),
    "context_windows: called through its module": (
        "context_windows", lambda frames, window, overlap: minianimate.context.context_windows(frames, window, overlap),
        "minianimate.context.context_windows"),
    "window_weights: the grader's own reference": (
        "window_weights", reference_weights, "minianimate.course.exercises.window_weights"),
    "window_weights: the library's pyramid": (
        "window_weights", pyramid_window_weights, "minianimate.context.fuse_weights"),
}
# These passed every hidden check before the library was made unreachable (diffusion_loss draws other numbers).
PASSED_BEFORE = [c for c in CHEATS if c != "clip_loss: diffusion_loss"]


@pytest.mark.parametrize("cheat", list(CHEATS))
def test_a_delegation_to_the_library_fails_with_a_verdict_that_names_what_it_called(cheat):
    name, fn, called = CHEATS[cheat]
    for hidden in (False, True):
        result = check(name, fn, hidden=hidden)
        assert result.kind == "delegated" and not result, result
        assert "\n" not in repr(result) and re.fullmatch(
            rf"✗ {name}: ({name} is {re.escape(called)} itself: the exercise must not call it|the exercise must not "
            rf"call {re.escape(called)} \(in .+, line \d+: .+\)); write it yourself", repr(result)), result


@pytest.mark.parametrize("cheat", PASSED_BEFORE)
def test_without_the_guard_the_delegation_would_pass(cheat, monkeypatch):
    """What the guard is for: the inputs alone cannot tell a delegation from the student's code (visible inputs here,
    for time; the hidden ones passed them too)."""
    name, fn, _ = CHEATS[cheat]
    monkeypatch.setitem(EXERCISES, name, dataclasses.replace(EXERCISES[name], forbid=()))
    assert check(name, fn)


def test_every_exercise_with_a_library_version_forbids_it():
    """The exercises with no library function of their own are the two einops rearranges."""
    assert {n for n, e in EXERCISES.items() if not e.forbid} == {"to_temporal_tokens", "from_temporal_tokens"}
    assert {CHEATS[c][0] for c in CHEATS} == {n for n, e in EXERCISES.items() if e.forbid}
    for exercise in EXERCISES.values():
        for dotted in exercise.forbid:
            owner, attr = resolve(dotted)  # fails when the library renames what an exercise forbids
            assert attr in vars(owner), dotted


def test_the_library_is_whole_again_after_the_check():
    alias = library_guidance
    with pytest.raises(Delegated, match=r"must not call minianimate\.ddim\.classifier_free_guidance; write it"):
        with unreachable(EXERCISES["classifier_free_guidance"].forbid, lambda u, c, s: alias(u, c, s)):
            assert minianimate.ddim.classifier_free_guidance is not alias
            minianimate.sampling.classifier_free_guidance(torch.zeros(1), torch.ones(1), 2.0)
    assert minianimate.ddim.classifier_free_guidance is library_guidance is alias
    assert minianimate.sampling.classifier_free_guidance is library_guidance
    check("temporal_block", CHEATS["temporal_block: return block(x)"][1])
    check("inflate", CHEATS["inflate: MotionUNet.from_unet"][1])
    assert TemporalTransformerBlock.forward.__qualname__ == "TemporalTransformerBlock.forward"
    assert MotionUNet.from_unet.__func__.__qualname__ == "MotionUNet.from_unet"
    assert torch.equal(library_guidance(torch.zeros(1), torch.ones(1), 2.0), torch.full((1,), 2.0))


def test_a_delegating_notebook_scores_nothing_in_the_grader(tmp_path, capsys):
    """In a kernel, as `grade` runs it: 03 returns block(x) and module(x, num_frames); 06 calls ddim.step and imports
    the library's classifier_free_guidance in place of its own."""
    delegations = {"03_motion_module": {"def temporal_block": "return block(x)",
                                        "def motion_module": "return module(x, num_frames)"},
                   "06_ddim_and_guidance": {"def ddim_step": "return ddim.step(eps, t, x)",
                                            "def classifier_free_guidance": None}}
    for stem, cells in delegations.items():
        nb = nbformat.read(STUDENT / f"{stem}.ipynb", as_version=4)
        for cell in nb.cells:
            for start, line in cells.items():
                if cell.source.startswith(start):
                    cell.source = (cell.source.replace(STUDENT_LINE, line) if line else
                                   f"from minianimate.ddim import {start.removeprefix('def ')}")
        nbformat.write(nb, tmp_path / f"{stem}_mallory.ipynb")
    assert main(["grade", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    for name, called in [("temporal_block", "minianimate.motion_module.TemporalTransformerBlock.forward"),
                         ("motion_module", "minianimate.motion_module.MotionModule.forward"),
                         ("ddim_step", "minianimate.ddim.DDIM.step"),
                         ("classifier_free_guidance", "minianimate.ddim.classifier_free_guidance")]:
        verdict = rf"{name} +0/1 +✗ (?=.*must not call).*{re.escape(called)}\b.*write it yourself"
        assert re.search(verdict, table), table
    assert table.splitlines()[-1].split() == ["total", "0/4"]
