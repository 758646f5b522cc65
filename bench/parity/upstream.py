"""The upstream code the parity fixtures are computed with: pinned commits, and the import setup.

DESIGN.md section 7: parity fixtures come from the upstream implementations themselves (diffusers,
transformers, IP-Adapter, Diffusion-DPO, the authors' PatchDPO, openai/CLIP), run on Debian's torch
1.13, not from our own transcriptions. `bench/parity/fetch_upstream.py` extracts the files listed in
UPSTREAM below from git snapshots of the public repositories into bench/parity/.upstream/ (git-ignored,
never committed: the project does not copy upstream code); the generators call `setup()` to put
those trees (and bench/parity/shims/ for the compiled packages Debian lacks) on sys.path, and
`provenance()` to record the commits in each fixture's metadata.

Commit choice. transformers: the version the authors' PatchDPO pins (requirements.txt: torch
1.13.1, diffusers 0.23.1, transformers 4.35.2), taken at the main-branch commit from which v4.35
was branched (v4.35.2 = that branch plus patch fixes to other models); Dinov2-with-registers only
exists from transformers v4.48, taken at the commit from which v4.48 was branched and run in its
own process. diffusers: 0.23.1 has no IP-Adapter attention processors, and our TypeScript follows
current diffusers (its schedulers were written from main at 58eb52c, which needs torch >= 2.6);
v0.31.0 is the newest release that still runs on torch 1.13 (v0.32 uses torch.float8 types at
import), has IPAdapterAttnProcessor with ModuleList `to_k_ip` / `to_v_ip` (the
"processor.to_k_ip.0.weight" key names our loader uses), pipelines that take
`ip_adapter_image_embeds`, and DDIM / Euler schedulers whose code differs from main's only in
type annotations, docstrings and options we do not use (checked with git diff).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, ".upstream")
SHIMS = os.path.join(HERE, "shims")

# name -> (GitHub repository, commit, what the commit is, paths extracted, python path inside the tree)
UPSTREAM = {
    "diffusers": ("huggingface/diffusers", "89e4d6219805975bd7d253a267e1951badc9f1c0", "tag v0.31.0",
                  ["src/diffusers"], "src"),
    "transformers": ("huggingface/transformers", "0ed6729bb130cb1d43fb2ede60b0c50f9ee14d68",
                     "main at the v4.35 branch point (2023-11-02, parent of the 4.36.0.dev0 bump bc78fd1)",
                     ["src/transformers"], "src"),
    "transformers-4.48": ("huggingface/transformers", "52e1f87c7d2fdaf147aa625c169ad440672cb3cb",
                          "main at the v4.48 branch point (2025-01-10, parent of the 4.49.0-dev bump f63829c)",
                          ["src/transformers"], "src"),
    "huggingface_hub": ("huggingface/huggingface_hub", "5c4666cd42698b668f91cebc8d4257cdfca329fb", "tag v0.24.7",
                        ["src/huggingface_hub"], "src"),
    "einops": ("arogozhnikov/einops", "5b960621df194a1373f1f8419db83338b3620327", "tag v0.7.0", ["einops"], ""),
    "IP-Adapter": ("tencent-ailab/IP-Adapter", "62e4af9d0c1ac7d5f8dd386a0ccf2211346af1a2", "main (2024-06-28)",
                   ["ip_adapter"], ""),
    "DiffusionDPO": ("SalesforceAIResearch/DiffusionDPO", "5233e75919f912f3f631958ee4ebb5b5204382d9",
                     "main (2025-11-10; train.py last changed in 8d3ee5c, 2023-12-27)", ["train.py"], ""),
    "PatchDPO": ("hqhQAQ/PatchDPO", "558f0c269744463b60fbe47a67233626908083c3", "main (2025-07-02)",
                 ["train_patchdpo.py", "ip_adapter", "requirements.txt", "data/dreambooth_dataset.py"], ""),
    "ftfy": ("rspeer/python-ftfy", "02a634c7bb8e35c281d4088d8c0efd5bf3feef4b", "tag v6.1.1", ["ftfy"], ""),
    "CLIP": ("openai/CLIP", "d05afc436d78f1c48dc0dbf8e5980a9d471f35f6", "main (2026-03-25)", ["clip"], ""),
}

# Which trees go on sys.path together. "default": diffusers 0.31 + transformers 4.35 + hub 0.24.
# "transformers-4.48" (Dinov2-with-registers): transformers 4.48 + hub 0.24, in its own process.
STACKS = {
    "default": ["diffusers", "transformers", "huggingface_hub", "einops", "ftfy"],
    "transformers-4.48": ["transformers-4.48", "huggingface_hub"],
}


# Extra shim folders per stack (after the trees, before the shared shims).
STACK_SHIMS = {"transformers-4.48": [os.path.join(SHIMS, "transformers-4.48")]}


def tree(name):
    """The folder a source was extracted to: bench/parity/.upstream/<name>."""
    return os.path.join(ROOT, name)


def check(name):
    """Fails with the command to run unless `name` was extracted at its pinned commit."""
    repo, commit = UPSTREAM[name][0], UPSTREAM[name][1]
    stamp = os.path.join(tree(name), ".commit")
    have = open(stamp).read().strip() if os.path.exists(stamp) else None
    if have != commit:
        raise SystemExit(f"{name}: {tree(name)} holds {have or 'nothing'}, want {repo}@{commit}; "
                         f"run /usr/bin/python3 bench/parity/fetch_upstream.py")


def path_of(name):
    check(name)
    return os.path.join(tree(name), UPSTREAM[name][4])


def setup(stack="default", extra=()):
    """Puts the upstream trees of `stack` (and `extra` sources) and the shims first on sys.path."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in reversed(list(STACKS[stack]) + list(extra)):
        p = path_of(name)
        if p not in sys.path:
            sys.path.insert(0, p)
    for extra_shims in STACK_SHIMS.get(stack, []) + [SHIMS]:
        if extra_shims not in sys.path:
            sys.path.append(extra_shims)  # last: a real package, when present, wins over its shim
    import shims_setup  # noqa: F401  (bench/parity/shims/shims_setup.py)


