#!/usr/bin/python3
"""Golden training fixtures (llm.c style) for tests/train/parity.test.ts and train.test.ts.

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_train_fixtures.py
Check the committed fixtures against the upstream code without rewriting them:
  OMP_NUM_THREADS=2 /usr/bin/python3 bench/parity/make_train_fixtures.py --check

Each fixture holds a block's inputs and weights, a random R, the block's output and the gradients
of loss = sum(out * R) with respect to every input and weight, computed by the UPSTREAM module
itself (bench/parity/upstream.py pins the commits; they are also in each file's metadata):
  vit_block.safetensors          transformers Dinov2Layer (models/dinov2/modeling_dinov2.py):
                                 hidden 32, 4 heads, MLP 64, LayerScale, LayerNorm eps 1e-6, erf
                                 GELU; x [2, 5, 32]
  unet_resnet_block.safetensors  diffusers ResnetBlock2D (models/resnet.py): 8 -> 16 channels, 6x6,
                                 batch 2, GroupNorm(4, eps 1e-5), time embedding 12, 1x1 conv_shortcut
  cross_attention.safetensors    diffusers Attention (to_q/to_k/to_v without bias, to_out.0 with
                                 bias, 2 heads, dim 16, context 24) with diffusers'
                                 IPAdapterAttnProcessor (scale 0.7, 4 image tokens), weights
                                 "processor.to_k_ip.0.weight" / "processor.to_v_ip.0.weight";
                                 x [2, 9, 16], text [2, 7, 24], image tokens [2, 4, 24]. The
                                 generator also runs the authors' PatchDPO IPAttnProcessor
                                 (ip_adapter/attention_processor.py, text and image tokens
                                 concatenated) on the same weights and asserts the same output.
  resampler.safetensors          IP-Adapter's Resampler (tencent-ailab/IP-Adapter
                                 ip_adapter/resampler.py; identical in PatchDPO) under the release
                                 keys "image_proj.*": embedding 12, dim 16, depth 2, dim_head 4,
                                 heads 2, 3 queries, output 10, ff_mult 2; x [2, 5, 12]
  image_proj.safetensors         IP-Adapter's ImageProjModel (ip_adapter/ip_adapter.py) under
                                 "image_proj.*": image_embeds 12 -> 3 tokens of 16; x [2, 12]
  objectives.safetensors         the training objectives on B = 3 pairs [reference ; generated]:
                                 "mse" and "weighted" by the authors' train_patchdpo.py (its
                                 F.mse_loss branch and its weighted_mse_loss with
                                 region_weight = cat([1 - target_rmap, contra_rmap])),
                                 "diffusion-dpo" by Diffusion-DPO's train.py (its loss lines, on
                                 the same predictions, with the frozen model's prediction
                                 ref_pred); these are the scripts' own statements, compiled from
                                 the pinned files with ast and executed (see upstream_statements),
                                 not copies. "patch-dpo" is this project's objective (DESIGN.md
                                 section 1 item 3, lib/train/objectives.ts); no upstream code
                                 exists for it, so it stays a hand-written PyTorch formula here.
  infonce.safetensors            symmetric InfoNCE of a [6, 8], b [6, 8], temperature 0.07: our own
                                 formula (lib/train/infonce.ts; rows normalized as
                                 x / sqrt(sum(x^2) + 1e-6)), hand-written here (no upstream)
  adamw.safetensors              10 steps of torch.optim.AdamW on w [3, 4] and b [5] with saved
                                 per-step gradients, without and with clip_grad_norm_(max_norm=1)

Conventions. Every block's loss is sum(out * R) with a random R (saved), so the gradient of the
output is R itself and every output element matters. Names: the weights under their checkpoint
keys (the upstream module's state_dict names), the inputs by role ("x", "temb", "context", ...),
"R", "out", "loss" and "grad.<name>". Weights are drawn in float32 (seeded torch.Generator) in the
upstream module's parameter order (upstream.draw_params); the module then runs in float64 on those
float32 values (torch.nn.utils.stateless.functional_call, so autograd reaches each weight) and the
results are rounded to float32. Where upstream itself computes in float32 (the Resampler's softmax,
`.float()` in train_patchdpo.py's losses) those parts carry float32 rounding; the tests' tolerance
(1e-4 + 1e-4 |ref|) is far above it.

--check recomputes every fixture from the weights and inputs stored in the committed file with the
upstream modules, and prints the largest difference to the stored results.

Needs /usr/bin/python3 with torch (Debian python3-torch 1.13) and the extracted upstream trees
(bench/parity/fetch_upstream.py). Writes with bench/parity/safetensors_io.py.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)
import upstream  # noqa: E402  (bench/parity/upstream.py)

upstream.setup(extra=["IP-Adapter"])

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "parity")
F64 = torch.float64


def write_safetensors(path, tensors, metadata):
    """Writes the torch tensors as F32 in insertion order, with metadata."""
    arrays = {k: v.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4") for k, v in tensors.items()}
    safetensors_io.write_safetensors(path, arrays, metadata)


class Draw:
    """Seeded float32 draws, returned as float64 leaves that require grad."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0):
        v = torch.randn(*shape, generator=self.gen, dtype=torch.float32) * scale + shift
        return v.to(F64).requires_grad_(True)


