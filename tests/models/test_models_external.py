"""Models from outside the registry: ``module.path:factory`` and ``timm:NAME``."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from softlabels.cli import main
from softlabels.data import load_dataset
from softlabels.models import Normalize, WithNormalize, create_model
from softlabels.studies.common import build_model

FACTORIES = '''
import torch
from torch import nn

calls = []

def linear(num_classes, in_channels, image_size, hidden=8):
    calls.append((num_classes, in_channels, tuple(image_size), hidden))
    height, width = image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))

class OwnNormalisation(nn.Module):
    normalizes_input = True

    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.head = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

    def forward(self, x):
        return self.head(x.flatten(1))

def not_a_model(**kwargs):
    return "a string"

NOT_CALLABLE = 3
'''


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    (tmp_path / "user_models.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    import user_models  # written by this fixture

    return user_models


def test_a_factory_gets_the_data_shape_and_the_model_args(factories: types.ModuleType) -> None:
    model = create_model("user_models:linear", 10, 1, (8, 6), mean=(0.5,), std=(0.25,),
                         hidden=4)
    assert factories.calls == [(10, 1, (8, 6), 4)]
    assert isinstance(model, WithNormalize)
    x = torch.rand(3, 1, 8, 6)
    # The dataset's normalisation sits in front of the user's network.
    torch.testing.assert_close(model(x), model.model((x - 0.5) / 0.25))
    assert model(x).shape == (3, 10)


def test_a_model_that_normalises_itself_is_not_wrapped(factories: types.ModuleType) -> None:
    model = create_model("user_models:OwnNormalisation", 10, 1, 8, mean=(0.5,), std=(0.25,))
    assert isinstance(model, factories.OwnNormalisation)
    assert not any(isinstance(m, Normalize) for m in model.modules())


def test_the_study_builder_seeds_a_user_model(factories: types.ModuleType) -> None:
    data = load_dataset("digits", split="test")
    first = build_model("user_models:linear", ("hidden=5",), data, seed=3)
    again = build_model("user_models:linear", ("hidden=5",), data, seed=3)
    other = build_model("user_models:linear", ("hidden=5",), data, seed=4)
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.model[1].weight, other.model[1].weight)
    torch.testing.assert_close(first.normalize.mean.flatten(), torch.tensor(data.info.mean))


def test_a_user_model_trains_from_the_command_line(factories: types.ModuleType,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", "user_models:linear", "--model-args", "hidden=16",
                 "--labels", "hard", "--epochs", "2", "--ipc", "3", "--out",
                 str(tmp_path / "run"), "--device", "cpu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["labels"] for r in rows] == ["hard"]
    assert factories.calls[-1] == (10, 1, (8, 8), 16)


@pytest.mark.parametrize(("spec", "error", "message"), [
    ("no_such_module_here:net", ValueError,
     "model 'no_such_module_here:net': module 'no_such_module_here' does not import"),
    ("user_models:missing", ValueError, "module 'user_models' has no attribute 'missing'"),
    ("user_models:NOT_CALLABLE", TypeError, "'NOT_CALLABLE' is of type int, not a callable"),
    ("user_models:not_a_model", TypeError,
     "'user_models:not_a_model' returned a value of type str, not a torch.nn.Module"),
    (":linear", ValueError, "must look like module.path:factory"),
])
def test_bad_factories_are_named(factories: types.ModuleType, spec: str, error: type,
                                 message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_model(spec, 10, 1, 8)


def test_a_factory_that_refuses_the_model_args_says_which(factories: types.ModuleType) -> None:
    with pytest.raises(TypeError, match=r"'user_models:linear' could not be called .*"
                                        r"\['heads'\].*unexpected keyword argument 'heads'"):
        create_model("user_models:linear", 10, 1, 8, heads=4)


def test_the_cli_reports_a_bad_model_as_an_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", "no_such_module_here:net", "--labels", "hard",
                 "--epochs", "1", "--ipc", "1", "--out", str(tmp_path / "r")]) == 2
    assert "module 'no_such_module_here' does not import" in capsys.readouterr().err


def test_timm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r"'timm:resnet18' needs timm.*softlabels\[timm\]"):
        create_model("timm:resnet18", 10, 3, 32)


def test_timm_models_are_built_untrained_and_normalised(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    seen: dict[str, Any] = {}

    def create(name: str, **kwargs: Any) -> nn.Module:
        if name != "tiny":
            raise RuntimeError(f"Unknown model ({name})")
        seen.update(kwargs, name=name)
        return nn.Sequential(nn.Flatten(), nn.Linear(kwargs["in_chans"] * 64,
                                                     kwargs["num_classes"]))

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create))
    model = create_model("timm:tiny", 10, 1, 8, mean=(0.5,), std=(0.5,), drop_rate=0.1)
    assert seen == {"name": "tiny", "num_classes": 10, "in_chans": 1, "pretrained": False,
                    "drop_rate": 0.1}
    assert isinstance(model, WithNormalize)
    with pytest.raises(ValueError, match=r"model 'timm:vit_giant': Unknown model"):
        create_model("timm:vit_giant", 10, 1, 8)
