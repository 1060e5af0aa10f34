"""timm's CNNs, exported by PyTorch's ONNX exporters, import and match PyTorch: the
checks of :mod:`test_onnx_zoo` (logits and input gradient, float64 and float32) on
networks whose graphs use what torchvision's do not: ECA-Net's 1-D convolution across
the channels, ConvNeXt-V2's global response normalization (ReduceL2), TensorFlow-style
"same" pads computed with Ceil and Clip, NFNets' and BiT's weight standardization (a
training-mode BatchNormalization over the weights), the attention of hybrid networks
(MobileViT-V2, EfficientViT: MatMul of two activation tensors; timm's attention,
whose q, k, v are unbound from a permute that moves the batch axis), a vision
transformer's class token (Concat with a constant), anti-aliased and space-to-depth
stems, ghost and RepVGG blocks, selective-kernel and split attention, ...

timm is a test-time reference only (installed without its dependencies, which its
model code does not import). Weights are timm's random initialization, with every
parameter that starts constant (norm weights and biases, layer scales, GRN's zero
gains) and the batch-norm statistics drawn at random so that folding mistakes show.
CI runs the models in ``CI_MODELS``; ``pytest -m slow tests/test_timm_zoo.py`` runs
``SLOW_MODELS`` too.
"""
import numpy as np
import pytest

from conftest import require
from test_onnx_zoo import _torchvision, check_net, randomize_statistics

# model: input size; each brings an import path of its own
CI_MODELS = {
    "ecaresnet26t": 64,          # Conv1d over the pooled channels
    "convnextv2_atto": 64,       # global response normalization: ReduceL2
    "tf_efficientnet_b0": 64,    # "same" pads computed from shapes with Ceil and Clip
    "nf_resnet26": 64,           # weight standardization: BatchNormalization on constants
    "efficientvit_b0": 64,       # linear attention: MatMul of two activation tensors
}
SLOW_MODELS = {
    **{m: 64 for m in (
        "resnet26t", "seresnext26d_32x4d", "skresnet18", "resnest14d", "res2net50_14w_8s", "res2next50",
        "dla34", "dpn68", "cspresnet50", "cspdarknet53", "darknet53", "cs3darknet_s", "dm_nfnet_f0",
        "eca_nfnet_l0", "resnetv2_50x1_bit", "regnetx_002", "regnety_002", "rexnet_100", "ghostnet_100",
        "ghostnetv2_100", "repghostnet_050", "mobilenetv3_small_100", "mobilenetv4_conv_small", "mixnet_s",
        "efficientnet_lite0", "tinynet_a", "hrnet_w18_small", "ese_vovnet19b_dw", "selecsls42b", "tresnet_m",
        "gernet_s", "repvgg_a0", "mobileone_s0", "hardcorenas_a", "lcnet_050", "fbnetc_100", "mnasnet_small",
        "semnasnet_050", "spnasnet_100", "xception41", "legacy_xception", "hgnetv2_b0", "fastvit_t8",
        "poolformer_s12", "convmixer_768_32", "convnext_atto", "rdnet_tiny", "inception_next_atto",
        "resnet50_gn", "resnetblur18", "mobilevitv2_050", "edgenext_xx_small", "regnetz_b16", "dla46_c",
        "hrnet_w18_small_v2", "nasnetalarge", "gcresnet33ts", "skresnext50_32x4d", "resnest26d", "rexnetr_100",
        "tf_mobilenetv3_small_075", "tf_efficientnetv2_b0", "mobilenetv3_rw", "ese_vovnet39b", "repvit_m0_9",
        "ghostnetv3_100", "starnet_s1", "mambaout_femto", "fastvit_sa12")},
    # hybrids and transformers that take 224x224 only (a class token, position embeddings)
    # (LeViT imports and its logits match, but with its constant parameters drawn at
    # random PyTorch's autograd input gradient disagrees with PyTorch's own finite
    # differences, which gradvis's gradient matches: no reference here)
    **{m: 224 for m in ("pvt_v2_b0", "vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "coat_lite_tiny",
                        "efficientformerv2_s0", "coatnet_nano_rw_224", "visformer_tiny", "pit_ti_224",
                        "twins_pcpvt_small", "cait_xxs24_224", "mobilenetv4_hybrid_medium",
                        "nextvit_small")},          # 1-D pools and batch norm over tokens
    **{m: 160 for m in ("inception_v3", "inception_v4", "inception_resnet_v2")},
}


def _timm():
    torch, _ = _torchvision()     # torchvision's op schemas first: timm imports it
    return torch, require("timm")


def randomize_constant_parameters(torch, net, seed=0):
    """Norm weights (all 1), biases and gains (all 0) and layer scales (all 1e-6 or
    so) of ``net`` drawn at random, in place: a parameter that starts constant would
    hide a mistake in whatever it scales."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all()):
                v = float(p.reshape(-1)[0])
                if v == 1.0:
                    p.copy_(torch.rand(p.shape, generator=g) + 0.5)
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * (0.1 if v == 0.0 else 0.5))
    return net


def check_timm(name, size, exporter="torchscript"):
    torch, timm = _timm()
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, num_classes=10).eval()
    randomize_statistics(torch, randomize_constant_parameters(torch, net))
    check_net(torch, net, name, exporter, size)


@pytest.mark.parametrize("name", sorted(CI_MODELS))
def test_timm_model(name):
    check_timm(name, CI_MODELS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_MODELS))
def test_every_timm_model(name):
    check_timm(name, SLOW_MODELS[name])