def fixture(path, leaves, extra, loss, description):
    """Backpropagates `loss` and writes leaves, their gradients and `extra` tensors."""
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    out = dict(leaves)
    out.update(extra)
    out["loss"] = loss.detach().reshape(1)
    for n, g in zip(names, grads):
        out[f"grad.{n}"] = g
    meta = {
        "generator": "bench/parity/make_train_fixtures.py",
        "torch": torch.__version__,
        "compute": "float64 on float32 inputs, stored float32",
        "loss": "sum(out * R)" if "R" in extra else "the block's loss",
        "description": description,
        "inputs": json.dumps(names),
    }
    write_safetensors(path, out, meta)


# ------------------------------------------------------------------------------ upstream blocks

class Block:
    """One block fixture: `draw(gen)` returns (inputs, weights, consts) in float32 (the inputs first
    in the fixture's leaf order; consts hold the random loss weights R), `compute(leaves, consts)`
    runs the upstream module in float64 and returns its outputs by name; the loss is the sum over
    `pairs` (output, R) of sum(output * R). The fixture stores the leaves, the consts, the outputs,
    the loss and the gradient of the loss with respect to every leaf."""

    def __init__(self, file, seed, draw, compute, description, sources, pairs=(("out", "R"),), out=None, generator=None, config=None):
        self.file, self.seed, self.draw, self.compute = file, seed, draw, compute
        self.description, self.sources, self.pairs, self.config = description, sources, list(pairs), config
        self.out = out or OUT
        self.generator = generator or "bench/parity/make_train_fixtures.py"

    def loss(self, outs, consts):
        return sum((outs[o] * consts[r]).sum() for o, r in self.pairs)

    def generate(self):
        gen = torch.Generator().manual_seed(self.seed)
        inputs, weights, consts = self.draw(gen)
        leaves = {k: v.to(F64).requires_grad_(True) for k, v in {**inputs, **weights}.items()}
        consts64 = {k: v.to(F64) for k, v in consts.items()}
        outs = self.compute(leaves, consts64)
        loss = self.loss(outs, consts64)
        names = list(leaves)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names])
        tensors = dict(leaves)
        tensors.update(consts)
        tensors.update(outs)
        tensors["loss"] = loss.detach().reshape(1)
        tensors.update({f"grad.{n}": g for n, g in zip(names, grads)})
        meta = {
            "generator": self.generator,
            "torch": torch.__version__,
            "upstream": upstream.provenance(*self.sources),
            "compute": "the upstream module in float64 on float32 inputs and weights, stored float32",
            "loss": " + ".join(f"sum({o} * {r})" for o, r in self.pairs),
            "description": self.description,
            "inputs": json.dumps(names),
        }
        if self.config is not None:
            meta["config"] = json.dumps(self.config)
        write_safetensors(os.path.join(self.out, self.file), tensors, meta)

    def check(self, rename=None):
        """Recomputes the committed fixture from its own weights and inputs; returns the Diff."""
        meta, t = upstream.read_fixture(os.path.join(self.out, self.file))
        rename = rename or {}
        names = json.loads(meta["inputs"])
        leaves = {rename.get(n, n): t[n].clone().requires_grad_(True) for n in names}
        consts = {r: t[r] for _, r in self.pairs}
        outs = self.compute(leaves, consts)
        loss = self.loss(outs, consts)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        d = upstream.Diff(self.file)
        for k, v in outs.items():
            d.add(k, v, t[k])
        d.add("loss", loss.reshape(1), t["loss"])
        for n, g in zip(names, grads):
            d.add(f"grad.{n}", g, t[f"grad.{n}"])
        return d


