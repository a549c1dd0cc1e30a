"""Parameter names follow the reference code, so published checkpoints load.

The expected names are read off the reference files: kuangliu/pytorch-cifar
``models/resnet.py`` and ``models/mobilenetv2.py`` (also used by RSLAD), and
yaodongyu/TRADES ``models/wideresnet.py``.
"""

from __future__ import annotations

import pytest

from softlabels.models import create_model

REFERENCE_KEYS = {
    "resnet18": [
        "conv1.weight", "bn1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
        "layer1.1.bn2.bias", "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.running_var",
        "layer4.1.conv2.weight", "linear.weight", "linear.bias",
    ],
    "mobilenetv2": [
        "conv1.weight", "bn1.weight", "layers.0.conv1.weight", "layers.0.shortcut.0.weight",
        "layers.0.shortcut.1.weight", "layers.1.bn3.running_mean", "layers.16.conv3.weight",
        "layers.16.shortcut.0.weight", "conv2.weight", "bn2.bias", "linear.weight",
    ],
    "wrn": [
        "conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
        "block1.layer.4.conv2.weight", "block2.layer.0.convShortcut.weight",
        "block3.layer.4.bn2.running_var", "bn1.weight", "fc.weight", "fc.bias",
    ],
}

# Blocks without a projection shortcut in the reference (same width, stride 1).
NO_SHORTCUT = {
    "resnet18": ["layer1.0.shortcut.0.weight", "layer2.1.shortcut.0.weight"],
    "mobilenetv2": ["layers.2.shortcut.0.weight", "layers.3.shortcut.0.weight"],
    "wrn": ["block1.layer.1.convShortcut.weight", "block3.layer.1.convShortcut.weight"],
}


@pytest.mark.parametrize("name", sorted(REFERENCE_KEYS))
def test_reference_parameter_names(name: str) -> None:
    kwargs = {"depth": 34, "widen_factor": 2} if name == "wrn" else {}
    keys = set(create_model(name, 10, **kwargs).state_dict())
    missing = [key for key in REFERENCE_KEYS[name] if key not in keys]
    assert not missing, f"{name} lacks reference keys {missing}"
    unexpected = [key for key in NO_SHORTCUT[name] if key in keys]
    assert not unexpected, f"{name} has shortcuts the reference lacks: {unexpected}"
    assert {"normalize.mean", "normalize.std"} <= keys
