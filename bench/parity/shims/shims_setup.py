"""Run-time setup for the upstream code on Debian's torch 1.13 (bench/parity/upstream.setup imports it).

1. The import shims in this folder (safetensors: see safetensors/__init__.py) are found on
   sys.path after the real packages, so an installed package wins.
2. torch 1.13's CPU baddbmm with beta == 0 returns nan at random in float64 (seen on batched
   [4, 9, 8] x [4, 8, 4] products: some calls give nan rows although bmm of the same operands, or
   baddbmm with beta 1 on a zero input, is finite), although torch documents that with beta 0 the
   input is ignored and the result is alpha * batch1 @ batch2. diffusers'
   Attention.get_attention_scores (AttnProcessor, IPAdapterAttnProcessor, the authors'
   IPAttnProcessor: the processors used on torch < 2.0) calls it with beta 0 on an uninitialized
   torch.empty. Here a beta-0 call becomes baddbmm(zeros, batch1, batch2, beta=1, alpha=alpha):
   the documented result, and the same arithmetic.
"""
import torch

_baddbmm = torch.baddbmm


def _baddbmm_beta0_ignores_input(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    if beta == 0:
        input, beta = torch.zeros_like(input), 1
    if out is None:
        return _baddbmm(input, batch1, batch2, beta=beta, alpha=alpha)
    return _baddbmm(input, batch1, batch2, beta=beta, alpha=alpha, out=out)


if getattr(torch.baddbmm, "__name__", "") != "_baddbmm_beta0_ignores_input":
    torch.baddbmm = _baddbmm_beta0_ignores_input
