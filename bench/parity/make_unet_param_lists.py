#!/usr/bin/python3
"""Weight-name lists of diffusers' UNet2DConditionModel and AutoencoderKL for the standard configs.

Writes tests/fixtures/diffusers/{sd15-unet,sdxl-unet,sd-vae}.params.txt ("name shape" per line,
shape as comma-separated dimensions, in state-dict order) from the config fixtures next to them.

diffusers is not installed here, so this script transcribes the module tree in plain Python,
written from diffusers' module definitions (unets/unet_2d_condition.py, unets/unet_2d_blocks.py,
transformers/transformer_2d.py, attention.py, attention_processor.py, resnet.py, embeddings.py,
autoencoders/vae.py, autoencoders/autoencoder_kl.py) and independently of lib/models/*.ts, so the
TypeScript test compares two transcriptions. Every Module below registers its children in the
order of the diffusers __init__ it mirrors, which is the state-dict order:
  - UNet2DConditionModel: conv_in, time_proj (no weights), time_embedding, add_time_proj (none),
    add_embedding, down_blocks, up_blocks, mid_block, conv_norm_out, conv_act, conv_out
    (down_blocks and up_blocks are empty ModuleLists registered before mid_block is built);
  - Cross-attention blocks: attentions, resnets, then down/upsamplers;
  - Attention: (group_norm), to_q, to_k, to_v, to_out;
  - Decoder: conv_in, up_blocks, mid_block, conv_norm_out, conv_out (same ModuleList effect).

Known counts it is checked against (asserted below):
  SD 1.5 UNet 686 tensors, SD VAE 248 tensors (public reports of len(state_dict()), see the test).

Usage: /usr/bin/python3 bench/parity/make_unet_param_lists.py   (no torch needed)
"""
import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(REPO, "tests", "fixtures", "diffusers")


class Module:
    """Just enough of nn.Module: named parameters and children, in registration order."""

    def __init__(self):
        self._items = []  # ("param", name, shape) or ("child", name, Module)

    def param(self, name, *shape):
        self._items.append(("param", name, list(shape)))

    def child(self, name, module):
        if module is not None:
            self._items.append(("child", name, module))
        return module

    def state_dict_shapes(self, prefix=""):
        out = []
        for kind, name, v in self._items:
            if kind == "param":
                out.append((prefix + name, v))
            else:
                out.extend(v.state_dict_shapes(prefix + name + "."))
        return out


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m):
        self.child(str(sum(1 for _ in self._items)), m)


def Linear(i, o, bias=True):
    m = Module()
    m.param("weight", o, i)
    if bias:
        m.param("bias", o)
    return m


def Conv2d(i, o, k):
    m = Module()
    m.param("weight", o, i, k, k)
    m.param("bias", o)
    return m


def Norm(c):  # GroupNorm / LayerNorm with affine weights
    m = Module()
    m.param("weight", c)
    m.param("bias", c)
    return m


def ResnetBlock2D(cin, cout, temb):
    m = Module()
    m.child("norm1", Norm(cin))
    m.child("conv1", Conv2d(cin, cout, 3))
    if temb is not None:
        m.child("time_emb_proj", Linear(temb, cout))
    m.child("norm2", Norm(cout))
    m.child("conv2", Conv2d(cout, cout, 3))
    if cin != cout:
        m.child("conv_shortcut", Conv2d(cin, cout, 1))
    return m


def Attention(query_dim, cross_dim=None, heads=1, dim_head=None, bias=False, group_norm=False):
    inner = heads * dim_head
    m = Module()
    if group_norm:
        m.child("group_norm", Norm(query_dim))
    m.child("to_q", Linear(query_dim, inner, bias))
    m.child("to_k", Linear(cross_dim or query_dim, inner, bias))
    m.child("to_v", Linear(cross_dim or query_dim, inner, bias))
    m.child("to_out", ModuleList([Linear(inner, query_dim, True), Module()]))  # Linear, Dropout
    return m


def BasicTransformerBlock(dim, heads, head_dim, cross_dim):
    m = Module()
    m.child("norm1", Norm(dim))
    m.child("attn1", Attention(dim, None, heads, head_dim))
    m.child("norm2", Norm(dim))
    m.child("attn2", Attention(dim, cross_dim, heads, head_dim))
    m.child("norm3", Norm(dim))
    ff = Module()
    geglu = Module()
    geglu.child("proj", Linear(dim, dim * 4 * 2))
    ff.child("net", ModuleList([geglu, Module(), Linear(dim * 4, dim)]))  # GEGLU, Dropout, Linear
    m.child("ff", ff)
    return m