def provenance(*names):
    """"repo@commit (what)" for each source, for the fixtures' metadata."""
    return "; ".join(f"{UPSTREAM[n][0]}@{UPSTREAM[n][1]} ({UPSTREAM[n][2]})" for n in names)


# ------------------------------------------------------------------------------ shared by the generators

def draw_params(module, gen, prefix="", special=None):
    """Seeded float32 draws for every parameter of `module`, in its registration order
    (named_parameters), under `prefix` + its state-dict name, at scales where every part matters:
    LayerNorm / GroupNorm weights 1 + 0.1 N, biases 0.1 N, matrices and kernels N / sqrt(fan_in).
    `special(name, shape)` may return (scale, shift) for other parameters (latents, LayerScale,
    embeddings); a parameter none of these rules covers is an error."""
    import math
    import torch
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm)
    out = {}
    for mname, mod in module.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            rule = special(name, tuple(p.shape)) if special else None
            if rule is None:
                if isinstance(mod, norms) and pname == "weight":
                    rule = (0.1, 1.0)
                elif pname == "bias":
                    rule = (0.1, 0.0)
                elif p.dim() >= 2:
                    rule = (1 / math.sqrt(math.prod(p.shape[1:])), 0.0)
                else:
                    raise ValueError(f"draw_params: no rule for {name} {tuple(p.shape)}")
            scale, shift = rule
            out[prefix + name] = torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale + shift
    return out


def _bind(module, params, prefix):
    mine = dict(module.named_parameters())
    given = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    missing, extra = sorted(set(mine) - set(given)), sorted(set(given) - set(mine))
    if missing or extra:
        raise ValueError(f"{type(module).__name__}: missing {missing[:5]}, unexpected {extra[:5]}")
    return {k: given[k] for k in mine}


def call(module, params, *args, prefix="", **kwargs):
    """module(*args, **kwargs) with its parameters replaced by params[prefix + name] (autograd flows
    to those tensors). Every parameter of the module must be given, and every params entry under
    `prefix` must be one of the module's: a fixture's weights are exactly the module's state."""
    from torch.nn.utils.stateless import functional_call
    return functional_call(module, _bind(module, params, prefix), args, kwargs)


def bound(module, params, prefix=""):
    """Context manager: inside it, `module`'s parameters are params[prefix + name] (as in call), for
    calling methods other than forward (AutoencoderKL.encode / decode)."""
    from torch.nn.utils.stateless import _reparametrize_module
    return _reparametrize_module(module, _bind(module, params, prefix))


def read_fixture(path):
    """(metadata, {name: float64 torch tensor (int64 for integer dtypes)}) of a safetensors file."""
    import json
    import struct
    import numpy as np
    import torch
    dtypes = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1"}
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dtypes[v["dtype"]]).reshape(v["shape"])
        t = torch.from_numpy(arr.copy())
        out[k] = t.to(torch.int64) if v["dtype"] in ("I64", "I32", "U8") else t.to(torch.float64)
    return meta, out


