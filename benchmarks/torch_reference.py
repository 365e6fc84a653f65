"""PyTorch references for SPEC §11: ResNet-18 (CIFAR stem) full training step, eager and
`torch.compile`, bf16 autocast, channels-last, on the same device as cnnjax's benchmark.

    python benchmarks/torch_reference.py --batch=512 [--steps=50] [--device=cuda]
    python benchmarks/torch_reference.py --compare   # also runs cnnjax and prints the ratio

torch is optional and never a cnnjax dependency: this script is the yardstick only. The model is
written out here (no torchvision needed) to match cnnjax's `resnet18` with `stem="cifar"`:
11,173,962 parameters for 10 classes; the step is SGD nesterov momentum 0.9, weight decay 5e-4,
label smoothing 0.1 — the `resnet18_cifar` recipe.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def build_resnet18_cifar(torch, num_classes=10):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.short is None else self.short(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()
            )
            layers, cin = [], 64
            for i, cout in enumerate((64, 128, 256, 512)):
                for j in range(2):
                    layers.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return ResNet18()


def time_torch(batch: int, steps: int, warmup: int, compiled: bool, device: str) -> dict:
    import torch

    torch.backends.cudnn.benchmark = True
    model = build_resnet18_cifar(torch).to(device).to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast_dtype = torch.bfloat16

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = torch.compile(step) if compiled else step
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "impl": "torch.compile" if compiled else "torch eager",
        "params": n_params,
        "batch": batch,
        "images_per_sec": steps * batch / elapsed,
        "ms_per_step": 1e3 * elapsed / steps,
        "warmup_s": warm_s,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
    }


def time_cnnjax(batch: int, steps: int) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [
        sys.executable,
        os.path.join(root, "launch.py"),
        "--experiment=resnet18_cifar",
        "--mode=benchmark",
        f"--config.batch_size={batch}",
        f"--config.benchmark.steps={steps}",
        "--config.data.name=synthetic",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root).stdout
    ips = next(ln for ln in out.splitlines() if ln.strip().startswith("images/s"))
    return {
        "impl": "cnnjax",
        "images_per_sec": float(ips.split()[-1].replace(",", "")),
        "report": out,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compare", action="store_true", help="also run cnnjax's benchmark mode")
    args = p.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = [time_torch(args.batch, args.steps, args.warmup, False, device)]
    if not args.no_compile:
        results.append(time_torch(args.batch, args.steps, args.warmup, True, device))
    if args.compare:
        results.append(time_cnnjax(args.batch, args.steps))
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "report"}))
    if args.compare:
        print(results[-1]["report"])
        for r in results[:-1]:
            print(
                f"cnnjax / {r['impl']}: {results[-1]['images_per_sec'] / r['images_per_sec']:.2f}x"
            )


if __name__ == "__main__":
    main()
