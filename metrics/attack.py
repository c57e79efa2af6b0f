"""Password guessing by an attacker who holds the model and an anonymized face M, not the original.

For a candidate password c (the one that would have anonymized the face), the candidate recovery is
R_c = G(M, ~c). The attacker cannot compare R_c with the original, but can check consistency: if c
is right, R_c is the original and anonymizing it again with c gives M back. The score of c is

    score(c) = mean |G(G(M, ~c), c) - M|   (over pixels, images in [-1, 1]; lower is more likely)

and candidates are ranked by it. With L-bit passwords and 2^L at most ``max_candidates``, every code
is a candidate; otherwise the true one and ``max_candidates - 1`` distinct random others (a sampled
estimate: the true password's rank among 2^L codes is about rank x 2^L / candidates).

Each guess costs two generator passes; ``time_per_guess`` is measured on the device used, in
batches of ``chunk`` candidates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from models.passwords import bits_from_int, complement, random_bits


@dataclass
class AttackResult:
    length: int
    candidates: int
    exhaustive: bool
    ranks: list = field(default_factory=list)  # 1-based rank of the true password, per image
    seconds: float = 0.0                       # time spent scoring candidates
    guesses: int = 0

    @property
    def images(self) -> int:
        return len(self.ranks)

    def top(self, k: int) -> float:
        return sum(r <= k for r in self.ranks) / max(1, len(self.ranks))

    @property
    def time_per_guess(self) -> float:
        return self.seconds / max(1, self.guesses)


def candidate_codes(true_bits: torch.Tensor, max_candidates: int, generator: torch.Generator) -> torch.Tensor:
    """(K, L) candidate codes that include ``true_bits`` (L,): all 2^L codes, or the true one and
    K - 1 distinct random others (in random order)."""
    L = int(true_bits.numel())
    if L < 63 and 2 ** L <= max_candidates:
        return torch.stack([bits_from_int(v, L) for v in range(2 ** L)]).to(true_bits.dtype)
    seen = {tuple(true_bits.tolist())}
    rows = [true_bits]
    while len(rows) < max_candidates:
        c = random_bits(1, L, generator)[0].to(true_bits.dtype)
        key = tuple(c.tolist())
        if key not in seen:
            seen.add(key)
            rows.append(c)
    out = torch.stack(rows)
    return out[torch.randperm(len(out), generator=generator)]


@torch.no_grad()
def scores(run, M: torch.Tensor, codes: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """score(c) for every code (K, L) and one anonymized face M (1, 3, H, W); ``run(images, bits)``
    applies G in inference mode (each image alone, so the chunk size does not change a score)."""
    out = []
    for start in range(0, len(codes), chunk):
        c = codes[start:start + chunk]
        m = M.expand(len(c), -1, -1, -1)
        back = run(run(m, complement(c)), c)
        out.append((back - m).abs().flatten(1).mean(1).cpu())
    return torch.cat(out)


def rank_of(score: torch.Tensor, true_index: int) -> int:
    """1-based rank of candidate ``true_index`` (ties count against the attacker's luck: the true
    code ranks after every candidate with the same or a lower score)."""
    s = score[true_index]
    return int((score < s).sum()) + int((score == s).sum())


def password_attack(run, M: torch.Tensor, true_bits: torch.Tensor, max_candidates: int = 256,
                    seed: int = 0, chunk: int = 64, progress=None) -> AttackResult:
    """Rank the true anonymizing password of each face of M (B, 3, H, W) among the candidates."""
    L = int(true_bits.shape[1])
    g = torch.Generator().manual_seed(seed)
    res = None
    for i in range(M.shape[0]):
        codes = candidate_codes(true_bits[i], max_candidates, g)
        true_index = int((codes == true_bits[i]).all(1).nonzero()[0, 0])
        if M.device.type == "cuda":
            torch.cuda.synchronize(M.device)
        t0 = time.perf_counter()
        s = scores(run, M[i:i + 1], codes, chunk)
        if M.device.type == "cuda":
            torch.cuda.synchronize(M.device)
        dt = time.perf_counter() - t0
        if res is None:
            res = AttackResult(L, len(codes), len(codes) == 2 ** L)
        res.ranks.append(rank_of(s, true_index))
        res.seconds += dt
        res.guesses += len(codes)
        if progress:
            progress(1)
    return res or AttackResult(L, 0, False)


def exhaust_time(seconds_per_guess: float, bits: int) -> float:
    return seconds_per_guess * 2.0 ** bits


def human_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size or unit == "minutes":
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
