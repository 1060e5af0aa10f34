"""A small PyTorch classifier trained in seconds on synthetic images, and the same
network as a gradvis Model (exported through ONNX), for the attack tests."""
import functools

import numpy as np

MEAN = (0.48, 0.45, 0.40)
STD = (0.23, 0.22, 0.25)
CLASSES, SIZE = 10, 16


def synthetic_images(n, seed, classes=CLASSES, size=SIZE):
    """uint8 (n, size, size, 3) images and labels (n,): each class a fixed smooth
    random pattern, half-covered by smooth noise drawn per image."""
    proto_rng = np.random.default_rng(12345)
    def smooth(rng, k):
        a = rng.uniform(0, 255, (k, 4, 4, 3))
        return a.repeat(size // 4, axis=1).repeat(size // 4, axis=2)
    protos = smooth(proto_rng, classes)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    imgs = 0.25 * protos[y] + 0.75 * smooth(rng, n) + rng.normal(0, 8, (n, size, size, 3))
    return np.clip(np.rint(imgs), 0, 255).astype(np.uint8), y


@functools.lru_cache(maxsize=2)
def trained_pair(seed=0, steps=200):
    """(gradvis Model, torch module taking [0, 1] images, its input normalization
    included) of one small trained CNN."""
    import torch
    from torch import nn
    import gradvis

    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # one thread: reproducible weights
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * (SIZE // 4) ** 2, CLASSES))
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    imgs, y = synthetic_images(2048, seed + 1)
    x = (torch.tensor(imgs).permute(0, 3, 1, 2).float() / 255 - m) / s
    yt = torch.tensor(y)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[b]), yt[b]).backward()
        opt.step()
    net.eval()

    class Normalized(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.register_buffer("m", m)
            self.register_buffer("s", s)

        def forward(self, z):
            return self.net((z - self.m) / self.s)

    model = gradvis.from_torch(net, torch.zeros(1, 3, SIZE, SIZE), mean=MEAN, std=STD, scale=255)
    torch.set_num_threads(threads)
    return model, Normalized().eval()


def torch_images(u8):
    """uint8 (N, H, W, 3) -> float32 torch tensor (N, 3, H, W) in [0, 1]."""
    import torch
    return torch.tensor(np.ascontiguousarray(u8.transpose(0, 3, 1, 2)), dtype=torch.float32) / 255


def to_unit(model, X):
    """gradvis model input (N, 3, H, W) -> pixel values / 255 (float64)."""
    std = np.asarray(model.std, np.float64).reshape(1, -1, 1, 1)
    mean = np.asarray(model.mean, np.float64).reshape(1, -1, 1, 1)
    return (np.asarray(X, np.float64) * std + mean) / 255
