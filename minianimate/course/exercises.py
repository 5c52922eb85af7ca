"""The course's exercises: for each, the function a student writes, minianimate's version of it, and the inputs
both are run on (visible: two seeds and a few shapes; hidden: five seeds and more shapes).

An exercise's name is the name its notebook defines (`attention`, `LoRALinear`, ...). Where minianimate's version
is a module with weights, the student's function gets a copy of the same module (or the same weights), so the
comparison is exact. Where the library has no standalone form (the einops rearranges, the per-frame window
weights), the reference is the library's own line, and tests/test_course.py checks it against the library.
`forbid` names the library's own versions of an exercise (dotted: module, class, attribute): while the student's
function runs they raise (grader.unreachable), so `return block(x)` or an import of the library's function is a
verdict, not a pass. The references are computed before, with the library intact.
"""
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from minianimate.context import context_windows, fuse_weights
from minianimate.ddim import DDIM, classifier_free_guidance
from minianimate.inflation import MotionConfig, MotionUNet
from minianimate.lora import LoRA
from minianimate.motion_module import MotionModule, PositionalEncoding, TemporalTransformerBlock
from minianimate.stages import diffusion_loss
from minianimate.unet import UNet


@dataclass
class Case:
    label: str  # the input, as a message names it: "q (2, 5, 8), k (2, 5, 8), v (2, 5, 8), seed 1"
    run: Callable  # the student's function -> its output, on fresh copies of the inputs
    expected: Any  # minianimate's output: a tensor, a list of windows, or a dict of tensors


@dataclass
class Exercise:
    name: str  # what the notebook defines and `check` is called with
    notebook: str
    reference: str  # where minianimate does it (named in a passing verdict)
    cases: Callable[[bool], Iterator[Case]]  # hidden -> the inputs
    hint: str = ""  # added to a "wrong values" verdict
    forbid: tuple[str, ...] = ()  # the library's own versions of the exercise: they raise while the student's runs


def _seeds(hidden: bool) -> range:
    return range(5) if hidden else range(2)