def Transformer2DModel(heads, head_dim, in_channels, num_layers, cross_dim, linear):
    inner = heads * head_dim
    m = Module()
    m.child("norm", Norm(in_channels))
    m.child("proj_in", Linear(in_channels, inner) if linear else Conv2d(in_channels, inner, 1))
    m.child("transformer_blocks", ModuleList([BasicTransformerBlock(inner, heads, head_dim, cross_dim) for _ in range(num_layers)]))
    m.child("proj_out", Linear(inner, in_channels) if linear else Conv2d(inner, in_channels, 1))
    return m


def per_layer(v, n):
    return [v] * n if isinstance(v, int) else list(v)


def CrossAttnDownBlock2D(cin, cout, temb, num_layers, tl, heads, cross, linear, add_down, cross_attn=True):
    tl = per_layer(tl, num_layers)
    m = Module()
    resnets, attns = [], []
    for i in range(num_layers):
        resnets.append(ResnetBlock2D(cin if i == 0 else cout, cout, temb))
        if cross_attn:
            attns.append(Transformer2DModel(heads, cout // heads, cout, tl[i], cross, linear))
    if cross_attn:
        m.child("attentions", ModuleList(attns))
    m.child("resnets", ModuleList(resnets))
    if add_down:
        d = Module()
        d.child("conv", Conv2d(cout, cout, 3))
        m.child("downsamplers", ModuleList([d]))
    return m


def CrossAttnUpBlock2D(cin, prev, cout, temb, num_layers, tl, heads, cross, linear, add_up, cross_attn=True):
    tl = per_layer(tl, num_layers)
    m = Module()
    resnets, attns = [], []
    for i in range(num_layers):
        skip = cin if i == num_layers - 1 else cout
        rin = prev if i == 0 else cout
        resnets.append(ResnetBlock2D(rin + skip, cout, temb))
        if cross_attn:
            attns.append(Transformer2DModel(heads, cout // heads, cout, tl[i], cross, linear))
    if cross_attn:
        m.child("attentions", ModuleList(attns))
    m.child("resnets", ModuleList(resnets))
    if add_up:
        u = Module()
        u.child("conv", Conv2d(cout, cout, 3))
        m.child("upsamplers", ModuleList([u]))
    return m


def TimestepEmbedding(i, o):
    m = Module()
    m.child("linear_1", Linear(i, o))
    m.child("linear_2", Linear(o, o))
    return m


def UNet2DConditionModel(cfg):
    C = cfg["block_out_channels"]
    n = len(C)
    down_types, up_types = cfg["down_block_types"], cfg["up_block_types"]
    # the famous naming issue: heads come from attention_head_dim when num_attention_heads is unset
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    heads = [heads] * n if isinstance(heads, int) else heads
    cross = cfg["cross_attention_dim"]
    cross = [cross] * n if isinstance(cross, int) else cross
    lpb = cfg.get("layers_per_block", 2)
    lpb = [lpb] * n if isinstance(lpb, int) else lpb
    tl = cfg.get("transformer_layers_per_block", 1)
    tl = [tl] * n if isinstance(tl, int) else tl
    linear = cfg.get("use_linear_projection", False)
    T = C[0] * 4
    m = Module()
    m.child("conv_in", Conv2d(cfg["in_channels"], C[0], 3))
    m.child("time_embedding", TimestepEmbedding(C[0], T))
    if cfg.get("addition_embed_type") == "text_time":
        m.child("add_embedding", TimestepEmbedding(cfg["projection_class_embeddings_input_dim"], T))
    down_blocks = m.child("down_blocks", ModuleList())
    up_blocks = m.child("up_blocks", ModuleList())
    out = C[0]
    for i, t in enumerate(down_types):
        inp, out = out, C[i]
        down_blocks.append(CrossAttnDownBlock2D(inp, out, T, lpb[i], tl[i], heads[i], cross[i], linear, i < n - 1,
                                                cross_attn=(t == "CrossAttnDownBlock2D")))
    mid = Module()
    mid.child("attentions", ModuleList([Transformer2DModel(heads[-1], C[-1] // heads[-1], C[-1], per_layer(tl[-1], 1)[0], cross[-1], linear)]))
    mid.child("resnets", ModuleList([ResnetBlock2D(C[-1], C[-1], T), ResnetBlock2D(C[-1], C[-1], T)]))
    rc, rh, rl, rx, rt = C[::-1], heads[::-1], lpb[::-1], cross[::-1], tl[::-1]
    out = rc[0]
    for i, t in enumerate(up_types):
        prev, out = out, rc[i]
        inp = rc[min(i + 1, n - 1)]
        up_blocks.append(CrossAttnUpBlock2D(inp, prev, out, T, rl[i] + 1, rt[i], rh[i], rx[i], linear, i < n - 1,
                                            cross_attn=(t == "CrossAttnUpBlock2D")))
    m.child("mid_block", mid)
    m.child("conv_norm_out", Norm(C[0]))
    m.child("conv_out", Conv2d(C[0], cfg["out_channels"], 3))
    return m


def AutoencoderKL(cfg):
    C = cfg["block_out_channels"]
    n = len(C)
    L = cfg.get("layers_per_block", 1)
    lat = cfg.get("latent_channels", 4)

    def mid_block(ch):
        mb = Module()
        mb.child("attentions", ModuleList([Attention(ch, None, 1, ch, bias=True, group_norm=True)]))
        mb.child("resnets", ModuleList([ResnetBlock2D(ch, ch, None), ResnetBlock2D(ch, ch, None)]))
        return mb

    enc = Module()
    enc.child("conv_in", Conv2d(cfg["in_channels"], C[0], 3))
    downs = enc.child("down_blocks", ModuleList())
    out = C[0]
    for i in range(n):
        inp, out = out, C[i]
        b = Module()
        b.child("resnets", ModuleList([ResnetBlock2D(inp if j == 0 else out, out, None) for j in range(L)]))
        if i < n - 1:
            d = Module()
            d.child("conv", Conv2d(out, out, 3))
            b.child("downsamplers", ModuleList([d]))
        downs.append(b)
    enc.child("mid_block", mid_block(C[-1]))
    enc.child("conv_norm_out", Norm(C[-1]))
    enc.child("conv_out", Conv2d(C[-1], 2 * lat, 3))

    dec = Module()
    dec.child("conv_in", Conv2d(lat, C[-1], 3))
    ups = dec.child("up_blocks", ModuleList())
    rc = C[::-1]
    out = rc[0]
    for i in range(n):
        prev, out = out, rc[i]
        b = Module()
        b.child("resnets", ModuleList([ResnetBlock2D(prev if j == 0 else out, out, None) for j in range(L + 1)]))
        if i < n - 1:
            u = Module()
            u.child("conv", Conv2d(out, out, 3))
            b.child("upsamplers", ModuleList([u]))
        ups.append(b)
    dec.child("mid_block", mid_block(C[-1]))
    dec.child("conv_norm_out", Norm(C[0]))
    dec.child("conv_out", Conv2d(C[0], cfg["out_channels"], 3))

    m = Module()
    m.child("encoder", enc)
    m.child("decoder", dec)
    m.child("quant_conv", Conv2d(2 * lat, 2 * lat, 1))
    m.child("post_quant_conv", Conv2d(lat, lat, 1))
    return m


def write(name, shapes):
    path = os.path.join(FIX, name)
    with open(path, "w") as f:
        for k, s in shapes:
            f.write(f"{k} {','.join(str(d) for d in s)}\n")
    total = sum(eval("*".join(str(d) for d in s)) for _, s in shapes)
    print(f"wrote {os.path.relpath(path, REPO)}: {len(shapes)} tensors, {total:,} parameters")
    return len(shapes)


def main():
    load = lambda n: json.load(open(os.path.join(FIX, n)))
    n15 = write("sd15-unet.params.txt", UNet2DConditionModel(load("sd15-unet.config.json")).state_dict_shapes())
    write("sdxl-unet.params.txt", UNet2DConditionModel(load("sdxl-unet.config.json")).state_dict_shapes())
    nvae = write("sd-vae.params.txt", AutoencoderKL(load("sd-vae.config.json")).state_dict_shapes())
    assert n15 == 686, n15
    assert nvae == 248, nvae


if __name__ == "__main__":
    main()
