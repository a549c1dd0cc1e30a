"""What every study config shares: the common fields, their checks and the model builder.

:class:`StudyConfig` declares the fields every study has (dataset, data root, model, model
options, seeds, device, output folder) once; a study subclasses it, overrides a default with
:func:`like` and adds its own fields. Constraints live in each field's metadata
(:func:`~softlabels.configuration.field_help`) and are checked in one place
(:func:`~softlabels.configuration.check_fields`); a study's :meth:`StudyConfig.check` only
checks what involves several fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import yaml
from torch import nn

from ..configuration import check_fields, field_help, renamed_value
from ..data import list_datasets
from ..engine import PRECISIONS
from ..engine.logs import LOGGERS
from ..models import MODEL_SPEC_HELP, check_model, create_model, is_external, model_kwargs
from ..models.external import check_external
from ..runtime import DEVICE_CHOICES, build_seeded

__all__ = ["DataSpec", "StudyConfig", "build_model", "like", "model_builder",
           "parse_model_args"]

#: Seconds between two writes of a training run's resumable state in the studies: a killed
#: cell repeats at most this much training, and runs of many tiny epochs (digits, IPC 1
#: students) no longer spend most of their time writing and syncing ``last.pt``.
SAVE_INTERVAL = 10.0


@dataclass(frozen=True)
class StudyConfig:
    """Fields of every study; each is the CLI flag of the same name."""

    #: Old field names still accepted (with a deprecation message) -> their new names. A
    #: study that adds its own merges this one: ``{**StudyConfig.RENAMED, ...}``.
    RENAMED: ClassVar[dict[str, str]] = {"seed": "seeds"}
    #: Field -> {old value: new value}: renamed choices (label modes), still accepted with a
    #: deprecation message; rows of ``results.jsonl`` with the field as a key are read with
    #: the new spelling too, so an old run folder resumes.
    RENAMED_VALUES: ClassVar[dict[str, dict[str, str]]] = {}
    #: Model field -> its options field; a study with a teacher of its own adds that pair.
    MODELS: ClassVar[dict[str, str]] = {"model": "model_args"}

    dataset: str = field(default="digits", metadata=field_help(
        "dataset: " + ", ".join(list_datasets()) + " (softlabels list datasets)"))
    data_root: str | None = field(default=None, metadata=field_help(
        "folder holding the dataset files (default: $SOFTLABELS_DATA/<dataset>; not needed "
        "for embedded data)"))
    model: str = field(default="convnet", metadata=field_help("model: " + MODEL_SPEC_HELP))
    model_args: tuple[str, ...] = field(default=("width=64",), metadata=field_help(
        "model options as KEY=VALUE"))
    seeds: tuple[int, ...] = field(default=(0,), metadata=field_help(
        "seeds, one cell each", nonempty=True, unique=True, low=0))
    device: str = field(default="auto", metadata=field_help("auto, cpu or cuda (or cuda:N)"))
    precision: str = field(default="fp32", metadata=field_help(
        "autocast precision of every training run: fp32, bf16 (CPU or CUDA; recommended on "
        "CUDA) or fp16 (CUDA, loss-scaled)", choices=PRECISIONS))
    channels_last: bool = field(default=False, metadata=field_help(
        "NHWC memory layout for models and inputs (faster convolutions on recent GPUs)"))
    compile: bool = field(default=False, metadata=field_help(
        "torch.compile every model before it trains"))
    stream: bool = field(default=False, metadata=field_help(
        "read the dataset image by image from its folder instead of decoding it into memory "
        "(ImageFolder trees and CamVid; for data larger than memory)"))
    data_workers: int = field(default=0, metadata=field_help(
        "DataLoader worker processes decoding a streamed dataset while the model trains",
        low=0))
    logger: str | None = field(default=None, metadata=field_help(
        "also log each training run's history to tensorboard (history.csv is always written "
        "beside its checkpoints)", choices=LOGGERS))
    out: str = field(default="runs/study", metadata=field_help("output folder"))

    def __post_init__(self) -> None:
        for name, table in self.RENAMED_VALUES.items():
            # A config built in Python with an old spelling; build_config has already
            # replaced (and warned about) those given on the command line or in a file.
            object.__setattr__(self, name, renamed_value(name, table, getattr(self, name),
                                                         stacklevel=4))
        check_fields(self)
        base = self.device.split(":", 1)[0]
        if base not in DEVICE_CHOICES:
            raise ValueError(f"device must be one of {list(DEVICE_CHOICES)} (or cuda:N), got "
                             f"{self.device!r}")
        for model_field, args_field in self.MODELS.items():
            _check_model_field(getattr(self, model_field), getattr(self, args_field),
                               model_field, args_field)
        self.check()

    def check(self) -> None:
        """Checks that involve several fields; a study overrides it."""

    def no_streaming(self, why: str) -> None:
        """Refuse ``stream`` in a study that holds its data in memory (``why`` says why)."""
        if self.stream:
            raise ValueError(f"--stream is not available here: {why}; drop --stream (the "
                             "data is decoded into memory)")

    def engine(self) -> dict[str, Any]:
        """The :class:`~softlabels.engine.TrainConfig` fields every training run shares."""
        return {"precision": self.precision, "channels_last": self.channels_last,
                "compile": self.compile, "save_interval": SAVE_INTERVAL}


def like(name: str, default: Any, help: str | None = None) -> Any:
    """A :class:`StudyConfig` field with another default (and optionally another help text)."""
    base = StudyConfig.__dataclass_fields__[name]
    meta = dict(base.metadata)
    if help is not None:
        meta["help"] = help
    return field(default=default, metadata=meta)


def parse_model_args(items: tuple[str, ...], name: str = "model_args") -> dict[str, Any]:
    """Turn ``("width=64", "norm=batchnorm")`` into ``{"width": 64, "norm": "batchnorm"}``."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{name} must look like KEY=VALUE, got {item!r}")
        parsed[key.replace("-", "_")] = yaml.safe_load(value)
    return parsed


