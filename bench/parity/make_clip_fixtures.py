#!/usr/bin/python3
"""Golden fixtures for lib/models/clip-text.ts, clip-vision.ts, clipPreprocess and clip-tokenizer.ts
(tests/models/clip.test.ts, tests/models/clip-tokenizer.test.ts), from the upstream code itself.

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_clip_fixtures.py [--check]
(--check recomputes from the committed files' own weights and inputs and prints the differences.)

Upstream (commits pinned in bench/parity/upstream.py, recorded in each file's metadata):
  transformers (the v4.35 branch point, PatchDPO's pin): CLIPTextModelWithProjection,
      CLIPVisionModelWithProjection (models/clip/modeling_clip.py), CLIPTokenizer (slow, Python);
  openai/CLIP: simple_tokenizer.SimpleTokenizer and clip.tokenize with the real vocabulary
      (clip/bpe_simple_vocab_16e6.txt.gz), and clip._transform (the preprocessing of clip.load);
  hqhQAQ/PatchDPO data/dreambooth_dataset.py: the DreamBench subjects and prompt templates (its
      module-level lists, compiled from the pinned file), for the real-vocabulary prompts;
  rspeer/python-ftfy v6.1.1: ftfy.fix_text, which both tokenizers run first.

Writes tests/fixtures/clip/:
  text_tiny.safetensors    CLIPTextModelWithProjection: vocab 100, hidden 32, 2 layers, 4 heads,
                           MLP 64, max positions 16, quick_gelu, projection 24; bos 98, eos 99;
                           input_ids [3, 16] (padded with eos / padded with 0 / truncated full row)
                           and eos_index [3] (I64; the row transformers pools: first eos_token_id);
                           outputs last_hidden_state, hidden_states.{0,1,2}, pooled
                           (text_model pooler_output), text_embeds
  vision_tiny.safetensors  CLIPVisionModelWithProjection: hidden 32, 2 layers, 4 heads, MLP 64,
                           patch 8, image 32, gelu (erf), projection 24; pixel_values [2, 3, 32, 32];
                           outputs last_hidden_state, hidden_states.{0,1,2}, pooled, image_embeds
  preprocess.safetensors   openai/CLIP's clip._transform(size) (torchvision Resize(size, BICUBIC) +
                           CenterCrop(size) + ToTensor + Normalize(CLIP mean/std)) on PIL images:
                           photo_dog_512x388.png at 64 and synthetic_37x23.png at 16 (an odd crop
                           excess: offset rounds half-to-even)
  tokenizer_golden.json    a tiny vocabulary + merges and the ids of a few sentences, by
                           transformers' CLIPTokenizer on that vocabulary (unknown characters become
                           <|endoftext|>, special tokens typed in the text, truncation keeping eos,
                           padding with eos)
  tokenizer_real_golden.json  the 750 DreamBench prompts of PatchDPO's evaluation (30 subjects x 25
                           templates) and edge cases (case, whitespace, punctuation, digits,
                           contractions, accents in NFD, emoji, CJK, Cyrillic, a prompt longer than
                           77 tokens), tokenized by openai/CLIP's clip.tokenize with the real
                           vocabulary (ids up to and including eos, context 77, truncate=True);
                           transformers' CLIPTokenizer on the same vocabulary (vocab.json /
                           merges.txt written from SimpleTokenizer's own tables) gives the same ids
                           (asserted). The file carries the part of the real vocabulary those
                           prompts use: every token they produce and every merge rule their BPE
                           applies, in the original order and with the original ids; on these
                           prompts that subset tokenizes exactly as the full vocabulary (asserted by
                           re-running SimpleTokenizer's own bpe with the subset's ranks).
  <name>.params.txt        "name d0,d1,..." per line: the state_dict of transformers'
                           CLIPVisionModelWithProjection / CLIPTextModel(WithProjection) (built on
                           the meta device) for real configs: vit-b-32, vit-h-14, vit-bigg-14,
                           sd15-text, sdxl-text2 (<name>.config.json, transcribed from the models'
                           config.json files)

Weights and inputs are drawn in float32 (seeded); the models run in float64 on those values (torch's
default dtype float64 meanwhile: transformers builds the causal mask with torch.full without a
dtype) and the results are stored as float32.
Needs /usr/bin/python3 with torch, torchvision, PIL and python3-regex (Debian packages).
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (bench/parity/safetensors_io.py)
import upstream  # noqa: E402  (bench/parity/upstream.py)

upstream.setup(extra=["CLIP"])

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


TEXT_CFG = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=24,
                bos_token_id=98, eos_token_id=99, pad_token_id=0)
VISION_CFG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
                  image_size=32, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=24)


def text_model():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    return CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_CFG)).eval()


def vision_model():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION_CFG)).eval()


def run_text(model, ids):
    """transformers' outputs in float64; eos_index is the row transformers pools (asserted)."""
    with torch.no_grad(), upstream.default_dtype(F64):
        model = model.to(F64)
        o = model(input_ids=ids, output_hidden_states=True)
        pooled = model.text_model(input_ids=ids).pooler_output
    # transformers 4.35 pools at the first eos_token_id when eos_token_id != 2 (this config).
    eos_index = (ids == TEXT_CFG["eos_token_id"]).int().argmax(dim=-1).to(torch.int64)
    assert torch.equal(pooled, o.last_hidden_state[torch.arange(ids.shape[0]), eos_index])
    out = {"input_ids": ids, "eos_index": eos_index, "last_hidden_state": o.last_hidden_state}
    out.update({f"hidden_states.{i}": h for i, h in enumerate(o.hidden_states)})
    out.update({"pooled": pooled, "text_embeds": o.text_embeds})
    return out


