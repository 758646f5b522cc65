# Reference of bench/gpu.ts: the same two steps in PyTorch with diffusers' UNet2DConditionModel
# (the model code lib/models/unet.ts mirrors) and IP-Adapter attention in every attn2
# (IPAdapterAttnProcessor2_0, or IPAdapterAttnProcessor on torch < 2), on the weights file bench/gpu.ts
# wrote (diffusers state-dict names, the IP projections under `<attn2>.processor.to_k_ip.0.weight`),
# fed the inputs it wrote (bench/out/gpu-<mode>-inputs.safetensors).
#   sample  one CFG step: unet on [uncond; cond] (batch 2) with text context and IP tokens, then
#           uncond + 7.5 (cond - uncond); torch.inference_mode.
#   dpo     one patch-dpo step on 1 pair: the frozen reference UNet (a second copy, as Diffusion-DPO's
#           train.py keeps ref_unet) under no_grad, the trained UNet's forward and backward to its
#           to_k_ip / to_v_ip only, the patch-dpo loss of lib/train/objectives.ts (beta 5000,
#           lambda 1), torch.optim.AdamW (lr 1e-5, weight decay 0.01).
# --dtype fp32: everything float32 (TF32 off, as ours computes in float32). bf16: sample runs the
# model in bfloat16; dpo keeps the trained IP weights float32 (master weights) with the frozen ones
# bfloat16, under torch.autocast(bfloat16), the usual mixed-precision finetune.
# Prints one JSON line: median seconds per step after a warm-up, the first step's value (guided[0] or
# the loss, for a sanity check against ours), torch.cuda.max_memory_allocated, peak RSS.
# --probe: prints {"torch", "diffusers", "cuda"} and exits 0 when torch and diffusers import.
import argparse, json, os, resource, statistics, struct, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def import_diffusers():
    """diffusers as installed, else the pinned tree of bench/parity/.upstream (fetch_upstream.py)."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(HERE, "parity"))
        import upstream
        upstream.setup()
    import diffusers
    return diffusers


def read_safetensors(path, with_meta=False):
    """name -> tensor, all views on one bytearray holding the file (no copy); with_meta: also the
    file's __metadata__ dict, as (tensors, metadata)."""
    import torch
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64}
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf8"))
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dt = dtypes[info["dtype"]]
        begin, end = info["data_offsets"]
        count = (end - begin) // torch.tensor([], dtype=dt).element_size()
        out[name] = torch.frombuffer(buf, dtype=dt, count=count, offset=8 + n + begin).reshape(info["shape"])
    return (out, meta) if with_meta else out


def set_ip_processors(unet, ip_tokens, scale=1.0):
    """IPAdapterAttnProcessor2_0 (IPAdapterAttnProcessor on torch < 2) in every attn2 of `unet`."""
    import torch.nn.functional as F
    from diffusers.models import attention_processor as ap
    proc = ap.IPAdapterAttnProcessor2_0 if hasattr(F, "scaled_dot_product_attention") else ap.IPAdapterAttnProcessor
    for name, m in unet.named_modules():
        if isinstance(m, ap.Attention) and name.split(".")[-1] == "attn2":
            m.set_processor(proc(hidden_size=m.to_q.out_features, cross_attention_dim=m.to_k.in_features, num_tokens=(ip_tokens,), scale=scale))
    return unet


def build_unet(cfg, weights, ip_tokens, device, dtype, in_place=False):
    """diffusers' UNet2DConditionModel of `cfg` with IP-Adapter attention (ip_tokens tokens, scale 1)
    in every attn2, or diffusers' default processors when ip_tokens is None, holding `weights`
    (diffusers state-dict names, all of them and nothing else). in_place: the model is built on the
    meta device (no random init) and its parameters are the given tensors themselves, frozen (no
    copy: a 3.4 GB file read once stays the only copy); for inference on the device and dtype the
    tensors already have."""
    from diffusers import UNet2DConditionModel
    if not in_place:
        unet = UNet2DConditionModel.from_config(cfg)
        if ip_tokens is not None:
            set_ip_processors(unet, ip_tokens)
        unet.load_state_dict(weights, strict=True)
        return unet.to(device=device, dtype=dtype).eval()
    import torch
    sys.path.insert(0, os.path.join(HERE, "parity"))
    import upstream
    with upstream.empty_weights():
        unet = UNet2DConditionModel.from_config(cfg)
        if ip_tokens is not None:
            set_ip_processors(unet, ip_tokens)
    names = {n for n, _ in unet.named_parameters()}
    if names != set(weights):
        raise SystemExit(f"weights differ from the model's: missing {sorted(names - set(weights))[:5]}, unexpected {sorted(set(weights) - names)[:5]}")
    for mname, mod in unet.named_modules():
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            w = weights[f"{mname}.{pname}" if mname else pname]
            if tuple(w.shape) != tuple(p.shape) or w.dtype != dtype or w.device != torch.device(device):
                raise SystemExit(f"{mname}.{pname}: file {tuple(w.shape)} {w.dtype} {w.device}, model {tuple(p.shape)} {dtype} {device}")
            mod._parameters[pname] = torch.nn.Parameter(w, requires_grad=False)
    meta = [n for n, b in unet.named_buffers() if b.is_meta]
    if meta:
        raise SystemExit(f"buffers left on the meta device: {meta[:5]}")
    return unet.eval()