def randn(gen, *shape, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale + shift


# transformers Dinov2Layer

def _dinov2_layer():
    from transformers import Dinov2Config
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Layer
    cfg = Dinov2Config(hidden_size=32, num_attention_heads=4, mlp_ratio=2, layer_norm_eps=1e-6, hidden_act="gelu",
                       layerscale_value=1.0, qkv_bias=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return Dinov2Layer(cfg).eval().to(F64)


def vit_block_draw(gen):
    w = upstream.draw_params(_dinov2_layer(), gen, special=lambda n, s: (0.2, 0.5) if n.endswith("lambda1") else None)
    return {"x": randn(gen, 2, 5, 32)}, w, {"R": randn(gen, 2, 5, 32)}


def vit_block_compute(leaves, consts):
    layer = _dinov2_layer()
    return {"out": upstream.call(layer, {k: v for k, v in leaves.items() if k != "x"}, leaves["x"])[0]}


# diffusers ResnetBlock2D

def _resnet_block():
    from diffusers.models.resnet import ResnetBlock2D
    return ResnetBlock2D(in_channels=8, out_channels=16, temb_channels=12, groups=4, eps=1e-5).eval().to(F64)


def unet_resnet_block_draw(gen):
    w = upstream.draw_params(_resnet_block(), gen)
    return {"x": randn(gen, 2, 8, 6, 6), "temb": randn(gen, 2, 12)}, w, {"R": randn(gen, 2, 16, 6, 6)}


def unet_resnet_block_compute(leaves, consts):
    block = _resnet_block()
    return {"out": upstream.call(block, {k: v for k, v in leaves.items() if k not in ("x", "temb")}, leaves["x"], leaves["temb"])}


# diffusers Attention + IPAdapterAttnProcessor (cross-checked with the authors' IPAttnProcessor)

IP_SCALE = 0.7


def _cross_attention():
    from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor
    proc = IPAdapterAttnProcessor(hidden_size=16, cross_attention_dim=24, num_tokens=(4,), scale=IP_SCALE)
    return Attention(query_dim=16, cross_attention_dim=24, heads=2, dim_head=8, bias=False, out_bias=True, processor=proc).eval().to(F64)


def cross_attention_draw(gen):
    w = upstream.draw_params(_cross_attention(), gen)
    inputs = {"x": randn(gen, 2, 9, 16), "context": randn(gen, 2, 7, 24), "image_tokens": randn(gen, 2, 4, 24)}
    return inputs, w, {"R": randn(gen, 2, 9, 16)}


def cross_attention_compute(leaves, consts):
    INPUTS = ("x", "context", "image_tokens")
    w = {k: v for k, v in leaves.items() if k not in INPUTS}
    attn = _cross_attention()
    out = upstream.call(attn, w, leaves["x"], encoder_hidden_states=(leaves["context"], [leaves["image_tokens"]]))
    # The authors' processor (PatchDPO ip_adapter/attention_processor.py, IP-Adapter's with a
    # frozen-copy switch) on the same weights: text and image tokens concatenated, split by num_tokens.
    from diffusers.models.attention_processor import Attention
    pd = upstream.load_file_module("patchdpo_attention_processor", "PatchDPO", "ip_adapter/attention_processor.py")
    theirs = Attention(query_dim=16, cross_attention_dim=24, heads=2, dim_head=8, bias=False, out_bias=True,
                       processor=pd.IPAttnProcessor(hidden_size=16, cross_attention_dim=24, scale=IP_SCALE, num_tokens=4)).eval().to(F64)
    w2 = {k.replace("processor.to_k_ip.0.", "processor.to_k_ip.").replace("processor.to_v_ip.0.", "processor.to_v_ip."): v for k, v in w.items()}
    with torch.no_grad():
        out2 = upstream.call(theirs, w2, leaves["x"], encoder_hidden_states=torch.cat([leaves["context"], leaves["image_tokens"]], 1))
    gap = (out.detach() - out2).abs().max().item()
    assert gap < 1e-12, f"diffusers IPAdapterAttnProcessor and PatchDPO IPAttnProcessor differ by {gap}"
    return {"out": out}


# IP-Adapter Resampler and ImageProjModel

RESAMPLER = dict(dim=16, depth=2, dim_head=4, heads=2, num_queries=3, embedding_dim=12, output_dim=10, ff_mult=2)


def _resampler():
    from ip_adapter.resampler import Resampler
    return Resampler(**RESAMPLER).eval().to(F64)


def resampler_draw(gen):
    w = upstream.draw_params(_resampler(), gen, prefix="image_proj.",
                             special=lambda n, s: (RESAMPLER["dim"] ** -0.5, 0.0) if n == "latents" else None)
    return {"x": randn(gen, 2, 5, 12)}, w, {"R": randn(gen, 2, 3, 10)}


def resampler_compute(leaves, consts):
    return {"out": upstream.call(_resampler(), leaves, leaves["x"], prefix="image_proj.")}


def _image_proj():
    from ip_adapter.ip_adapter import ImageProjModel
    return ImageProjModel(cross_attention_dim=16, clip_embeddings_dim=12, clip_extra_context_tokens=3).eval().to(F64)


def image_proj_draw(gen):
    w = upstream.draw_params(_image_proj(), gen, prefix="image_proj.")
    return {"x": randn(gen, 2, 12)}, w, {"R": randn(gen, 2, 3, 16)}


def image_proj_compute(leaves, consts):
    return {"out": upstream.call(_image_proj(), leaves, leaves["x"], prefix="image_proj.")}


BLOCKS = [
    Block("vit_block.safetensors", 1, vit_block_draw, vit_block_compute,
          "transformers Dinov2Layer hidden 32, heads 4, mlp 64, layer scale, LayerNorm eps 1e-6, erf GELU; x [2,5,32]", ["transformers"]),
    Block("unet_resnet_block.safetensors", 2, unet_resnet_block_draw, unet_resnet_block_compute,
          "diffusers ResnetBlock2D 8->16 channels, 6x6, batch 2, GroupNorm(4, 1e-5), temb 12, conv_shortcut 1x1", ["diffusers"]),
    Block("cross_attention.safetensors", 3, cross_attention_draw, cross_attention_compute,
          "diffusers Attention heads 2, dim 16, context 24 with IPAdapterAttnProcessor (scale 0.7, 4 image tokens); "
          "same output as PatchDPO's IPAttnProcessor (asserted)", ["diffusers", "PatchDPO"]),
    Block("resampler.safetensors", 6, resampler_draw, resampler_compute,
          "IP-Adapter Resampler: embedding 12, dim 16, depth 2, dim_head 4, heads 2, queries 3, output 10, ff_mult 2; x [2,5,12]", ["IP-Adapter"]),
    Block("image_proj.safetensors", 8, image_proj_draw, image_proj_compute,
          "IP-Adapter ImageProjModel: image_embeds 12 -> 3 tokens of 16 (proj, LayerNorm); x [2,12]", ["IP-Adapter"]),
]


# ------------------------------------------------------------------------------ InfoNCE

def infonce():
    N, C, temperature = 6, 8, 0.07
    d = Draw(4)
    a = d.randn(N, C)
    # b: noisy copies of a, so the diagonal is (mostly) the best match, as for corresponding patches.
    with torch.no_grad():
        b0 = a.detach() + 0.8 * torch.randn(N, C, generator=d.gen, dtype=torch.float32).to(F64)
    b = b0.to(torch.float32).to(F64).requires_grad_(True)

    def l2normalize(t):  # lib/train/infonce.ts's formula (not F.normalize's)
        return t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6)

    logits = l2normalize(a) @ l2normalize(b).T / temperature
    target = torch.arange(N)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    fixture(os.path.join(OUT, "infonce.safetensors"), {"a": a, "b": b}, {"logits": logits}, loss,
            "symmetric InfoNCE, temperature 0.07, rows normalized as x / sqrt(sum x^2 + 1e-6)")


# ------------------------------------------------------------------------------ AdamW

def adamw():
    steps, lr, betas, eps, wd = 10, 1e-2, (0.9, 0.999), 1e-8, 0.01
    gen = torch.Generator().manual_seed(5)
    init = {"w": torch.randn(3, 4, generator=gen), "b": torch.randn(5, generator=gen)}
    grads = {k: torch.randn(steps, *v.shape, generator=gen) for k, v in init.items()}
    # Step 3's gradients are small (global norm < 1), so the clipped run also has a step clipping leaves alone.
    for k in grads:
        grads[k][3] *= 0.05
    out = {f"init.{k}": v for k, v in init.items()}
    out.update({f"grads.{k}": v for k, v in grads.items()})
    for clip in (False, True):
        params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
        opt = torch.optim.AdamW(list(params.values()), lr=lr, betas=betas, eps=eps, weight_decay=wd)
        history = {k: [] for k in params}
        norms = []
        for s in range(steps):
            opt.zero_grad()
            for k, p in params.items():
                p.grad = grads[k][s].clone()
            if clip:
                norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm=1.0)))
            opt.step()
            for k, p in params.items():
                history[k].append(p.detach().clone())
        tag = "clipped" if clip else "params"
        for k in params:
            out[f"{tag}.{k}"] = torch.stack(history[k])
        if clip:
            out["clip_norm"] = torch.tensor(norms)
    meta = {
        "generator": "bench/parity/make_train_fixtures.py",
        "torch": torch.__version__,
        "compute": "float32 (torch.optim.AdamW, foreach=None default)",
        "config": json.dumps({"lr": lr, "betas": list(betas), "eps": eps, "weight_decay": wd, "steps": steps, "max_norm": 1.0}),
        "description": "params.<p>[s] / clipped.<p>[s]: parameter after step s (0-based) without / with clip_grad_norm_(1.0); "
                       "grads.<p>[s]: gradient fed at step s; clip_norm[s]: total norm clip_grad_norm_ returned",
    }
    write_safetensors(os.path.join(OUT, "adamw.safetensors"), out, meta)


