"""The diffusion noise schedule and the DDIM sampler (Song et al. 2021), equal to diffusers' `DDIMScheduler`.

Forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, abar_t = prod_{s<=t} (1 - beta_s).
DDIM reverses it in a few large steps: predict x_0 from the noise prediction, then move to x_{t'} along
the predicted noise direction; eta = 0 is deterministic (an ODE-like walk), eta = 1 is DDPM-like.
Defaults reproduce the Stable Diffusion 1.5 scheduler (scaled_linear betas 0.00085..0.012, steps_offset 1,
"leading" spacing, abar at t < 0 = abar_0, no clipping); `timestep_spacing` 'linspace' and 'trailing' are
diffusers' other two (its AnimateDiff examples use 'linspace' with linear betas).
"""
import numpy as np
import torch


def make_betas(schedule: str, n: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Noise variances beta_1..beta_n (float32): `linear` in beta, or `scaled_linear` (linear in sqrt(beta))."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float32) ** 2
    raise ValueError(f"beta_schedule {schedule!r} is not supported; use 'linear' or 'scaled_linear'")


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps = eps_uncond + scale * (eps_cond - eps_uncond)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


class DDIM:
    """Noise schedule + DDIM sampler. `add_noise` for training, `set_timesteps` + `step` for sampling."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: str = "scaled_linear", steps_offset: int = 1, timestep_spacing: str = "leading"):
        if timestep_spacing not in ("leading", "linspace", "trailing"):
            raise ValueError(f"timestep_spacing {timestep_spacing!r} is not supported; use leading, linspace or "
                             f"trailing")
        self.num_train_timesteps, self.timestep_spacing = num_train_timesteps, timestep_spacing
        self.beta_schedule, self.beta_start, self.beta_end = beta_schedule, beta_start, beta_end
        self.steps_offset = steps_offset
        self.betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # abar_t, (T,)
        self.final_alpha_cumprod = self.alphas_cumprod[0]  # abar used for t < 0 (set_alpha_to_one=False)
        self.set_timesteps(50)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Pick `num_inference_steps` evenly spaced timesteps (`timestep_spacing`), high to low: (n,) int64."""
        if not 0 < num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be in 1..{self.num_train_timesteps}, "
                             f"got {num_inference_steps}")
        self.num_inference_steps, n, T = num_inference_steps, num_inference_steps, self.num_train_timesteps
        if self.timestep_spacing == "leading":
            steps = (np.arange(n) * (T // n))[::-1] + self.steps_offset
        elif self.timestep_spacing == "linspace":
            steps = np.linspace(0, T - 1, n).round()[::-1]
        else:  # trailing
            steps = np.round(np.arange(T, 0, -T / n)) - 1
        self.timesteps = torch.from_numpy(steps.astype(np.int64).copy())
        return self.timesteps

    def _abar(self, t, like: torch.Tensor) -> torch.Tensor:
        """abar_t for int or (B,) timesteps, shaped to broadcast against `like` (B, ...)."""
        t = torch.as_tensor(t, device=self.alphas_cumprod.device)
        abar = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], self.final_alpha_cumprod)
        abar = abar.to(like.device, like.dtype)
        return abar.reshape(-1, *[1] * (like.ndim - 1)) if abar.ndim else abar

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Sample q(x_t | x_0): x0, noise (B, ...), t int or (B,) -> x_t (B, ...)."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def step(self, eps: torch.Tensor, t, x: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM step from timestep t to the previous one: eps, x (B, ...) -> x_prev (B, ...)."""
        t = int(t)
        prev_t = t - self.num_train_timesteps // self.num_inference_steps
        abar_t, abar_prev = self._abar(t, x), self._abar(prev_t, x)
        x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()  # predicted clean sample
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).sqrt() * eps
        if eta > 0:
            noise = torch.randn(eps.shape, generator=generator, dtype=eps.dtype,
                                device=generator.device if generator is not None else eps.device).to(eps.device)
            x_prev = x_prev + sigma * noise
        return x_prev
