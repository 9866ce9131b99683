"""Sampling whose randomness belongs to the row, not to the batch.

`model.generate(do_sample=True)` draws from torch's global generator, so a sample depends on every other
row decoded in the same batch: split the prompts over shards, or change the batch size, and every sample
changes. Here each sequence gets a 32-bit key from (seed, prompt key, sample index), and the noise of
step t for token v is a hash of (key, t, v) computed for the whole batch in a few integer tensor ops. The
sampled token is argmax(logits / temperature (top-p filtered) + Gumbel noise), which is an exact draw
from the same distribution (the Gumbel-max trick), so the samples of a prompt are the same whatever else
shares its batch or its shard -- the property vLLM offers with a per-request `SamplingParams(seed=)`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

_M32 = 0xFFFFFFFF
_LOWBIAS32 = (0x7FEB352D, 0x846CA68B)  # lowbias32 (C. Wellons' hash-prospector): near-ideal avalanche
_STEP, _TOKEN = 0x9E3779B9, 0x85EBCA6B  # odd constants that spread step and token ids over 32 bits


def row_keys(seed: int, keys: list[str], samples: int) -> list[int]:
    """A 32-bit key per (prompt key, sample index), in the order keys x samples."""
    out = []
    for key in keys:
        for s in range(samples):
            digest = hashlib.blake2b(f"{seed}\x00{key}\x00{s}".encode(), digest_size=4).digest()
            out.append(int.from_bytes(digest, "little"))
    return out


# Two implementations of one hash. numpy's uint32 arithmetic wraps natively and runs on one thread:
# on a busy 2-core machine, torch's OpenMP elementwise int64 ops measured 500x slower (16 ms vs 0.03 ms
# per 50k elements). On a GPU the torch version runs where the logits are (int64, products split in
# 16-bit halves so nothing overflows). A test checks that both give the same bits.

def _mix32_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(_LOWBIAS32[0])
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(_LOWBIAS32[1])
    return x ^ (x >> np.uint32(16))


def _mul32_t(x: torch.Tensor, c: int) -> torch.Tensor:
    return ((x * (c & 0xFFFF)) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32_t(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32_t(x, _LOWBIAS32[0])
    x = x ^ (x >> 15)
    x = _mul32_t(x, _LOWBIAS32[1])
    return x ^ (x >> 16)


def noise_bits(keys: list[int] | np.ndarray, step: int, vocab: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """32 hash bits per (sequence key, token), a pure function of (key, step, token id): (len(keys), vocab)."""
    device = torch.device(device)
    step_h = int(_mix32_np(np.array([step * _STEP & _M32], dtype=np.uint32))[0])
    if device.type == "cpu":
        x = _mix32_np(np.asarray(keys, dtype=np.uint32) ^ np.uint32(step_h))
        tokens = np.arange(vocab, dtype=np.uint32) * np.uint32(_TOKEN)
        return torch.from_numpy(_mix32_np(_mix32_np(x[:, None] ^ tokens[None, :])).astype(np.int64))
    x = _mix32_t(torch.as_tensor(np.asarray(keys, dtype=np.int64), device=device) ^ step_h)
    tokens = _mul32_t(torch.arange(vocab, dtype=torch.int64, device=device), _TOKEN)
    return _mix32_t(_mix32_t(x[:, None] ^ tokens[None, :]))


def gumbel_noise(keys: list[int], step: int, vocab: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Gumbel(0, 1) noise (float32) of shape (len(keys), vocab) from `noise_bits`."""
    bits = noise_bits(keys, step, vocab, device)
    if bits.device.type == "cpu":  # numpy, for the reason above
        u = ((bits.numpy() >> 8) + 0.5) / 2**24  # in (0, 1), never 0 or 1
        return torch.from_numpy((-np.log(-np.log(u))).astype(np.float32))
    u = ((bits >> 8).double() + 0.5) / 2**24
    return (-torch.log(-torch.log(u))).float()


class SeededGumbel(LogitsProcessor):
    """Adds per-row Gumbel noise; with greedy decoding, the argmax is then a seeded sample."""

    def __init__(self, keys: list[int], prompt_len: int):
        self.keys = keys
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        return scores.float() + gumbel_noise(self.keys, step, scores.shape[-1], scores.device)


def seeded_sampling(keys: list[int], prompt_len: int, temperature: float, top_p: float) -> LogitsProcessorList:
    """Processors that turn `model.generate(do_sample=False)` into seeded sampling (temperature, top-p)."""
    procs = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return LogitsProcessorList([*procs, SeededGumbel(keys, prompt_len)])
