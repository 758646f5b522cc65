#!/usr/bin/python3
"""Golden fixtures for lib/models/clip-text.ts, clip-vision.ts and clipPreprocess (tests/models/clip.test.ts).

transformers is not installed here, so this file transcribes the modules of transformers'
modeling_clip.py into plain PyTorch, with the same module names (so state_dict keys are the
checkpoints' keys) and the same forward arithmetic:
  CLIPTextEmbeddings (token + position embedding), CLIPAttention (q/k/v/out_proj with bias,
  scale head_dim^-0.5, additive causal mask filled with float32's lowest value), CLIPMLP (fc1, act,
  fc2), CLIPEncoderLayer (pre-norm, layer_norm1/2), CLIPTextTransformer (final_layer_norm, pooled at
  the first eos_token_id), CLIPVisionEmbeddings (class_embedding, bias-free patch conv, position
  embedding), pre_layrnorm, post_layernorm of CLS, text_projection / visual_projection (no bias).
  hidden_states = (embeddings [after pre_layrnorm for vision], output of each layer).

Writes tests/fixtures/clip/:
  text_tiny.safetensors    CLIPTextModelWithProjection: vocab 100, hidden 32, 2 layers, 4 heads,
                           MLP 64, max positions 16, quick_gelu, projection 24; bos 98, eos 99;
                           input_ids [3, 16] (padded with eos / padded with 0 / truncated full row)
                           and eos_index [3] (I64); outputs last_hidden_state, hidden_states.{0,1,2},
                           pooled, text_embeds
  vision_tiny.safetensors  CLIPVisionModelWithProjection: hidden 32, 2 layers, 4 heads, MLP 64,
                           patch 8, image 32, gelu (erf), projection 24; pixel_values [2, 3, 32, 32];
                           outputs last_hidden_state, hidden_states.{0,1,2}, pooled, image_embeds
  preprocess.safetensors   torchvision Resize(size, BICUBIC) + CenterCrop(size) + ToTensor +
                           Normalize(CLIP mean/std) on PIL images: photo_dog_512x388.png at 64 and
                           synthetic_37x23.png at 16 (an odd crop excess: offset rounds half-to-even)
  tokenizer_golden.json    a tiny vocabulary + merges and the ids of a few sentences, from an
                           independent Python transcription of CLIP's tokenizer (bytes_to_unicode,
                           BPE with </w>, bos/eos, truncation keeping eos, padding); the `regex`
                           module is not installed, so \p{L} is approximated by [^\W\d_] and \p{N}
                           by \d, which agree on the test sentences
  <name>.params.txt        "name d0,d1,..." per line, the state_dict of the transcribed modules
                           (built on the meta device, no memory) for real configs: vit-b-32, vit-h-14,
                           vit-bigg-14 (CLIPVisionModelWithProjection), sd15-text (CLIPTextModel),
                           sdxl-text2 (CLIPTextModelWithProjection)

Weights and inputs are drawn in float32 (seeded); the models run in float64 on those values and the
results are stored as float32, so a fixture is the exact answer for its float32 inputs.
Needs /usr/bin/python3 with torch, torchvision and PIL (Debian packages). Tests never run this.
Usage: OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_clip_fixtures.py
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "clip")
F64 = torch.float64
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_safetensors(path, tensors, metadata):
    """Writes torch tensors in insertion order: integer tensors as I64, all others as F32."""
    arrays = {}
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype in (torch.int64, torch.int32):
            arrays[name] = t.to(torch.int64).numpy().astype("<i8")
        else:
            arrays[name] = t.to(torch.float32).numpy().astype("<f4")
    safetensors_io.write_safetensors(path, arrays, metadata)


# ------------------------------------------------------------------------------ modules

ACTS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class Attention(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        C = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.k_proj = nn.Linear(C, C, device=dev)
        self.v_proj = nn.Linear(C, C, device=dev)
        self.q_proj = nn.Linear(C, C, device=dev)
        self.out_proj = nn.Linear(C, C, device=dev)

    def forward(self, x, mask):
        B, L, C = x.shape
        d = C // self.heads
        split = lambda t: t.view(B, L, self.heads, d).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.matmul(q, k.transpose(-1, -2)) * d ** -0.5
        if mask is not None:
            w = w + mask
        o = torch.matmul(torch.softmax(w, dim=-1), v).transpose(1, 2).reshape(B, L, C)
        return self.out_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        self.act = ACTS[cfg["hidden_act"]]
        self.fc1 = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"], device=dev)
        self.fc2 = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"], device=dev)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.self_attn = Attention(cfg, dev)
        self.layer_norm1 = nn.LayerNorm(C, eps=eps, device=dev)
        self.mlp = MLP(cfg, dev)
        self.layer_norm2 = nn.LayerNorm(C, eps=eps, device=dev)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg, dev) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x, mask=None):
        states = [x]
        for layer in self.layers:
            x = layer(x, mask)
            states.append(x)
        return states


class TextEmbeddings(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"], device=dev)
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"], device=dev)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]].unsqueeze(0)


class TextTransformer(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        self.eos = cfg["eos_token_id"]
        self.embeddings = TextEmbeddings(cfg, dev)
        self.encoder = Encoder(cfg, dev)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"], device=dev)

    def forward(self, ids):
        x = self.embeddings(ids)
        L = ids.shape[1]
        mask = torch.full((L, L), torch.finfo(torch.float32).min, dtype=x.dtype).triu(1)
        states = self.encoder(x, mask)
        last = self.final_layer_norm(states[-1])
        # transformers (eos_token_id != 2 and ids not from the 49408 vocabulary): first eos position.
        eos_index = (ids == self.eos).int().argmax(dim=-1)
        pooled = last[torch.arange(ids.shape[0]), eos_index]
        return last, states, pooled, eos_index


class TextModelWithProjection(nn.Module):
    def __init__(self, cfg, dev=None, projection=True):
        super().__init__()
        self.text_model = TextTransformer(cfg, dev)
        if projection:
            self.text_projection = nn.Linear(cfg["hidden_size"], cfg["projection_dim"], bias=False, device=dev)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        C, P = cfg["hidden_size"], cfg["patch_size"]
        self.class_embedding = nn.Parameter(torch.empty(C, device=dev))
        self.patch_embedding = nn.Conv2d(cfg.get("num_channels", 3), C, P, stride=P, bias=False, device=dev)
        self.position_embedding = nn.Embedding((cfg["image_size"] // P) ** 2 + 1, C, device=dev)

    def forward(self, pixels):
        B = pixels.shape[0]
        p = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(B, 1, -1), p], dim=1)
        return x + self.position_embedding.weight.unsqueeze(0)


class VisionTransformer(nn.Module):
    def __init__(self, cfg, dev):
        super().__init__()
        C, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.embeddings = VisionEmbeddings(cfg, dev)
        self.pre_layrnorm = nn.LayerNorm(C, eps=eps, device=dev)
        self.encoder = Encoder(cfg, dev)
        self.post_layernorm = nn.LayerNorm(C, eps=eps, device=dev)

    def forward(self, pixels):
        states = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        last = states[-1]
        return last, states, self.post_layernorm(last[:, 0, :])


class VisionModelWithProjection(nn.Module):
    def __init__(self, cfg, dev=None, projection=True):
        super().__init__()
        self.vision_model = VisionTransformer(cfg, dev)
        if projection:
            self.visual_projection = nn.Linear(cfg["hidden_size"], cfg["projection_dim"], bias=False, device=dev)


# ------------------------------------------------------------------------------ random weights

def randomize(model, seed):
    """float32 draws (weights ~ N(0, 1/fan_in), norms 1 + 0.1 N, biases 0.1 N), then float64."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or "layernorm.weight" in name or "layrnorm.weight" in name or "final_layer_norm.weight" in name:
                v = 1 + 0.1 * torch.randn(p.shape, generator=gen)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=gen)
            elif "embedding" in name and "patch_embedding" not in name:
                v = 0.5 * torch.randn(p.shape, generator=gen)
            else:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
            p.copy_(v.to(torch.float32))
    return model.to(F64)


