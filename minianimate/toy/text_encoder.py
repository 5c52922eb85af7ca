"""The toy text encoder: `encode_prompt(prompts: list[str]) -> (B, L, D)`, the pipeline's `TextEncoder` interface.

A word-level tokenizer over the ShapeWorld vocabulary, embeddings and a few transformer blocks from
`minianimate.attention`; trained together with the toy base UNet, then frozen (it stands in for SD's CLIP).
The empty prompt "" is the unconditional embedding used by classifier-free guidance.
"""
import torch
from torch import nn

from minianimate.attention import Attention, FeedForward
from minianimate.toy.shapeworld import COLORS, DIRECTIONS, SHAPES

VOCAB = ["<pad>", "<bos>", "a", "moving", *COLORS, *SHAPES, *DIRECTIONS]


class WordTokenizer:
    """Words -> ids over a closed vocabulary: `<bos>` + words, padded with `<pad>` to `max_len`."""

    def __init__(self, vocab: list[str] = VOCAB, max_len: int = 8):
        self.vocab, self.max_len = list(vocab), max_len
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """prompts (B,) -> token ids (B, max_len), int64."""
        rows = []
        for prompt in prompts:
            words = prompt.lower().replace(",", " ").split()
            unknown = [w for w in words if w not in self.ids]
            if unknown:
                raise ValueError(f"prompt {prompt!r} has words outside the toy vocabulary: {unknown}; "
                                 f"known words: {' '.join(self.vocab[2:])}")
            if len(words) + 1 > self.max_len:
                raise ValueError(f"prompt {prompt!r} is longer than {self.max_len - 1} words")
            ids = [self.ids["<bos>"]] + [self.ids[w] for w in words]
            rows.append(ids + [self.ids["<pad>"]] * (self.max_len - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


class EncoderBlock(nn.Module):
    """Pre-LayerNorm self-attention + GEGLU feed-forward over the tokens: (B, L, D) -> (B, L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, dim // heads)
        self.norm2, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ff(self.norm2(x))


class ToyTextEncoder(nn.Module):
    """A small from-scratch text encoder for ShapeWorld captions: prompts -> (B, max_len, dim)."""

    def __init__(self, dim: int = 64, layers: int = 2, heads: int = 4, max_len: int = 8):
        super().__init__()
        self.config = {"dim": dim, "layers": layers, "heads": heads, "max_len": max_len}
        self.tokenizer = WordTokenizer(VOCAB, max_len)
        self.token_embedding = nn.Embedding(len(VOCAB), dim)
        self.position_embedding = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L) -> (B, L, dim)."""
        x = self.token_embedding(ids) + self.position_embedding[:, : ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        return self(self.tokenizer(list(prompts)).to(self.position_embedding.device))
