"""Derived seeds: every random choice in a run gets its own seed from named parts.

Seeding each choice separately (epoch e's data order, round r's random control)
instead of drawing from one stream is what makes a resumed run identical to an
uninterrupted one: nothing depends on how much randomness was drawn before.
"""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(*parts, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*parts))
    return g