def _randn(seed: int, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def randomize(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Random non-zero weights everywhere (zero-initialised outputs included), norm scales near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else std * noise)
    return module.eval()


def _fresh(value):
    """A copy the student's function may change without touching the reference's input."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    return copy.deepcopy(value) if isinstance(value, (nn.Module, DDIM)) else value


def _case(label: str, expected, *args) -> Case:
    """The student's function called on fresh copies of `args`."""
    return Case(label, lambda fn: fn(*map(_fresh, args)), expected)


def _shape(name: str, x: torch.Tensor) -> str:
    return f"{name} {tuple(x.shape)}" + ("" if x.dtype == torch.float32 else f" {str(x.dtype).removeprefix('torch.')}")


@torch.no_grad()
def _attention(hidden):
    shapes = [((2, 5, 8), 5, torch.float32), ((2, 3, 4, 16), 7, torch.float32), ((1, 2, 3, 8), 3, torch.float64)]
    shapes += [((1, 1, 1, 4), 1, torch.float32), ((3, 2, 9, 32), 2, torch.float32), ((4, 6, 3), 11, torch.float64)
               ] if hidden else []
    for seed in _seeds(hidden):
        for (*batch, n, d), m, dtype in shapes:
            q, k, v = (_randn(seed * 3 + i, *batch, rows, d, dtype=dtype) for i, rows in enumerate((n, m, m)))
            label = f"{_shape('q', q)}, {_shape('k', k)}, {_shape('v', v)}, seed {seed}"
            yield _case(label, F.scaled_dot_product_attention(q, k, v), q, k, v)


TOKEN_SHAPES = [(2, 3, 4, 2, 5), (1, 8, 6, 3, 3)]  # b, f, c, h, w
HIDDEN_TOKEN_SHAPES = [(3, 2, 1, 4, 4), (2, 16, 8, 1, 2), (1, 1, 3, 2, 2)]


def _to_tokens(hidden):
    for seed in _seeds(hidden):
        for b, f, c, h, w in TOKEN_SHAPES + (HIDDEN_TOKEN_SHAPES if hidden else []):
            x = _randn(seed, b * f, c, h, w)
            yield _case(f"{_shape('x', x)}, num_frames {f}, seed {seed}",
                        rearrange(x, "(b f) c h w -> (b h w) f c", f=f), x, f)


def _from_tokens(hidden):
    for seed in _seeds(hidden):
        for b, f, c, h, w in TOKEN_SHAPES + (HIDDEN_TOKEN_SHAPES if hidden else []):
            tokens = _randn(seed, b * h * w, f, c)
            yield _case(f"{_shape('tokens', tokens)}, height {h}, width {w}, seed {seed}",
                        rearrange(tokens, "(b h w) f c -> (b f) c h w", h=h, w=w), tokens, h, w)


def _positional_encoding(hidden):
    for frames, dim in [(16, 32), (24, 8)] + ([(1, 2), (32, 320), (5, 64), (7, 6)] if hidden else []):
        yield _case(f"num_frames {frames}, dim {dim}", PositionalEncoding(dim, frames).pe[0], frames, dim)


@torch.no_grad()
def _temporal_block(hidden):
    configs = [(16, 2, 6, 4), (32, 4, 3, 8)] + ([(8, 1, 2, 1), (64, 8, 5, 16), (16, 4, 1, 24)] if hidden else [])
    for seed in _seeds(hidden):
        for dim, heads, n, f in configs:
            block = randomize(TemporalTransformerBlock(dim, heads, max_frames=24), seed)
            x = _randn(seed, n, f, dim)
            yield _case(f"TemporalTransformerBlock(dim={dim}, heads={heads}), {_shape('x', x)}, seed {seed}",
                        block(x), block, x)


@torch.no_grad()
def _motion_module(hidden):
    configs = [(16, 2, 4, 1, 1, 4, 3, 3), (32, 4, 8, 1, 2, 3, 4, 2)]  # channels, heads, groups, layers, b, f, h, w
    configs += [(8, 1, 2, 1, 1, 1, 2, 2), (16, 8, 4, 2, 3, 8, 2, 3), (32, 2, 8, 1, 1, 16, 4, 4)] if hidden else []
    for seed in _seeds(hidden):
        for i, (c, heads, groups, layers, b, f, h, w) in enumerate(configs):
            module = randomize(MotionModule(c, heads, max_frames=32, groups=groups, layers=layers), seed)
            fresh = i == 0 and seed == 0
            if fresh:  # as inserted by inflation: proj_out = 0, the module is the identity
                nn.init.zeros_(module.proj_out.weight)
                nn.init.zeros_(module.proj_out.bias)
            x = _randn(seed, b * f, c, h, w)
            label = (f"MotionModule({c}, heads={heads}, groups={groups}, layers={layers}"
                     f"{', fresh: proj_out = 0' if fresh else ''}), {_shape('x', x)}, num_frames {f}, seed {seed}")
            yield _case(label, module(x, f), module, x, f)


TINY_UNET = dict(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, attention_head_dim=2,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, norm_num_groups=8)


@torch.no_grad()
def _inflate(hidden):
    configs = [(2, 3, 8, False), (2, 2, 8, True)] + ([(1, 4, 8, False), (3, 2, 4, True), (2, 5, 8, True)]
                                                     if hidden else [])  # b, f, size, a timestep per clip
    for seed in _seeds(hidden):
        unet = randomize(UNet(TINY_UNET), seed, std=0.05)
        inflated = MotionUNet.from_unet(unet, MotionConfig(heads=2)).eval()  # fresh motion modules: identity
        for b, f, size, per_clip in configs:
            sample, context = _randn(seed, b, 4, f, size, size), _randn(seed + 1, b, 3, 8)
            t = torch.tensor([100 + 300 * i + seed for i in range(b)]) if per_clip else 500 + seed
            label = (f"{_shape('sample', sample)}, timestep {t.tolist() if per_clip else t}, "
                     f"{_shape('context', context)}, seed {seed}")
            yield _case(label, inflated(sample, t, context), unet, sample, t, context)


@torch.no_grad()
def _lora(hidden):
    configs = [(6, 5, 2, 1.0, (3,)), (8, 8, 4, 8.0, (2, 4))]  # in, out, rank, alpha, batch shape of x
    configs += [(16, 4, 8, 4.0, (5,)), (3, 7, 1, 1.0, (2, 3)), (12, 12, 3, 6.0, (1,))] if hidden else []
    for seed in _seeds(hidden):
        for fan_in, fan_out, rank, alpha, batch in configs:
            base = randomize(nn.Linear(fan_in, fan_out), seed)
            model = nn.Sequential(copy.deepcopy(base))
            lora = LoRA.inject(model, ["0"], rank=rank, alpha=alpha)
            layer = randomize(lora.layer("0"), seed + 1, std=0.3)  # up != 0: the update shows
            x = _randn(seed, *batch, fan_in)
            expected = {"forward(x)": model(x)}
            lora.merge()
            expected |= {"base.weight after merge()": model[0].weight.clone(), "forward(x) after merge()": model(x)}
            lora.unmerge()
            expected["base.weight after unmerge()"] = model[0].weight.clone()
            lora.detach()
            yield Case(f"LoRALinear(nn.Linear({fan_in}, {fan_out}), rank={rank}, alpha={alpha}), "
                       f"{_shape('x', x)}, seed {seed}", _lora_run(base, layer, rank, alpha, x), expected)


def _lora_run(base, layer, rank, alpha, x):
    def run(cls):
        student = cls(copy.deepcopy(base), rank, alpha)
        with torch.no_grad():  # the reference's down/up weights
            student.down.weight.copy_(layer.down.weight)
            student.up.weight.copy_(layer.up.weight)
        out = {"forward(x)": student(x.clone())}
        student.merge()
        out["base.weight after merge()"] = student.base.weight.clone()
        out["forward(x) after merge()"] = student(x.clone())
        student.unmerge()
        return out | {"base.weight after unmerge()": student.base.weight.clone()}
    return run


def _ddim_step(hidden):
    configs = [("scaled_linear", 50, (2, 4, 8, 8)), ("linear", 10, (1, 4, 3, 8, 8))]
    configs += [("scaled_linear", 25, (3, 4, 2, 4, 4)), ("linear", 4, (2, 1, 4, 4)), ("scaled_linear", 1, (1, 4, 2, 2))
                ] if hidden else []
    for seed in _seeds(hidden):
        for schedule, steps, shape in configs:
            ddim = DDIM(beta_schedule=schedule)
            timesteps = ddim.set_timesteps(steps).tolist()
            for t in dict.fromkeys([timesteps[0], timesteps[len(timesteps) // 2], timesteps[-1]]):
                x, eps = _randn(seed, *shape), _randn(seed + 1, *shape)
                label = f"{_shape('x', x)}, t {t} of {steps} steps ({schedule} betas), seed {seed}"
                yield _case(label, ddim.step(eps, t, x), eps, t, x, ddim)


def _guidance(hidden):
    scales = [7.5, 1.0] + ([0.0, 3.0, 12.5] if hidden else [])
    for seed in _seeds(hidden):
        for shape in [(2, 4, 8, 8), (1, 4, 3, 4, 4)]:
            uncond, cond = _randn(seed, *shape), _randn(seed + 1, *shape)
            for scale in scales:
                yield _case(f"{_shape('eps_cond', cond)}, scale {scale}, seed {seed}",
                            classifier_free_guidance(uncond, cond, scale), uncond, cond, scale)


class TinyDenoiser(nn.Module):
    """eps(x_t, t) for the loss exercise: mixes neighbouring frames and depends on t, so every draw shows."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.time = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context=None) -> torch.Tensor:
        """x (B, C, F, h, w), t (B,) -> (B, C, F, h, w). `context` is ignored (diffusion_loss passes one)."""
        return self.conv(x) + rearrange(t.float() / 1000, "b -> b 1 1 1 1") * rearrange(self.time, "c -> 1 c 1 1 1")


class _NoText:
    def encode_prompt(self, prompts):
        return None


def _clip_loss(hidden):
    configs = [(4, 4, 3, 4, 4, 2), (3, 2, 5, 2, 2, 3)]  # clips N, C, F, h, w, batch
    configs += [(6, 4, 8, 2, 2, 4), (2, 1, 2, 3, 3, 1), (5, 3, 4, 4, 4, 5)] if hidden else []
    for seed in _seeds(hidden):
        for n, c, f, h, w, batch in configs:
            latents, model, ddim = _randn(seed, n, c, f, h, w), randomize(TinyDenoiser(c), seed), DDIM()
            with torch.no_grad():
                expected = diffusion_loss(model, _NoText(), latents, [""] * n, ddim,
                                          torch.Generator().manual_seed(seed), batch, text_dropout=0.0)
            yield Case(f"x0 {(batch, c, f, h, w)}, seed {seed}", _loss_run(model, latents, ddim, seed, batch), expected)


def _loss_run(model, latents, ddim, seed, batch):
    def run(fn):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randint(0, len(latents), (batch,), generator=g)  # diffusion_loss's first draws: the clips,
        torch.rand(batch, generator=g)  # and which captions to drop; the student's function draws the rest
        return fn(copy.deepcopy(model), latents[idx].clone(), copy.deepcopy(ddim), g)
    return run


WINDOW_CONFIGS = [(24, 16, 4), (40, 16, 4), (12, 16, 4)]  # frames, window, overlap
HIDDEN_WINDOW_CONFIGS = [(16, 16, 4), (17, 16, 4), (10, 4, 1), (7, 3, 0), (64, 16, 8), (100, 24, 6)]


def _context_windows(hidden):
    for frames, window, overlap in WINDOW_CONFIGS + (HIDDEN_WINDOW_CONFIGS if hidden else []):
        yield _case(f"frames {frames}, window {window}, overlap {overlap}",
                    context_windows(frames, window, overlap), frames, window, overlap)


def window_weights(frames: int, window: int, overlap: int) -> torch.Tensor:
    """What `ContextWindows` gives each window's prediction of each frame: (windows, frames), columns sum to 1."""
    windows = context_windows(frames, window, overlap)
    weights = torch.zeros(len(windows), frames)
    for i, idx in enumerate(windows):
        weights[i, idx] = fuse_weights(window) if len(windows) > 1 else 1.0  # one window: the model, once
    return weights / weights.sum(0)


def _window_weights(hidden):
    for frames, window, overlap in WINDOW_CONFIGS + (HIDDEN_WINDOW_CONFIGS if hidden else []):
        yield _case(f"frames {frames}, window {window}, overlap {overlap}",
                    window_weights(frames, window, overlap), frames, window, overlap)


EXERCISES = {e.name: e for e in [
    Exercise("attention", "01_attention", "F.scaled_dot_product_attention, as in minianimate.attention.Attention",
             _attention, "softmax over the keys (the last axis of q k^T), after dividing by sqrt(d).",
             ("torch.nn.functional.scaled_dot_product_attention",)),
    Exercise("to_temporal_tokens", "02_temporal_tokens", "the rearrange in minianimate's MotionModule.forward",
             _to_tokens, "frames fold as (b f): frame f of clip b is row b*F + f; tokens are one per pixel, (b h w)."),
    Exercise("from_temporal_tokens", "02_temporal_tokens", "the rearrange in minianimate's MotionModule.forward",
             _from_tokens, "the exact inverse of to_temporal_tokens: (b h w) f c -> (b f) c h w."),
    Exercise("positional_encoding", "02_temporal_tokens", "minianimate.motion_module.PositionalEncoding",
             _positional_encoding, "channel 2i is sin(position * 10000^(-2i/dim)), channel 2i+1 the cos of the "
                                   "same angle: interleaved, not two halves.",
             ("minianimate.motion_module.PositionalEncoding.__init__",)),
    Exercise("temporal_block", "03_motion_module", "minianimate.motion_module.TemporalTransformerBlock",
             _temporal_block, "pre-LayerNorm with a residual around each part; the frame encoding is added to the "
                              "normed input of each attention (after norm1/norm2, not before).",
             ("minianimate.motion_module.TemporalTransformerBlock.forward",)),
    Exercise("motion_module", "03_motion_module", "minianimate.motion_module.MotionModule",
             _motion_module, "GroupNorm over the whole clip (b c f h w), attention over frames at each pixel "
                             "((b h w) f c), proj_out, then the residual.",
             ("minianimate.motion_module.MotionModule.forward",)),
    Exercise("inflate", "04_inflation", "minianimate.inflation.MotionUNet (fresh motion modules)",
             _inflate, "frames fold as (b f); the timestep and the context repeat for every frame of their clip.",
             ("minianimate.inflation.MotionUNet.from_unet", "minianimate.inflation.MotionUNet.forward")),
    Exercise("LoRALinear", "05_lora", "minianimate.lora.LowRank and LoRA.merge/unmerge",
             _lora, "the update is (alpha / rank) * up(down(x)); merge() adds (alpha / rank) * up @ down to the "
                    "weight, and a merged layer must not add it again.",
             ("minianimate.lora.LowRank.forward", "minianimate.lora.LowRank.delta_weight")),
    Exercise("ddim_step", "06_ddim_and_guidance", "minianimate.ddim.DDIM.step",
             _ddim_step, "abar is ddim.alphas_cumprod (the running product, not 1 - beta_t); for a previous "
                         "timestep < 0 use ddim.final_alpha_cumprod.",
             ("minianimate.ddim.DDIM.step",)),
    Exercise("classifier_free_guidance", "06_ddim_and_guidance", "minianimate.ddim.classifier_free_guidance",
             _guidance, "start from the unconditional prediction and move `scale` times along (cond - uncond).",
             ("minianimate.ddim.classifier_free_guidance",)),
    Exercise("clip_loss", "07_clip_loss", "minianimate.stages.diffusion_loss",
             _clip_loss, "draw the noise first (one per frame: the shape of x0), then one timestep per clip, both "
                         "from `generator`.",
             ("minianimate.stages.diffusion_loss",)),
    Exercise("context_windows", "08_context_windows", "minianimate.context.context_windows",
             _context_windows, "starts every window - overlap frames; the last window ends on the last frame.",
             ("minianimate.context.context_windows",)),
    Exercise("window_weights", "08_context_windows", "minianimate.context.ContextWindows (pyramid fuse)",
             _window_weights, "each window's pyramid 1, 2, ..., 2, 1 on its frames, 0 elsewhere; then divide each "
                              "frame's column by its sum.",
             ("minianimate.context.fuse_weights", "minianimate.context.ContextWindows.__call__",
              "minianimate.course.exercises.window_weights")),
]}

NOTEBOOKS: dict[str, list[str]] = {}  # notebook stem -> its exercises, in order
for _e in EXERCISES.values():
    NOTEBOOKS.setdefault(_e.notebook, []).append(_e.name)
