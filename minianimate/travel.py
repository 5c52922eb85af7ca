"""Prompt travel (the community's animatediff-cli-prompt-travel, ComfyUI's prompt schedules): a prompt per
keyframe, one text embedding per frame, linearly interpolated in embedding space between keyframes (the
first keyframe's before it, the last one's after it). The MotionUNet takes one prompt per frame, (B*F, L, D).

    pipe.generate({0: "a red circle moving left", 8: "a blue circle moving left"}, frames=16)
"""
import numpy as np
import torch

from minianimate import checks


def parse_travel(text: str) -> dict[int, str]:
    """CLI form `0:a red circle moving left|16:a blue circle moving right` -> {0: ..., 16: ...}."""
    keyframes = {}
    for part in text.split("|"):
        frame, sep, prompt = part.partition(":")
        if not sep or not frame.strip().isdigit() or not prompt.strip():
            raise ValueError(f"bad prompt travel entry {part!r}: expected FRAME:PROMPT entries joined by |, e.g. "
                             f"'0:a red circle|8:a blue circle'")
        keyframes[int(frame)] = prompt.strip()
    return keyframes


def frame_weights(keyframes, frames: int) -> torch.Tensor:
    """(F, K) weights of the K keyframes (sorted) at each frame: exactly one-hot at a keyframe, linear between."""
    keys = sorted(checks.keyframes("prompt travel", keyframes, checks.whole("frames", frames)))
    one_hot = np.eye(len(keys))  # keyframe i's weight: 1 at its frame, 0 at the others, linear between
    return torch.tensor(np.stack([np.interp(np.arange(frames), keys, row) for row in one_hot], 1), dtype=torch.float32)


def travel_context(text_encoder, keyframes: dict[int, str], frames: int) -> torch.Tensor:
    """The text embeddings of the keyframe prompts mixed per frame: (F, L, D), one prompt per frame."""
    keys = sorted(keyframes)
    embeddings = text_encoder.encode_prompt([keyframes[k] for k in keys])  # (K, L, D)
    weights = frame_weights(keyframes, frames).to(embeddings.device, embeddings.dtype)
    return torch.einsum("fk,kld->fld", weights, embeddings)
