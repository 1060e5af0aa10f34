"""gradvis.optvis against torch-lucent 0.1.8 (Lucid's PyTorch port), the peer that
defines these methods, under the same settings:

- the parameterization (1/f-scaled Fourier spectrum or pixels, colour
  decorrelation with Lucid's ImageNet matrix, sigmoid): images and their gradient
  with respect to the parameters, from the same parameter values;
- the objectives (channel, neuron, direction as C times Lucent's
  ``channel_weight``, direction_cosine as Lucent's ``direction``, diversity, class
  logit as a channel of the logits, blur_input as ``blur_input_each_step``, sums
  and scalar multiples, one image of a batch): value and gradient with respect to
  the activations, Lucent's losses being the negated objectives;
- the transforms whose definitions Lucent shares: the constant pad and the
  rotation (kornia's ``warp_affine`` about the centre, as Lucent's
  ``random_rotate`` calls it, with pixel-centre-consistent ``align_corners=True``;
  Lucent's own call, ``align_corners=False``, scales the image by up to
  1/(size - 1) as well) and the bilinear resize (``torch.nn.functional.interpolate``
  with half-pixel centres); forward and adjoint (torch autograd). Lucent's jitter
  translates with zero fill where Lucid's, which gradvis follows, crops;
- a whole render without random transforms: the same starting spectrum, Adam at
  0.05 and a channel objective of a small CNN (gradvis's copy imported from the
  PyTorch module) give the same images after 30 steps.

Under CI a missing reference fails instead of skipping.
"""
import numpy as np
import pytest

from conftest import require, require_torchvision
from helpers import rel_err

from gradvis.optvis import objectives as O, param as P, render, transforms as T
from gradvis.optvis.objectives import INPUT, LOGITS
from gradvis.optvis.render import from_model_input

torch, _torchvision = require_torchvision()
require("kornia")
require("lucent")
import kornia  # noqa: E402
from lucent.optvis import objectives as LO, render as LR, transform as LT  # noqa: E402
from lucent.optvis.param.color import to_valid_rgb  # noqa: E402
from lucent.optvis.param.spatial import fft_image, pixel_image  # noqa: E402


