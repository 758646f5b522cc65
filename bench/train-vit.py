# Reference: the same training step in PyTorch eager: torchvision VisionTransformer encoder
# (ViT-S/16 shape), loss = mean(hidden^2), backward, torch.optim.AdamW step.
import argparse, json, resource, statistics, time
import torch
from torchvision.models.vision_transformer import VisionTransformer

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--batch", type=int, default=8)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536)
m.heads = torch.nn.Identity()
m.train()
for mod in m.modules():
    if isinstance(mod, torch.nn.Dropout): mod.p = 0.0
opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01)
x = torch.randn(a.batch, 3, 224, 224)

def step():
    t = m._process_input(x)
    t = torch.cat([m.class_token.expand(t.shape[0], -1, -1), t], dim=1)
    h = m.encoder(t)
    loss = (h * h).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

step()
times = []
for _ in range(a.iters):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": statistics.median(times), "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