# ------------------------------------------------------------------------------ training objectives

def _is_if(node, segment, test):
    import ast
    return isinstance(node, ast.If) and segment(node.test) == test


def upstream_losses():
    """The loss statements of the two training scripts, compiled from the pinned files."""
    import ast
    mse, mse_at = upstream.upstream_statements(
        "PatchDPO", "train_patchdpo.py", lambda n, seg: n.body if _is_if(n, seg, "not args.use_dpo_loss") else None)
    weighted, weighted_at = upstream.upstream_statements(
        "PatchDPO", "train_patchdpo.py", lambda n, seg: n.orelse if _is_if(n, seg, "not args.use_dpo_loss") else None)
    wfun, wfun_at = upstream.upstream_statements(
        "PatchDPO", "train_patchdpo.py",
        lambda n, seg: [n] if isinstance(n, ast.FunctionDef) and n.name == "weighted_mse_loss" else None)
    dpo, dpo_at = upstream.upstream_statements(
        "DiffusionDPO", "train.py",
        lambda n, seg: n.body if _is_if(n, seg, "args.train_method == 'dpo'") and "logsigmoid" in seg(n) else None)
    where = {"mse": f"hqhQAQ/PatchDPO {mse_at}", "weighted": f"hqhQAQ/PatchDPO {wfun_at} and {weighted_at}",
             "diffusion-dpo": f"SalesforceAIResearch/DiffusionDPO {dpo_at}"}
    return (mse, weighted, wfun, dpo), where