def run_vision(model, pixels):
    with torch.no_grad(), upstream.default_dtype(F64):
        model = model.to(F64)
        o = model(pixel_values=pixels.to(F64), output_hidden_states=True)
        pooled = model.vision_model(pixel_values=pixels.to(F64)).pooler_output
    out = {"pixel_values": pixels, "last_hidden_state": o.last_hidden_state}
    out.update({f"hidden_states.{i}": h for i, h in enumerate(o.hidden_states)})
    out.update({"pooled": pooled, "image_embeds": o.image_embeds})
    return out


def meta_of(kind, cfg):
    return {
        "generator": "bench/parity/make_clip_fixtures.py", "torch": torch.__version__,
        "upstream": upstream.provenance("transformers"),
        "compute": "transformers in float64 on float32 weights and inputs, stored float32",
        "config": json.dumps({"architectures": [kind], "model_type": "clip_text_model" if "Text" in kind else "clip_vision_model", **cfg}),
    }


def text_fixture():
    model = randomize(text_model(), 11)
    gen = torch.Generator().manual_seed(12)
    L, bos, eos = 16, 98, 99
    rows = []
    for n, pad in ((5, eos), (9, 0), (14, None)):
        body = torch.randint(0, 98, (n,), generator=gen).tolist()
        row = [bos] + body + [eos]
        row += [pad] * (L - len(row)) if pad is not None else []
        rows.append(row)
    ids = torch.tensor(rows, dtype=torch.int64)
    out = dict(model.state_dict())
    out.update(run_text(model, ids))
    write_safetensors(os.path.join(OUT, "text_tiny.safetensors"), out, meta_of("CLIPTextModelWithProjection", TEXT_CFG))


def vision_fixture():
    model = randomize(vision_model(), 21)
    gen = torch.Generator().manual_seed(22)
    pixels = torch.randn(2, 3, 32, 32, generator=gen).to(torch.float32)
    out = dict(model.state_dict())
    out.update(run_vision(model, pixels))
    write_safetensors(os.path.join(OUT, "vision_tiny.safetensors"), out, meta_of("CLIPVisionModelWithProjection", VISION_CFG))


