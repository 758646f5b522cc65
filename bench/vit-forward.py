# Reference: the same ViT-S/16-shaped forward (batch 8, 224 px, random weights) in PyTorch eager,
# torchvision's VisionTransformer (its encoder; the classification head is not run).
import argparse, json, resource, statistics, time
import torch
from torchvision.models.vision_transformer import VisionTransformer

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--iters", type=int, default=5)
ap.add_argument("--batch", type=int, default=8)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
m = VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536).eval()
x = torch.randn(a.batch, 3, 224, 224)

def forward():
    t = m._process_input(x)
    t = torch.cat([m.class_token.expand(t.shape[0], -1, -1), t], dim=1)
    return m.encoder(t)

with torch.inference_mode():
    forward()
    times = []
    for _ in range(a.iters):
        t0 = time.perf_counter(); forward(); times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": statistics.median(times), "peakRssMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