def text_fixture():
    cfg = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=16, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=24,
               bos_token_id=98, eos_token_id=99, pad_token_id=0)
    model = randomize(TextModelWithProjection(cfg), 11)
    gen = torch.Generator().manual_seed(12)
    L, bos, eos = 16, 98, 99
    rows = []
    for n, pad in ((5, eos), (9, 0), (14, None)):
        body = torch.randint(0, 98, (n,), generator=gen).tolist()
        row = [bos] + body + [eos]
        row += [pad] * (L - len(row)) if pad is not None else []
        rows.append(row)
    ids = torch.tensor(rows, dtype=torch.int64)
    with torch.no_grad():
        last, states, pooled, eos_index = model.text_model(ids)
        embeds = model.text_projection(pooled)
    out = {k: v for k, v in model.state_dict().items()}
    out["input_ids"] = ids
    out["eos_index"] = eos_index.to(torch.int64)
    out["last_hidden_state"] = last
    for i, s in enumerate(states):
        out[f"hidden_states.{i}"] = s
    out["pooled"] = pooled
    out["text_embeds"] = embeds
    write_safetensors(os.path.join(OUT, "text_tiny.safetensors"), out, {
        "generator": "bench/parity/make_clip_fixtures.py", "torch": torch.__version__,
        "compute": "float64 on float32 weights and inputs, stored float32",
        "config": json.dumps({"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", **cfg}),
    })


def vision_fixture():
    cfg = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
               image_size=32, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=24)
    model = randomize(VisionModelWithProjection(cfg), 21)
    gen = torch.Generator().manual_seed(22)
    pixels = torch.randn(2, 3, 32, 32, generator=gen).to(torch.float32)
    with torch.no_grad():
        last, states, pooled = model.vision_model(pixels.to(F64))
        embeds = model.visual_projection(pooled)
    out = {k: v for k, v in model.state_dict().items()}
    out["pixel_values"] = pixels
    out["last_hidden_state"] = last
    for i, s in enumerate(states):
        out[f"hidden_states.{i}"] = s
    out["pooled"] = pooled
    out["image_embeds"] = embeds
    write_safetensors(os.path.join(OUT, "vision_tiny.safetensors"), out, {
        "generator": "bench/parity/make_clip_fixtures.py", "torch": torch.__version__,
        "compute": "float64 on float32 weights and inputs, stored float32",
        "config": json.dumps({"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model", **cfg}),
    })