class Diff:
    """Largest differences between two sets of results, as the tests measure them: max |a - b|,
    the same relative to max |b| of each tensor, and max |a - b| / (1e-4 + 1e-4 |b|)."""

    def __init__(self, label):
        self.label, self.abs, self.rel, self.ratio, self.worst = label, 0.0, 0.0, 0.0, ""

    def add(self, name, have, want):
        have, want = have.detach().double(), want.detach().double()
        if have.shape != want.shape:
            raise ValueError(f"{self.label} {name}: shape {tuple(have.shape)} vs {tuple(want.shape)}")
        d = (have - want).abs()
        a = d.max().item() if d.numel() else 0.0
        r = (d / (1e-4 + 1e-4 * want.abs())).max().item() if d.numel() else 0.0
        scale = want.abs().max().item() if d.numel() else 0.0
        if r > self.ratio:
            self.ratio, self.worst = r, name
        self.abs = max(self.abs, a)
        if scale > 1e-6:
            self.rel = max(self.rel, a / scale)

    def __str__(self):
        return (f"{self.label}: max abs {self.abs:.2e}, max rel-to-scale {self.rel:.2e}, "
                f"worst |diff|/(1e-4 + 1e-4 |ref|) {self.ratio:.2e}{' (' + self.worst + ')' if self.worst else ''}")


def upstream_statements(name, relpath, find):
    """Compiles statements of an upstream script that cannot be imported as a function (a loss
    computed inline in a training loop): parses `relpath` of source `name` with ast, and
    `find(node, segment)` picks the statements (a list of ast statements, or None) while walking
    the tree; `segment(node)` is the node's source text. Returns (code, "path lines a-b"): the
    code runs upstream's own text, not a copy of it, so an upstream change shows up here."""
    import ast
    path = os.path.join(tree(name), relpath)
    check(name)
    src = open(path).read()
    mod = ast.parse(src)
    segment = lambda n: ast.get_source_segment(src, n)
    for node in ast.walk(mod):
        stmts = find(node, segment)
        if stmts:
            code = compile(ast.Module(body=list(stmts), type_ignores=[]), path, "exec")
            where = f"{relpath} lines {stmts[0].lineno}-{stmts[-1].end_lineno}"
            return code, where
    raise SystemExit(f"{name}: the statements were not found in {relpath}; has the pinned commit changed?")


def load_file_module(modname, name, relpath):
    """Imports one upstream file as module `modname` (for files whose package name collides with
    another source's, such as the two `ip_adapter` packages)."""
    import importlib.util
    check(name)
    spec = importlib.util.spec_from_file_location(modname, os.path.join(tree(name), relpath))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


class empty_weights:
    """Context manager: modules built inside it get their parameters on the meta device (shapes, no
    memory), by moving each registered parameter there, as accelerate's init_empty_weights does
    (accelerate is not installed here). For listing the state dicts of full-size models."""

    def __enter__(self):
        import torch
        self.old = torch.nn.Module.register_parameter

        def register_parameter(module, name, param):
            self.old(module, name, param)
            if param is not None:
                p = module._parameters[name]
                module._parameters[name] = type(p)(p.to(torch.device("meta")), requires_grad=p.requires_grad)

        torch.nn.Module.register_parameter = register_parameter
        return self

    def __exit__(self, *exc):
        import torch
        torch.nn.Module.register_parameter = self.old
        return False


class default_dtype:
    """Context manager: torch's default dtype inside. transformers' CLIP text model builds its causal
    mask with torch.full(..., torch.finfo(dtype).min) without a dtype, which overflows the default
    float32 when the model runs in float64; a float64 user sets the default dtype, and so do we.
    (The mask value does not matter beyond being very negative: exp underflows to 0 either way.)"""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        import torch
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        import torch
        torch.set_default_dtype(self.old)
        return False


def transformers_slow_tokenizers():
    """transformers' slow (Python) tokenizers without the compiled `tokenizers` package: transformers
    then defines its own AddedToken (a dataclass(eq=True)) that lacks two things tokenizers'
    AddedToken has and the tokenizer constructor uses: __hash__ (AddedTokens go in a set; tokenizers
    hashes by content) and __setstate__ (to mark a token special). Give the fallback class both.
    Call after importing transformers."""
    import transformers.tokenization_utils_base as tub
    if tub.AddedToken.__hash__ is None:
        tub.AddedToken.__hash__ = lambda self: hash(self.content)
    if not hasattr(tub.AddedToken, "__setstate__"):
        tub.AddedToken.__setstate__ = lambda self, state: self.__dict__.update(state)
