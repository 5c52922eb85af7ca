"""FreeInit (Wu et al. 2023): sample, diffuse the result back to the last timestep, keep its low spatio-temporal
frequencies, replace the high ones with fresh noise, sample again. Training noises latents whose low
frequencies leak through even at t = T; inference starts from pure noise; re-initialising closes the gap.

The filter is diffusers' (`FreeInitMixin`): over the normalised (frame, row, column) frequencies d^2 =
((s / t) (2i/F - 1))^2 + (2j/h - 1)^2 + (2k/w - 1)^2 of the fft-shifted spectrum, with s, t the spatial and
temporal cut-offs: butterworth 1 / (1 + (d^2 / s^2)^order), gaussian exp(-d^2 / (2 s^2)), ideal d^2 <= 2 s.
"""
import torch

from minianimate import checks

FILTERS = ("butterworth", "gaussian", "ideal")


def check_options(kind: str, cutoff: float, temporal_cutoff: float) -> tuple[str, float, float]:
    """The filter options, named as `AnimationPipeline.generate` takes them: a known filter, cut-offs in (0, 1]."""
    return (checks.choice("free_init_filter", kind, FILTERS), checks.finite("free_init_cutoff", cutoff, 0, 1, True),
            checks.finite("free_init_temporal_cutoff", temporal_cutoff, 0, 1, True))


def lowpass(shape: tuple, kind: str = "butterworth", cutoff: float = 0.25, temporal_cutoff: float = 0.25,
            order: int = 4) -> torch.Tensor:
    """The low-pass mask (F, h, w) in [0, 1] over the centred 3D spectrum of latents (..., F, h, w)."""
    kind, cutoff, temporal_cutoff = check_options(kind, cutoff, temporal_cutoff)
    frames, height, width = shape[-3:]
    f, h, w = torch.meshgrid(*(2 * torch.arange(n, dtype=torch.float64) / n - 1 for n in (frames, height, width)),
                             indexing="ij")
    d2 = ((cutoff / temporal_cutoff) * f) ** 2 + h ** 2 + w ** 2
    if kind == "butterworth":
        mask = 1 / (1 + (d2 / cutoff ** 2) ** order)
    elif kind == "gaussian":
        mask = torch.exp(-d2 / (2 * cutoff ** 2))
    else:
        mask = (d2 <= cutoff * 2).double()
    return mask.float()


def mix_frequencies(low: torch.Tensor, high: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The low frequencies (mask) of `low` with the high ones (1 - mask) of `high`: (..., F, h, w) each."""
    dims = (-3, -2, -1)
    spectrum = lambda x: torch.fft.fftshift(torch.fft.fftn(x.float(), dim=dims), dim=dims)  # noqa: E731
    mixed = spectrum(low) * mask + spectrum(high) * (1 - mask)
    return torch.fft.ifftn(torch.fft.ifftshift(mixed, dim=dims), dim=dims).real


def reinitialize(latents: torch.Tensor, initial_noise: torch.Tensor, ddim, generator: torch.Generator,
                 mask: torch.Tensor) -> torch.Tensor:
    """The next FreeInit starting point: `latents` (B, C, F, h, w) diffused to t = T - 1 with the first
    iteration's noise, its low frequencies kept, the high ones from fresh noise."""
    diffused = ddim.add_noise(latents, initial_noise.to(latents.device), ddim.num_train_timesteps - 1)
    fresh = torch.randn(latents.shape, generator=generator).to(latents.device)
    return mix_frequencies(diffused, fresh, mask.to(latents.device))