# ---------------------------------------------------------------------------- parameterization
def _lucent_param(p, decay_power):
    """Lucent's parameterization holding the parameter values of gradvis's ``p``:
    (its parameter tensor, its image function)."""
    n, c, h, w = p.shape
    if p.fft:
        params, image_f = fft_image((n, c, h, w), sd=0.01, decay_power=decay_power)
        t = params[0]
        z = np.zeros(tuple(t.shape), np.float32)    # for odd w Lucid keeps one unused bin more
        z[..., :w // 2 + 1, 0] = p.params[0]
        z[..., :w // 2 + 1, 1] = p.params[1]
        t.data = torch.from_numpy(z)
    else:
        params, image_f = pixel_image((n, c, h, w), sd=0.01)
        t = params[0]
        t.data = torch.from_numpy(p.params.copy())
    return t, to_valid_rgb(image_f, decorrelate=p.decorrelate)


def _to_gradvis_layout(grad, p):
    g = grad.numpy()
    if not p.fft:
        return g, None
    w = p.shape[3]
    rest = g[..., w // 2 + 1:, :]
    return np.stack([g[..., :w // 2 + 1, 0], g[..., :w // 2 + 1, 1]]), rest


@pytest.mark.parametrize("fft, decay_power", [(True, 1.0), (True, 1.5), (False, 1.0)])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("hw", [(16, 16), (17, 24), (24, 17), (15, 15)])
def test_parameterization_matches_lucent(fft, decay_power, decorrelate, hw):
    h, w = hw
    p = P.image(h, w, batch=2, fft=fft, decorrelate=decorrelate, decay_power=decay_power, seed=3)
    p.params *= 30.0                      # well into the sigmoid's curve
    t, image_f = _lucent_param(p, decay_power)
    img, ctx = p.forward()
    ref = image_f()
    assert rel_err(img, ref.detach().numpy()) < 2e-6
    d = np.random.default_rng(1).standard_normal(img.shape).astype(np.float32)
    (ref * torch.from_numpy(d)).sum().backward()
    want, unused = _to_gradvis_layout(t.grad, p)
    assert rel_err(p.backward(d, ctx), want) < 2e-5
    if unused is not None and unused.size:
        assert np.abs(unused).max() == 0


# ---------------------------------------------------------------------------- objectives
def _acts(seed=0, n=3, c=6, h=5, w=7):
    rng = np.random.default_rng(seed)
    return {"L": rng.standard_normal((n, c, h, w)).astype(np.float64),
            "M": rng.standard_normal((n, 4, 6, 6)).astype(np.float64),
            LOGITS: rng.standard_normal((n, 10)).astype(np.float64),
            # Lucent's blur has float32 weights
            INPUT: rng.uniform(0, 1, (n, 3, 9, 8)).astype(np.float32)}


def _lucent_value_grad(obj, acts):
    """Lucent's loss for the activations ``acts`` and its gradient with respect to
    each of them: ``obj`` reads layers through its hook function."""
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in acts.items()}
    loss = obj(lambda name: ts[name])
    loss.backward()
    return float(loss), {k: (t.grad.numpy() if t.grad is not None else np.zeros_like(acts[k]))
                         for k, t in ts.items()}


DIRECTION = np.random.default_rng(7).standard_normal(6)

OBJECTIVE_PAIRS = {
    "channel": (lambda: O.channel("L", 4), lambda: LO.channel("L", 4)),
    "channel_batch": (lambda: O.channel("L", 2, batch=1), lambda: LO.channel("L", 2, batch=1)),
    "neuron_centre": (lambda: O.neuron("M", 3), lambda: LO.neuron("M", 3)),
    # Lucent's x indexes width and y height, as gradvis's do
    "neuron_xy": (lambda: O.neuron("L", 5, x=6, y=1), lambda: LO.neuron("L", 5, x=6, y=1)),
    "neuron_batch": (lambda: O.neuron("M", 0, x=1, y=4, batch=2), lambda: LO.neuron("M", 0, x=1, y=4, batch=2)),
    # Lucid's direction, the mean dot product, is C times Lucent's channel_weight
    "direction": (lambda: O.direction("L", DIRECTION),
                  lambda: 6 * LO.channel_weight("L", torch.tensor(DIRECTION))),
    "direction_batch": (lambda: O.direction("L", DIRECTION, batch=2),
                        lambda: 6 * LO.channel_weight("L", torch.tensor(DIRECTION), batch=2)),
    # Lucent's direction is the mean cosine similarity
    "direction_cosine": (lambda: O.direction_cosine("L", DIRECTION),
                         lambda: LO.direction("L", torch.tensor(DIRECTION))),
    "direction_cosine_batch": (lambda: O.direction_cosine("L", DIRECTION, batch=0),
                               lambda: LO.direction("L", torch.tensor(DIRECTION), batch=0)),
    "diversity": (lambda: O.diversity("L"), lambda: LO.diversity("L")),
    "class_logit": (lambda: O.class_logit(7), lambda: LO.channel("logits", 7)),
    "blur_input": (lambda: O.blur_input(), lambda: LO.blur_input_each_step()),
    "sum": (lambda: O.channel("L", 1) - 0.5 * O.neuron("M", 2) + 2 * O.class_logit(3) - 1e2 * O.diversity("M"),
            lambda: LO.channel("L", 1) - 0.5 * LO.neuron("M", 2) + 2 * LO.channel("logits", 3)
            - 1e2 * LO.diversity("M")),
    "scaled": (lambda: O.channel("M", 3) / 4 - O.blur_input(),
               lambda: LO.channel("M", 3) / 4 - LO.blur_input_each_step()),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVE_PAIRS))
@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_lucent(name, seed):
    ours, theirs = (f() for f in OBJECTIVE_PAIRS[name])
    acts = _acts(seed)
    loss, want = _lucent_value_grad(theirs, acts)
    value, grads = ours.value(acts, 3)
    rtol = 1e-5 if INPUT in ours.layers() else 1e-10
    assert value == pytest.approx(-loss, rel=rtol, abs=1e-12)
    for k in acts:
        got = grads.get(k, np.zeros_like(acts[k]))
        scale = max(np.abs(want[k]).max(), 1e-30)
        np.testing.assert_allclose(got, -want[k], rtol=0, atol=rtol * scale, err_msg=f"{name}: gradient of {k}")


# ---------------------------------------------------------------------------- transforms
def _images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _fixed(transform):
    """A gradvis transform with one choice, applied once: (output, back)."""
    return lambda x: transform.apply(x, np.random.default_rng(0))


def _torch_forward_adjoint(f, x, dy):
    xt = torch.tensor(x, requires_grad=True)
    y = f(xt)
    (y * torch.tensor(dy)).sum().backward()
    return y.detach().numpy(), xt.grad.numpy()


def test_pad_matches_lucent():
    x = _images((2, 3, 9, 11))
    y, back = _fixed(T.pad(4, 0.5))(x)
    dy = _images(y.shape, 1)
    want, want_adj = _torch_forward_adjoint(LT.pad(4, mode="constant", constant_value=0.5), x, dy)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(back(dy), want_adj)


@pytest.mark.parametrize("angle", [-10.0, -3.0, 7.0, 45.0])
@pytest.mark.parametrize("hw", [(20, 24), (17, 17)])
def test_rotation_matches_kornia(angle, hw):
    x = _images((2, 3) + hw)
    y, back = _fixed(T.random_rotate([angle]))(x)
    dy = _images(y.shape, 1)

    def kornia_rotate(t, align_corners=True):
        b, _, h, w = t.shape
        centre = torch.ones(b, 2, dtype=t.dtype)
        centre[:, 0] = (w - 1) / 2
        centre[:, 1] = (h - 1) / 2
        m = kornia.get_rotation_matrix2d(centre, torch.full((b,), angle, dtype=t.dtype),
                                         torch.ones(b, 2, dtype=t.dtype))
        return kornia.warp_affine(t, m, dsize=(h, w), align_corners=align_corners)
    want, want_adj = _torch_forward_adjoint(kornia_rotate, x, dy)
    assert rel_err(y, want) < 5e-6
    assert rel_err(back(dy), want_adj) < 5e-6
    # the same direction as Lucent's random_rotate (which differs by its slight scaling)
    lucent = LT.random_rotate([angle])(torch.tensor(x)).numpy()
    opposite, _ = _fixed(T.random_rotate([-angle]))(x)
    assert np.abs(y - lucent).max() < 0.25 * np.abs(opposite - lucent).max()


@pytest.mark.parametrize("size", [(23, 27), (17, 21), (40, 11), (9, 9)])
def test_resize_matches_torch_interpolate(size):
    x = _images((2, 3, 20, 24))
    y, back = _fixed(T.resize(size))(x)
    dy = _images(y.shape, 1)
    want, want_adj = _torch_forward_adjoint(
        lambda t: torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False), x, dy)
    assert rel_err(y, want) < 5e-6
    assert rel_err(back(dy), want_adj) < 5e-6


# ---------------------------------------------------------------------------- render
def test_render_without_transforms_matches_lucent():
    """30 Adam steps on a channel objective from the same starting spectrum.

    gradvis's Adam is Lucid's (TensorFlow's: eps added to sqrt(v) before the bias
    corrections), Lucent's is PyTorch's (eps added after them); the two differ
    where a gradient is not much larger than eps / sqrt(1 - beta2^t) (3e-7 at the
    first step). The objective is scaled so that no gradient is that small."""
    import gradvis
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(16, 5)).eval()
    for q in net.parameters():
        q.requires_grad_(False)
    mean, std, size, steps = (0.48, 0.45, 0.40), (0.23, 0.22, 0.25), 24, 30
    model = gradvis.from_torch(net, torch.zeros(1, 3, size, size), mean=mean, std=std, scale=255)
    p = P.image(size, batch=2, seed=5)
    p.params *= 10.0
    t, image_f = _lucent_param(p, 1.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        start = float(net[:5]((image_f() - m) / s)[:, 3].mean())
    want, = LR.render_vis(net, 1e4 * LO.channel("4", 3), param_f=lambda: ([t], image_f),
                          transforms=[lambda z: (z - m) / s], thresholds=(steps,), preprocess=False,
                          progress=False, show_image=False, fixed_image_size=size)
    X, = render(1e4 * O.channel("4", 3), model, param=p, transforms=None, steps=steps, redirected_relu_steps=0)
    got = np.transpose(from_model_input(X, model), (0, 2, 3, 1))
    assert np.abs(got - want).max() < 1e-4
    # and the objective rose: the run is not a no-op
    with torch.no_grad():
        end = float(net[:5]((torch.tensor(np.transpose(want, (0, 3, 1, 2))) - m) / s)[:, 3].mean())
    assert end > start + 0.1
