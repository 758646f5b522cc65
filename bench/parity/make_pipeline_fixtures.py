#!/usr/bin/python3
"""Guidance-loop fixtures for tests/diffusion/pipeline-parity.test.ts: a few denoising steps of
diffusers' own StableDiffusionPipeline and StableDiffusionXLPipeline (v0.31.0, pinned in
bench/parity/upstream.py) with an IP-Adapter image prompt, from fixed latents.

Regenerate (needs the upstream sources, see bench/parity/README.md):
  /usr/bin/python3 bench/parity/fetch_upstream.py
  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/parity/make_pipeline_fixtures.py [--check]
(--check reruns the pipelines on the committed files' own weights and inputs and prints the
differences.)

Each case builds tiny random-weight models, loads the IP-Adapter through diffusers' own loader from a
release-layout state dict ({"image_proj": ..., "ip_adapter": {"<n>.to_k_ip.weight": ...}}, what
pipeline.load_ip_adapter reads from ip-adapter.safetensors; UNet2DConditionModel
._load_ip_adapter_weights converts it, the Plus Resampler into diffusers' own
IPAdapterPlusImageProjection), sets the IP scale with pipeline.set_ip_adapter_scale, and calls the
pipeline with prompt_embeds / negative_prompt_embeds (text encoders have their own fixtures),
ip_adapter_image_embeds = [negative ; positive] image features, latents, 3 steps, guidance 5,
output_type "latent", recording the latents after every step (callback_on_step_end).

  pipeline_sd.safetensors    StableDiffusionPipeline: the tiny SD-style UNet of
                             make_unet_fixtures (block_out_channels [8, 16], cross dim 12), the
                             base IP-Adapter (IP-Adapter's ImageProjModel: image_embeds 10 -> 4
                             tokens; negative image embeds are zeros, as IP-Adapter and diffusers
                             use), DDIMScheduler with SD 1.5's config; batch 2, latents [2, 4, 8, 8]
  pipeline_sdxl.safetensors  StableDiffusionXLPipeline: the tiny SDXL-style UNet (text_time, linear
                             projection, transformer layers [1, 2]), IP-Adapter-Plus (IP-Adapter's
                             Resampler: hidden states [5, 20] -> 4 tokens, dim 16, depth 4, heads of
                             64 as diffusers' converter assumes), EulerDiscreteScheduler with SDXL's
                             config, pooled text embeds 6, time ids from height = width = 16

Names: UNet weights under diffusers' keys; the IP-Adapter under the release keys
("image_proj.*", "ip_adapter.<n>.to_{k,v}_ip.weight"); prompt_embeds, negative_prompt_embeds,
(pooled_prompt_embeds, negative_pooled_prompt_embeds), image_embeds, negative_image_embeds (the
image features the projection takes, [1, E] or [1, L, E]: one reference image, which the pipeline
repeats for each of the B prompts), latents (the initial noise, before
init_noise_sigma), image_tokens / negative_image_tokens (diffusers' projection of them: the UNet's
encoder_hid_proj), latents.step<i> (after step i), out (= latents.step<last>). Metadata: the UNet
config, the scheduler config, the projection config in lib/models/ip-adapter.ts's terms, sampler,
steps, guidance, ip_scale, height / width.

Precision: the pipelines run in float64 (every module .to(float64), embeddings and latents float64)
on float32-drawn values, results stored float32; upstream keeps some steps in float32 whatever the
dtype (diffusers' timestep embedding, EulerDiscreteScheduler.step's upcast to float32, the
Resampler-port's and the attention's arithmetic where they cast).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upstream  # noqa: E402
from make_train_fixtures import randn, write_safetensors  # noqa: E402  (also runs upstream.setup)
from make_unet_fixtures import TINY_SD, TINY_SDXL, TINY_VAE, release_keys, set_ip_processors  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "diffusion")
F64 = torch.float64
STEPS, GUIDANCE, IP_SCALE, B, SIZE = 3, 5.0, 0.6, 2, 16

SD_SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
                "prediction_type": "epsilon"}
SDXL_SCHEDULER = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "steps_offset": 1, "timestep_spacing": "leading",
                  "interpolation_type": "linear", "prediction_type": "epsilon"}

CASES = {
    "sd": dict(file="pipeline_sd.safetensors", seed=31, unet=TINY_SD, scheduler=SD_SCHEDULER, sampler="ddim",
               projection={"kind": "linear", "embeddingDim": 10, "crossAttentionDim": 12, "numTokens": 4}),
    "sdxl": dict(file="pipeline_sdxl.safetensors", seed=32, unet=TINY_SDXL, scheduler=SDXL_SCHEDULER, sampler="euler",
                 projection={"kind": "resampler", "embeddingDim": 20, "dim": 16, "depth": 4, "dimHead": 64, "heads": 1,
                             "numQueries": 4, "outputDim": 12, "ffMult": 4}),
}


def image_proj_module(p):
    """IP-Adapter's own projection module for a projection config (its keys are the release's)."""
    if p["kind"] == "linear":
        from ip_adapter.ip_adapter import ImageProjModel
        return ImageProjModel(cross_attention_dim=p["crossAttentionDim"], clip_embeddings_dim=p["embeddingDim"],
                              clip_extra_context_tokens=p["numTokens"])
    from ip_adapter.resampler import Resampler
    return Resampler(dim=p["dim"], depth=p["depth"], dim_head=p["dimHead"], heads=p["heads"], num_queries=p["numQueries"],
                     embedding_dim=p["embeddingDim"], output_dim=p["outputDim"], ff_mult=p["ffMult"])


def draw(case):
    """UNet weights (diffusers keys), IP-Adapter (release keys) and inputs, float32."""
    from diffusers import UNet2DConditionModel
    gen = torch.Generator().manual_seed(case["seed"])
    unet = set_ip_processors(UNet2DConditionModel.from_config(case["unet"]))
    w = upstream.draw_params(unet, gen)
    keys = release_keys(unet)
    t = {k: v for k, v in w.items() if k not in keys}
    t.update({keys[k]: v for k, v in w.items() if k in keys})
    p = case["projection"]
    t.update(upstream.draw_params(image_proj_module(p), gen, prefix="image_proj.",
                                  special=lambda n, s: (s[-1] ** -0.5, 0.0) if n == "latents" else None))
    D = case["unet"]["cross_attention_dim"]
    t["prompt_embeds"] = randn(gen, B, 5, D)
    t["negative_prompt_embeds"] = randn(gen, B, 5, D)
    if case["unet"].get("addition_embed_type") == "text_time":
        t["pooled_prompt_embeds"] = randn(gen, B, 6)
        t["negative_pooled_prompt_embeds"] = randn(gen, B, 6)
    # One reference image for the batch: the pipeline repeats its embeds for each of the B prompts.
    if p["kind"] == "linear":
        t["image_embeds"] = randn(gen, 1, p["embeddingDim"])
        t["negative_image_embeds"] = torch.zeros(1, p["embeddingDim"])  # IP-Adapter / diffusers: zeros
    else:
        t["image_embeds"] = randn(gen, 1, 5, p["embeddingDim"])
        t["negative_image_embeds"] = randn(gen, 1, 5, p["embeddingDim"])  # stands for the encoder's output on a blank image
    t["latents"] = randn(gen, B, 4, 8, 8)
    return t


def run(case, t):
    """The diffusers pipeline on the tensors t (float64); returns the recorded outputs."""
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    x = {k: v.to(F64) for k, v in t.items()}
    unet = UNet2DConditionModel.from_config(case["unet"]).eval().to(F64)
    own = dict(unet.named_parameters())
    unet.load_state_dict({k: x[k] for k in own})
    release = {"image_proj": {k[len("image_proj."):]: v for k, v in x.items() if k.startswith("image_proj.")},
               "ip_adapter": {k[len("ip_adapter."):]: v for k, v in x.items() if k.startswith("ip_adapter.")}}
    unet._load_ip_adapter_weights([release])
    unet = unet.to(F64)
    vae = AutoencoderKL.from_config(TINY_VAE).eval().to(F64)  # only its scale factor is used (output_type "latent")
    sched_cfg = {k: v for k, v in case["scheduler"].items() if k != "_class_name"}
    xl = case["unet"].get("addition_embed_type") == "text_time"
    if xl:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None,
                                         unet=unet, scheduler=EulerDiscreteScheduler(**sched_cfg), image_encoder=None,
                                         feature_extractor=None)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=DDIMScheduler(**sched_cfg),
                                       safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_ip_adapter_scale(IP_SCALE)
    steps = []

    def record(pipe_, i, tt, kw):
        steps.append(kw["latents"].detach().clone())
        return kw

    # ip_adapter_image_embeds: one tensor per IP-Adapter, [negative ; positive] x [B, num_images = 1, ...]
    embeds = [torch.cat([x["negative_image_embeds"], x["image_embeds"]]).unsqueeze(1)]
    extra = {"pooled_prompt_embeds": x["pooled_prompt_embeds"], "negative_pooled_prompt_embeds": x["negative_pooled_prompt_embeds"]} if xl else {}
    with torch.no_grad():
        out = pipe(prompt_embeds=x["prompt_embeds"], negative_prompt_embeds=x["negative_prompt_embeds"], ip_adapter_image_embeds=embeds,
                   latents=x["latents"].clone(), num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE, width=SIZE,
                   output_type="latent", callback_on_step_end=record, **extra).images
        tokens = unet.encoder_hid_proj(embeds)[0][:, 0]  # [2B, T, D]: diffusers' projection
    # The same projection by IP-Adapter's own module (the Plus path goes through diffusers' port).
    proj = image_proj_module(case["projection"]).eval().to(F64)
    with torch.no_grad():
        theirs = upstream.call(proj, {k: v for k, v in x.items() if k.startswith("image_proj.")},
                               torch.cat([x["negative_image_embeds"], x["image_embeds"]]), prefix="image_proj.")
    gap = (theirs - tokens).abs().max().item()
    assert gap < 1e-5, f"diffusers' image projection and IP-Adapter's differ by {gap}"
    assert len(steps) == STEPS and torch.equal(steps[-1], out)
    r = {f"latents.step{i}": s for i, s in enumerate(steps)}
    r.update({"out": out, "negative_image_tokens": tokens[:1], "image_tokens": tokens[1:]})
    return r


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    check = "--check" in sys.argv[1:]
    os.makedirs(OUT, exist_ok=True)
    for name, case in CASES.items():
        path = os.path.join(OUT, case["file"])
        if check:
            _, stored = upstream.read_fixture(path)
            inputs = {k: v for k, v in stored.items() if not k.startswith("latents.step") and k not in ("out", "image_tokens", "negative_image_tokens")}
            got = run(case, inputs)
            d = upstream.Diff(case["file"])
            for k, v in got.items():
                d.add(k, v, stored[k])
            print(d)
            continue
        t = draw(case)
        r = run(case, t)
        tensors = dict(t)
        tensors.update(r)
        meta = {
            "generator": "bench/parity/make_pipeline_fixtures.py", "torch": torch.__version__,
            "upstream": upstream.provenance("diffusers", "IP-Adapter"),
            "pipeline": "StableDiffusionXLPipeline" if name == "sdxl" else "StableDiffusionPipeline",
            "compute": "diffusers pipeline in float64 on float32 weights and inputs, stored float32",
            "unet": json.dumps(case["unet"]), "scheduler": json.dumps(case["scheduler"]), "projection": json.dumps(case["projection"]),
            "sampler": case["sampler"], "steps": str(STEPS), "guidance": str(GUIDANCE), "ip_scale": str(IP_SCALE),
            "height": str(SIZE), "width": str(SIZE),
        }
        write_safetensors(path, tensors, meta)


if __name__ == "__main__":
    main()
