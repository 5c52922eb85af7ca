"""The denoising loop: DDIM with classifier-free guidance, the same for images (UNet) and clips (MotionUNet);
and the noise it starts from."""
import torch
from einops import rearrange
from tqdm.auto import tqdm

from minianimate.ddim import DDIM, classifier_free_guidance


def frame_noise(shape: tuple, generator: torch.Generator, share: float = 0.0) -> torch.Tensor:
    """Gaussian noise of `shape`; for clips (B, C, F, h, w) the frames may share a fraction `share` of its
    variance (the mixed noise prior of PYoCo, Ge et al. 2023). share 0: i.i.d. noise. Every element is N(0, 1)."""
    noise = torch.randn(shape, generator=generator)
    if share:
        common = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator)  # (B, C, 1, h, w)
        noise = (1 - share) ** 0.5 * noise + share ** 0.5 * common
    return noise


@torch.no_grad()
def sample(model, shape: tuple, context: torch.Tensor, uncond: torch.Tensor | None = None, ddim: DDIM | None = None,
           steps: int = 25, guidance: float = 7.5, seed: int = 0, eta: float = 0.0, latents=None,
           progress: bool = True, first_step: int = 0, known: tuple | None = None) -> torch.Tensor:
    """Denoise Gaussian noise of `shape` into latents.

    model(x, t, context) -> eps, x of `shape`: (B, C, H, W) for a UNet, (B, C, F, H, W) for a MotionUNet.
    context (B, L, D) (or one prompt per frame, (B*F, L, D)); uncond: the empty prompt's context, same shape
    (None or guidance 1 = no guidance). Guided steps run conditional and unconditional in one batch.
    first_step: start at the `first_step`-th of the `steps` timesteps, `latents` already noised to it (SDEdit).
    known: clip frames held fixed, inpainting by replacement (as RePaint does): (mask (F,) bool, clean (B, C, F, h, w),
    noise (B, C, F, h, w)); before every step the frames in `mask` are set to `clean` noised to the step's t.
    Returns latents of `shape`. The same seed gives the same latents.
    """
    ddim = ddim or DDIM()
    ddim.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    device = context.device
    x = torch.randn(shape, generator=generator).to(device) if latents is None else latents.to(device)
    guided = uncond is not None and guidance != 1.0
    both = torch.cat([uncond, context]) if guided else context
    if known is not None:  # the held frames, moved once: mask (F, 1, 1) against (B, C, F, h, w)
        mask, clean, noise = rearrange(known[0], "f -> f 1 1").to(device), known[1].to(device), known[2].to(device)
    for t in tqdm(ddim.timesteps[first_step:], desc="denoising", disable=not progress, leave=False):
        if known is not None:
            x = torch.where(mask, ddim.add_noise(clean, noise, int(t)).to(x.dtype), x)
        if guided:
            eps_uncond, eps_cond = model(torch.cat([x, x]), int(t), both).to(x.dtype).chunk(2)
            eps = classifier_free_guidance(eps_uncond, eps_cond, guidance)
        else:
            eps = model(x, int(t), both).to(x.dtype)
        x = ddim.step(eps, t, x, eta=eta, generator=generator)
    return x