def _check_model_field(name: str, args: tuple[str, ...], model_field: str, args_field: str
                       ) -> None:
    """Refuse a model name or option before any cell trains; the message names the field."""
    options = parse_model_args(args, args_field)
    # The name first (resolving it builds nothing), so that each error blames its own field.
    try:
        if is_external(name):
            check_external(name)
        else:
            model_kwargs(name)
    except (ValueError, TypeError, ImportError) as err:
        raise type(err)(f"{model_field}: {err}") from None
    try:
        check_model(name, **options)
    except (ValueError, TypeError, ImportError) as err:
        raise type(err)(f"{args_field}: {err}") from None


class DataSpec(Protocol):
    """What a model builder needs to know of a dataset (images or segmentation)."""

    num_classes: int
    in_channels: int
    image_size: tuple[int, int]

    @property
    def info(self) -> Any: ...


def model_builder(name: str, args: tuple[str, ...], data: DataSpec
                  ) -> Callable[[int], nn.Module]:
    """``builder(seed) -> nn.Module``: model ``name`` for ``data``, its normalisation inside.

    The builder itself does not seed; :func:`build_model` (and the distillation helpers that
    take a builder) call it under :func:`~softlabels.runtime.build_seeded`.
    """
    options = parse_model_args(args)

    def build(seed: int) -> nn.Module:
        return create_model(name, data.num_classes, data.in_channels, data.image_size,
                            mean=data.info.mean, std=data.info.std, **options)
    return build


def build_model(name: str, args: tuple[str, ...], data: DataSpec, seed: int) -> nn.Module:
    """Model ``name`` for ``data``, initialised from ``seed``.

    The one seeding rule of every study: the global torch RNG is seeded with ``seed`` for the
    construction and restored after (:func:`~softlabels.runtime.build_seeded`), so model
    ``seed`` has the same weights whoever builds it, in any process and any order.
    """
    return build_seeded(model_builder(name, args, data), seed)