class _Args:
    use_dpo_loss = True
    train_method = "dpo"


class _FrozenUNet:
    """Stands in for Diffusion-DPO's ref_unet: returns the stored reference prediction."""

    def __init__(self, pred):
        self.pred = pred

    def __call__(self, *args, **kwargs):
        return type("Out", (), {"sample": self.pred})()


def objectives():
    """Losses and gradients of the objectives on B = 3 pairs [reference ; generated], 4 latent
    channels, 4x4 latents. Margins m_w - m_l are asymmetric (implicit accuracy 1/3 or 2/3, each pair
    far from the decision boundary) so that reversing the comparison changes the accuracy."""
    B, C, S, beta, lam = 3, 4, 4, 50.0, 0.5
    gen = torch.Generator().manual_seed(7)
    pred = randn(gen, 2 * B, C, S, S).to(F64).requires_grad_(True)
    target = randn(gen, 2 * B, C, S, S).to(F64)
    ref_pred = (target + 0.8 * randn(gen, 2 * B, C, S, S).to(F64)).to(torch.float32).to(F64)
    q_ref = torch.rand(B, S, S, generator=gen).to(F64)
    q_gen = torch.rand(B, S, S, generator=gen).to(F64)
    (mse_code, weighted_code, wfun_code, dpo_code), where = upstream_losses()
    losses = {}

    # train_patchdpo.py: noise_pred / noise, batch["target_rmap"] / batch["contra_rmap"] [B, h, w]
    ns = {"torch": torch, "F": F, "args": _Args, "noise_pred": pred, "noise": target,
          "batch": {"target_rmap": q_ref, "contra_rmap": q_gen}}
    exec(wfun_code, ns)
    exec(mse_code, ns)
    losses["mse"] = ns["loss"]
    exec(weighted_code, ns)
    losses["weighted"] = ns["loss"]
    assert ns["region_weight"].shape == (2 * B, 1, S, S)

    # Diffusion-DPO train.py: model_pred / target, ref_unet(*model_batch_args, ...).sample, args.beta_dpo
    args = type("Args", (), {"beta_dpo": beta, "train_method": "dpo"})
    ns = {"torch": torch, "F": F, "args": args, "model_pred": pred, "target": target, "ref_unet": _FrozenUNet(ref_pred),
          "model_batch_args": (), "added_cond_kwargs": None}
    exec(dpo_code, ns)
    losses["diffusion-dpo"] = ns["loss"]
    dpo_acc = ns["implicit_acc"].to(F64).reshape(1)

    # patch-dpo: this project's objective (lib/train/objectives.ts), no upstream code exists.
    e = ((pred - target) ** 2).mean(dim=1)
    e_ref = ((ref_pred - target) ** 2).mean(dim=1)

    def wmean(u, err):
        return (u * err).sum(dim=(1, 2)) / (u.sum(dim=(1, 2)) + 1e-6)

    def patch_dpo(q_r, q_g, lam_):
        a, b = 1 - q_r, 1 - q_g
        m_w = wmean(a, e[:B]) - wmean(a, e_ref[:B])
        m_l = wmean(b, e[B:]) - wmean(b, e_ref[B:])
        return -F.logsigmoid(-beta / 2 * (m_w - m_l)).mean() + lam_ * (q_g * e[B:]).mean(), m_w, m_l

    losses["patch-dpo"], m_w, m_l = patch_dpo(q_ref, q_gen, lam)
    acc = (m_w < m_l).to(F64).mean().reshape(1)
    margins = (m_w - m_l).detach()
    assert acc.item() not in (0.0, 0.5, 1.0) and margins.abs().min().item() > 1e-3, f"margins {margins.tolist()}"
    # With all-zero quality maps patch-dpo is Diffusion-DPO (up to the 1e-6 in the weighted mean).
    zero = torch.zeros(B, S, S, dtype=F64)
    gap = (patch_dpo(zero, zero, lam)[0] - losses["diffusion-dpo"]).abs().item()
    assert gap < 1e-6, f"patch-dpo with zero maps vs Diffusion-DPO: {gap}"

    out = {"pred": pred, "target": target, "ref_pred": ref_pred, "q_ref": q_ref, "q_gen": q_gen, "implicit_acc": acc,
           "implicit_acc.diffusion-dpo": dpo_acc}
    for name, loss in losses.items():
        out[f"loss.{name}"] = loss.detach().reshape(1)
        out[f"grad.{name}.pred"] = torch.autograd.grad(loss, [pred], retain_graph=True)[0]
    meta = {
        "generator": "bench/parity/make_train_fixtures.py", "torch": torch.__version__,
        "upstream": upstream.provenance("PatchDPO", "DiffusionDPO"),
        "statements": json.dumps(where),
        "compute": "float64 on float32 inputs, stored float32 (train_patchdpo.py's losses cast to float32 with .float(), as upstream does)",
        "config": json.dumps({"beta": beta, "lambda": lam}),
        "description": "loss.<objective> and grad.<objective>.pred for mse, weighted (train_patchdpo.py), diffusion-dpo "
                       "(Diffusion-DPO train.py; compare with patch-dpo on all-zero quality maps), patch-dpo (ours); "
                       "implicit_acc: patch-dpo's share of pairs with m_w < m_l; implicit_acc.diffusion-dpo: Diffusion-DPO's",
    }
    write_safetensors(os.path.join(OUT, "objectives.safetensors"), out, meta)