def preprocess_fixture():
    from PIL import Image
    from torchvision import transforms
    cases = {"photo_dog_512x388.png": 64, "synthetic_37x23.png": 16}
    out = {}
    for name, size in cases.items():
        img = Image.open(os.path.join(REPO, "tests", "fixtures", "images", name)).convert("RGB")
        t = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ])
        out[name] = t(img)
    write_safetensors(os.path.join(OUT, "preprocess.safetensors"), out, {
        "generator": "bench/parity/make_clip_fixtures.py", "torchvision": __import__("torchvision").__version__,
        "sizes": json.dumps(cases),
    })


# ------------------------------------------------------------------------------ tokenizer

def bytes_to_unicode():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tokenizer_golden():
    import re
    chars = "abcdefghijklmnopqrstuvwxyz0123456789!'.,"
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = ["t h", "th e</w>", "a t</w>", "c at</w>", "o n", "p h", "o t", "ph ot", "phot o</w>", "o f</w>",
              "' s</w>", "h at</w>", "a t", "c at", "cat s</w>", "th e", "l a", "la i", "lai t</w>", "a u</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
    enc = bytes_to_unicode()
    pat = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.IGNORECASE)

    def bpe(token):
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return [token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(text, max_length):
        text = re.sub(r"\s+", " ", text).strip().lower()
        unk = vocab["<|endoftext|>"]
        ids = []
        for piece in pat.findall(text):
            piece = "".join(enc[b] for b in piece.encode("utf-8"))
            ids += [vocab.get(t, unk) for t in bpe(piece)]
        ids = [vocab["<|startoftext|>"]] + ids[: max_length - 2] + [vocab["<|endoftext|>"]]
        eos_index = ids.index(vocab["<|endoftext|>"])  # the first eos (an unk or an eos typed in the text counts)
        return ids + [vocab["<|endoftext|>"]] * (max_length - len(ids)), eos_index

    sentences = ["a photo of the cat", "A  PHOTO of\tthe cat's hat!!", "ththx onot 12 cats", "caf\u00e9 au lait",
                 "the cat<|endoftext|>", "the the the the the the the the the the the the the the", "  ", "hat, cat. 7"]
    cases = []
    for s_ in sentences:
        ids, eos_index = encode(s_, 12)
        cases.append({"text": s_, "ids": ids, "eos_index": eos_index})
    path = os.path.join(OUT, "tokenizer_golden.json")
    with open(path, "w") as f:
        json.dump({"generator": "bench/parity/make_clip_fixtures.py", "max_length": 12, "vocab": vocab,
                   "merges": ["#version: 0.2"] + merges, "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)} ({len(cases)} sentences)")


# ------------------------------------------------------------------------------ parameter lists

VISION_CONFIGS = {
    # openai/clip-vit-base-patch32 (vision tower + visual_projection): CLIP-I evaluation
    "vit-b-32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=32,
                     image_size=224, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512),
    # IP-Adapter models/image_encoder (OpenCLIP ViT-H/14)
    "vit-h-14": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, patch_size=14,
                     image_size=224, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1024),
    # IP-Adapter sdxl_models/image_encoder (OpenCLIP ViT-bigG/14)
    "vit-bigg-14": dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16, patch_size=14,
                        image_size=224, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1280),
}
TEXT_CONFIGS = {
    # SD 1.5 text_encoder (CLIP ViT-L/14 text tower), CLIPTextModel
    "sd15-text": (dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
                       eos_token_id=2), False),
    # SDXL text_encoder_2 (OpenCLIP ViT-bigG/14 text tower), CLIPTextModelWithProjection
    "sdxl-text2": (dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1280,
                        eos_token_id=2), True),
}


def write_params(name, model, cfg):
    path = os.path.join(OUT, f"{name}.params.txt")
    with open(path, "w") as f:
        for k, v in model.state_dict().items():
            f.write(f"{k} {','.join(str(d) for d in v.shape)}\n")
    with open(os.path.join(OUT, f"{name}.config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)} ({len(model.state_dict())} tensors)")


def param_lists():
    for name, cfg in VISION_CONFIGS.items():
        full = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model", "num_channels": 3, **cfg}
        write_params(name, VisionModelWithProjection(cfg, dev="meta"), full)
    for name, (cfg, proj) in TEXT_CONFIGS.items():
        arch = "CLIPTextModelWithProjection" if proj else "CLIPTextModel"
        full = {"architectures": [arch], "model_type": "clip_text_model", "bos_token_id": 0, "pad_token_id": 1, **cfg}
        write_params(name, TextModelWithProjection(cfg, dev="meta", projection=proj), full)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    text_fixture()
    vision_fixture()
    preprocess_fixture()
    tokenizer_golden()
    param_lists()