def check_models():
    """The committed text / vision fixtures recomputed by transformers from their own weights."""
    for file, build, run, inputs in (("text_tiny.safetensors", text_model, run_text, "input_ids"),
                                     ("vision_tiny.safetensors", vision_model, run_vision, "pixel_values")):
        meta, t = upstream.read_fixture(os.path.join(OUT, file))
        model = build()
        sd = model.state_dict()
        model.load_state_dict({k: t[k].to(torch.float32) for k in sd})
        out = run(model, t[inputs] if inputs == "input_ids" else t[inputs].to(torch.float32))
        d = upstream.Diff(file)
        for k, v in out.items():
            d.add(k, v.double(), t[k])
        print(d)


PREPROCESS = {"photo_dog_512x388.png": 64, "synthetic_37x23.png": 16}


def preprocess_fixture(check=False):
    import clip  # openai/CLIP
    from PIL import Image
    out = {}
    for name, size in PREPROCESS.items():
        img = Image.open(os.path.join(REPO, "tests", "fixtures", "images", name))
        out[name] = clip.clip._transform(size)(img)
    path = os.path.join(OUT, "preprocess.safetensors")
    if check:
        _, t = upstream.read_fixture(path)
        same = all(torch.equal(out[k], t[k].to(torch.float32)) for k in out)
        print(f"preprocess.safetensors: {'bit-identical to' if same else 'DIFFERS from'} clip._transform")
        return
    write_safetensors(path, out, {
        "generator": "bench/parity/make_clip_fixtures.py", "upstream": upstream.provenance("CLIP"),
        "torchvision": __import__("torchvision").__version__, "sizes": json.dumps(PREPROCESS),
    })


# ------------------------------------------------------------------------------ tokenizer

def tokenizer_golden(check=False):
    """A tiny vocabulary through transformers' CLIPTokenizer (slow tokenizer, with ftfy)."""
    import tempfile
    from transformers import CLIPTokenizer
    upstream.transformers_slow_tokenizers()
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
    max_length = 12
    with tempfile.TemporaryDirectory() as d:
        json.dump(vocab, open(os.path.join(d, "vocab.json"), "w"))
        open(os.path.join(d, "merges.txt"), "w").write("\n".join(["#version: 0.2"] + merges) + "\n")
        tok = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"), model_max_length=max_length)
    assert tok.fix_text is not None, "transformers' CLIPTokenizer fell back to BasicTokenizer: ftfy is missing"
    eos = vocab["<|endoftext|>"]
    sentences = ["a photo of the cat", "A  PHOTO of\tthe cat's hat!!", "ththx onot 12 cats", "caf\u00e9 au lait",
                 "the cat<|endoftext|>", "the the the the the the the the the the the the the the", "  ", "hat, cat. 7"]
    cases = []
    for s_ in sentences:
        ids = tok(s_, max_length=max_length, padding="max_length", truncation=True).input_ids
        cases.append({"text": s_, "ids": ids, "eos_index": ids.index(eos)})  # the first eos (typed or unk ones count)
    golden = {"generator": "bench/parity/make_clip_fixtures.py (transformers CLIPTokenizer)",
              "upstream": upstream.provenance("transformers", "ftfy"), "max_length": max_length, "vocab": vocab,
              "merges": ["#version: 0.2"] + merges, "cases": cases}
    write_json("tokenizer_golden.json", golden, check)


def dreambench_prompts():
    """PatchDPO's DreamBench evaluation prompts: its objects / animals lists and prompt templates,
    run from data/dreambooth_dataset.py (module-level assignments compiled from the pinned file)."""
    import ast
    names = ("objects", "animals", "object_prompts", "animal_prompts")
    code, where = upstream.upstream_statements(
        "PatchDPO", "data/dreambooth_dataset.py",
        lambda n, seg: [st for st in n.body if isinstance(st, ast.Assign) and st.targets[0].id in names]
        if isinstance(n, ast.Module) else None)
    ns = {}
    exec(code, ns)
    prompts = []
    for key, templates in (("objects", ns["object_prompts"]), ("animals", ns["animal_prompts"])):
        for _, entity_name in ns[key]:
            prompts += [t.replace("{0}", entity_name) for t in templates]
    return prompts, f"hqhQAQ/PatchDPO {where}"