def check_objectives():
    """Recomputes the upstream losses (mse, weighted, diffusion-dpo when stored) of the committed
    objectives fixture from its own predictions and maps."""
    meta, t = upstream.read_fixture(os.path.join(OUT, "objectives.safetensors"))
    (mse_code, weighted_code, wfun_code, dpo_code), _ = upstream_losses()
    d = upstream.Diff("objectives.safetensors")
    pred = t["pred"].clone().requires_grad_(True)
    ns = {"torch": torch, "F": F, "args": _Args, "noise_pred": pred, "noise": t["target"],
          "batch": {"target_rmap": t["q_ref"], "contra_rmap": t["q_gen"]}}
    exec(wfun_code, ns)
    exec(mse_code, ns)
    got = {"mse": ns["loss"]}
    exec(weighted_code, ns)
    got["weighted"] = ns["loss"]
    if "loss.diffusion-dpo" in t:
        beta = json.loads(meta["config"])["beta"]
        ns = {"torch": torch, "F": F, "args": type("Args", (), {"beta_dpo": beta}), "model_pred": pred, "target": t["target"],
              "ref_unet": _FrozenUNet(t["ref_pred"]), "model_batch_args": (), "added_cond_kwargs": None}
        exec(dpo_code, ns)
        got["diffusion-dpo"] = ns["loss"]
        d.add("implicit_acc.diffusion-dpo", ns["implicit_acc"].to(F64).reshape(1), t["implicit_acc.diffusion-dpo"])
    for name, loss in got.items():
        d.add(f"loss.{name}", loss.reshape(1), t[f"loss.{name}"])
        d.add(f"grad.{name}.pred", torch.autograd.grad(loss, [pred], retain_graph=True)[0], t[f"grad.{name}.pred"])
    return d


# Names of the fixtures written before the generators ran upstream code (for --check on them).
LEGACY_NAMES = {"to_k_ip.weight": "processor.to_k_ip.0.weight", "to_v_ip.weight": "processor.to_v_ip.0.weight"}


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    os.makedirs(OUT, exist_ok=True)
    if "--check" in sys.argv[1:]:
        for b in BLOCKS:
            if os.path.exists(os.path.join(OUT, b.file)):
                print(b.check(LEGACY_NAMES))
        print(check_objectives())
        return
    for b in BLOCKS:
        b.generate()
    infonce()
    adamw()
    objectives()


if __name__ == "__main__":
    main()