def patch_dpo(pred, ref_pred, target, q_ref, q_gen, beta=5000.0, lam=1.0):
    """lib/train/objectives.ts patch-dpo on one pair ([reference ; generated] rows)."""
    import torch.nn.functional as F
    e = ((pred - target) ** 2).mean(1)
    e_ref = ((ref_pred - target) ** 2).mean(1)
    a, b = 1 - q_ref, 1 - q_gen
    wmean = lambda u, x: (u * x).sum((1, 2)) / (u.sum((1, 2)) + 1e-6)
    m_w = wmean(a, e[:1]) - wmean(a, e_ref[:1])
    m_l = wmean(b, e[1:]) - wmean(b, e_ref[1:])
    z = -beta / 2 * (m_w - m_l)
    return F.softplus(-z).mean() + lam * (q_gen * e[1:]).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--task", choices=["sample", "dpo"])
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mode", default="full")
    ap.add_argument("--config")
    ap.add_argument("--weights")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--ip-tokens", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    a = ap.parse_args()
    import torch
    diffusers = import_diffusers()
    if a.probe:
        print(json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__, "cuda": torch.cuda.is_available()}))
        return
    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if a.device == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    with open(a.config) as f:
        cfg = json.load(f)
    weights = read_safetensors(a.weights)
    io = read_safetensors(os.path.join(REPO, "bench", "out", f"gpu-{a.mode}-inputs.safetensors"))
    io = {k: v.to(dev) for k, v in io.items()}
    half = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    h = a.latent
    q = torch.arange(h * h, dtype=torch.float32, device=dev).reshape(1, h, h)
    q_ref, q_gen = 0.5 + 0.4 * torch.sin(q), 0.5 + 0.4 * torch.cos(q)

    if a.task == "sample":
        unet = build_unet(cfg, weights, a.ip_tokens, dev, half)
        x, t = io["sample"].to(half), io["timestep"]
        ctx, ip = io["context"].to(half), io["ip"].to(half)

        def step():
            with torch.inference_mode():
                pred = unet(x, t, encoder_hidden_states=(ctx, [ip])).sample.float()
                u, c = pred.chunk(2)
                return (u + 7.5 * (c - u)).flatten()[0].item()
    else:
        ref = build_unet(cfg, weights, a.ip_tokens, dev, half).requires_grad_(False)
        unet = build_unet(cfg, weights, a.ip_tokens, dev, half).requires_grad_(False)
        trained = [p for n, p in unet.named_parameters() if ".to_k_ip." in n or ".to_v_ip." in n]
        for p in trained:
            p.data = p.data.float()  # master weights float32
            p.requires_grad_(True)
        opt = torch.optim.AdamW(trained, lr=1e-5, weight_decay=0.01)
        x, t, target = io["sample"], io["timestep"], io["target"]
        ctx, ip = io["context"], io["ip"]
        auto = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

        def step():
            with auto:
                with torch.no_grad():
                    ref_pred = ref(x, t, encoder_hidden_states=(ctx, [ip])).sample
                pred = unet(x, t, encoder_hidden_states=(ctx, [ip])).sample
                loss = patch_dpo(pred.float(), ref_pred.float(), target, q_ref, q_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    value = step()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "seconds": statistics.median(times), "firstRunSeconds": first, "value": value,
        "peakDeviceMB": torch.cuda.max_memory_allocated() / 2 ** 20 if dev.type == "cuda" else None,
        "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