EDGE_CASES = [
    "A photo of sks dog", "a DOG   wearing\ta red hat!", "  a red backpack on the beach  ",
    "3 dogs and 12 cats, 2023", "it's the dog's toy, isn't it? we'll see; they've gone", "dogs' toys",
    "wow!!! ... ??? -- (a cat) [on] {the} <mat>", "caf\u00e9 au lait", "cafe\u0301 na\u0131\u0308ve fac\u0327ade",
    "a dog \U0001F436 on the beach \u2600\ufe0f", "\u4e00\u53ea\u72d7\u5728\u6d77\u6ee9\u4e0a", "\u0441\u043e\u0431\u0430\u043a\u0430 \u043d\u0430 \u043f\u043b\u044f\u0436\u0435",
    "a photo of a teapot, highly detailed, 8k, sharp focus, studio lighting, trending on artstation, "
    "by greg rutkowski and alphonse mucha, octane render, unreal engine, volumetric light, bokeh, "
    "masterpiece, best quality, ultra realistic, cinematic composition, golden hour, wide angle lens, "
    "f/1.8, depth of field, vivid colors, intricate details, award winning photograph",
]


def tokenizer_real_golden(check=False):
    """openai/CLIP's tokenizer with the real vocabulary on DreamBench prompts, cross-checked with
    transformers' CLIPTokenizer; the vocabulary subset those prompts use."""
    import tempfile
    import clip  # openai/CLIP
    import regex
    from clip.simple_tokenizer import SimpleTokenizer, basic_clean, whitespace_clean
    from transformers import CLIPTokenizer
    upstream.transformers_slow_tokenizers()
    st = SimpleTokenizer()
    prompts, where = dreambench_prompts()
    texts = prompts + EDGE_CASES
    L = 77
    rows = clip.tokenize(texts, context_length=L, truncate=True)
    sot, eot = st.encoder["<|startoftext|>"], st.encoder["<|endoftext|>"]
    cases = []
    for text, row in zip(texts, rows.tolist()):
        body = st.encode(text)
        n = min(len(body) + 2, L)
        ids = row[:n]
        assert ids == ([sot] + body[: L - 2] + [eot]) and all(v == 0 for v in row[n:]), text
        cases.append({"text": text, "ids": ids})
    assert any(len(st.encode(t)) + 2 > L for t in texts), "no prompt exercises truncation"

    # transformers' CLIPTokenizer on the same vocabulary (the files of openai/clip-vit-large-patch14).
    merges = [" ".join(p) for p, _ in sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])]
    with tempfile.TemporaryDirectory() as d:
        json.dump(st.encoder, open(os.path.join(d, "vocab.json"), "w"))
        open(os.path.join(d, "merges.txt"), "w").write("\n".join(["#version: 0.2"] + merges) + "\n")
        hf = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"), model_max_length=L)
    assert hf.fix_text is not None
    for c in cases:
        got = hf(c["text"], max_length=L, truncation=True).input_ids
        assert got == c["ids"], f"transformers and openai/CLIP disagree on {c['text']!r}: {got} vs {c['ids']}"

    # The vocabulary subset: the tokens produced and the merges applied, original ids and order.
    used_tokens, used_merges = set(), set()
    for text in texts:
        cleaned = whitespace_clean(basic_clean(text)).lower()  # SimpleTokenizer.encode's first steps
        for piece in regex.findall(st.pat, cleaned):
            word = tuple("".join(st.byte_encoder[b] for b in piece.encode("utf-8")))
            if piece in ("<|startoftext|>", "<|endoftext|>"):
                used_tokens.add(piece)
                continue
            word = word[:-1] + (word[-1] + "</w>",)
            while len(word) > 1:  # SimpleTokenizer.bpe's loop, recording each applied merge
                pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
                best = min(pairs, key=lambda p: st.bpe_ranks.get(p, float("inf")))
                if best not in st.bpe_ranks:
                    break
                used_merges.add(best)
                out, i = [], 0
                while i < len(word):
                    if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                        out.append(word[i] + word[i + 1])
                        i += 2
                    else:
                        out.append(word[i])
                        i += 1
                word = tuple(out)
            used_tokens.update(word)
    sub_merges = sorted(used_merges, key=lambda p: st.bpe_ranks[p])
    sub_vocab = {t: st.encoder[t] for t in sorted(used_tokens | {"<|startoftext|>", "<|endoftext|>"}, key=lambda t: st.encoder[t])}
    # The subset reproduces the full tokenizer: SimpleTokenizer with its tables replaced.
    st2 = SimpleTokenizer()
    st2.bpe_ranks = {p: i for i, p in enumerate(sub_merges)}
    st2.encoder = sub_vocab
    st2.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}
    for c in cases:
        assert [sot] + st2.encode(c["text"])[: L - 2] + [eot] == c["ids"], c["text"]
    golden = {
        "generator": "bench/parity/make_clip_fixtures.py (openai/CLIP clip.tokenize, cross-checked with transformers CLIPTokenizer)",
        "upstream": upstream.provenance("CLIP", "transformers", "ftfy", "PatchDPO"),
        "prompts_from": where,
        "max_length": L,
        "note": "vocab / merges: the subset of the real vocabulary (clip/bpe_simple_vocab_16e6.txt.gz) these prompts use, "
                "original ids, merges in their original order; ids: bos .. eos as clip.tokenize(truncate=True) gives them "
                "before its zero padding",
        "vocab": sub_vocab,
        "merges": ["#version: 0.2"] + [" ".join(p) for p in sub_merges],
        "cases": cases,
    }
    write_json("tokenizer_real_golden.json", golden, check)


def write_json(name, obj, check):
    path = os.path.join(OUT, name)
    text = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
    if check:
        same = os.path.exists(path) and json.load(open(path))["cases"] == obj["cases"]
        print(f"{name}: cases {'identical to' if same else 'DIFFER from'} the upstream tokenizer's")
        return
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(path, REPO)} ({len(obj['cases'])} cases, {len(text)} bytes)")


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


def write_params(name, model, cfg, check):
    path = os.path.join(OUT, f"{name}.params.txt")
    text = "".join(f"{k} {','.join(str(d) for d in v.shape)}\n" for k, v in model.state_dict().items())
    if check:
        print(f"{name}.params.txt: {'identical to' if open(path).read() == text else 'DIFFERS from'} transformers' state_dict")
        return
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(OUT, f"{name}.config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(path, REPO)} ({len(model.state_dict())} tensors)")


def param_lists(check=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection
    for name, cfg in VISION_CONFIGS.items():
        full = {"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model", "num_channels": 3, **cfg}
        with upstream.empty_weights():
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg))
        write_params(name, model, full, check)
    for name, (cfg, proj) in TEXT_CONFIGS.items():
        arch = "CLIPTextModelWithProjection" if proj else "CLIPTextModel"
        full = {"architectures": [arch], "model_type": "clip_text_model", "bos_token_id": 0, "pad_token_id": 1, **cfg}
        with upstream.empty_weights():
            model = (CLIPTextModelWithProjection if proj else CLIPTextModel)(CLIPTextConfig(**cfg))
        write_params(name, model, full, check)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    check = "--check" in sys.argv[1:]
    if check:
        check_models()
    else:
        text_fixture()
        vision_fixture()
    preprocess_fixture(check)
    tokenizer_golden(check)
    tokenizer_real_golden(check)
    param_lists(check)
