"""CIFAR-10 and CIFAR-100, from the official python pickles or an ImageFolder tree.

Layouts, tried in this order:

1. The python version of the official archive, either in its folder or directly at the root:
   ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
   ``root/cifar-100-python/{train, test, meta}`` (CIFAR-100 uses the 100 *fine* labels).
2. An ImageFolder tree ``root/{train,test}/<class>/*.png|jpg`` (see
   :mod:`softlabels.data.sources.imagefolder`). When the folder names are exactly the official
   class names, the official class order is used (for both datasets it is the sorted order, so
   the labels equal those of the pickles); otherwise the sorted folder names.

Security: the official files are Python pickles. They are read with ``encoding="bytes"`` (they
were written by Python 2) through an unpickler that only accepts the few numpy globals needed to
rebuild arrays, so a foreign pickle is refused instead of run; still, load them only from a
trusted source.

``DatasetInfo`` mean/std are the published per-pixel statistics of the training images
(population std over all pixels), not computed from the loaded files.
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .base import RawSplit, Source, SplitPlan, first_existing, need_root
from .imagefolder import locate_tree

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# The globals a pickled numpy array refers to (numpy 1 and numpy 2 module names), plus
# _codecs.encode, which Python 3 uses to store bytes in protocol-2 pickles (pure data transform).
_ALLOWED_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain containers and numpy arrays, and refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module == "numpy.core.multiarray":
            # numpy 2 renamed numpy.core to numpy._core; importing the old name warns.
            module = "numpy._core.multiarray" if _has_numpy_core_underscore() else module
        return super().find_class(module, name)


def _has_numpy_core_underscore() -> bool:
    return int(np.__version__.split(".")[0]) >= 2


def load_pickle(path: Path) -> dict[bytes, Any]:
    """Read one CIFAR pickle (a dict with ``bytes`` keys) with the restricted unpickler.

    Raises:
        ValueError: naming the file if it is corrupt, truncated, or not a CIFAR pickle.
    """
    try:
        with open(path, "rb") as handle:
            obj = _ArrayOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, ImportError, MemoryError) as err:  # fmt: skip
        raise ValueError(
            f"{str(path)!r} is not a readable CIFAR pickle (corrupt, truncated or foreign): "
            f"{type(err).__name__}: {err}"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}, expected a CIFAR dict")
    return obj


def _batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    obj = load_pickle(path)
    if b"data" not in obj or label_key not in obj:
        keys = sorted(k.decode("latin-1") if isinstance(k, bytes) else str(k) for k in obj)
        raise ValueError(
            f"{str(path)!r} lacks the keys 'data' and {label_key.decode()!r}; it has {keys}"
        )
    data = np.asarray(obj[b"data"])
    labels = np.asarray(obj[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{str(path)!r}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} "
            f"{data.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{str(path)!r}: {label_key.decode()!r} must be {data.shape[0]} integers, got "
            f"{labels.dtype} {labels.shape}"
        )
    # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major: i.e. CHW.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _meta_names(path: Path, key: bytes, default: tuple[str, ...]) -> tuple[str, ...]:
    if not path.is_file():
        return default
    obj = load_pickle(path)
    names = obj.get(key)
    if not isinstance(names, list) or len(names) != len(default):
        raise ValueError(
            f"{str(path)!r}: {key.decode()!r} must list {len(default)} class names, got {names!r}"
        )
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _read_pickles(
    batches: tuple[Path, ...], meta: Path, label_key: bytes, meta_key: bytes,
    default_names: tuple[str, ...],
) -> RawSplit:  # fmt: skip
    class_names = _meta_names(meta, meta_key, default_names)
    parts = [_batch(p, label_key) for p in batches]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels in {[str(b) for b in batches]} must lie in [0, {len(class_names)}), got "
            f"range [{labels.min()}, {labels.max()}]"
        )
    return RawSplit(images=np.ascontiguousarray(images), labels=labels, class_names=class_names)


def _locate(
    root: Path | None, split: str, *, folder: str, batches: dict[str, tuple[str, ...]],
    meta: str, label_key: bytes, meta_key: bytes, classes: tuple[str, ...], name: str,
) -> SplitPlan:  # fmt: skip
    root = need_root(root, name)
    names = batches[split]
    candidates = [root / folder, root]
    found = first_existing(candidates, names)
    if found is not None:
        files = tuple(found / n for n in names)
        meta_path = found / meta
        return SplitPlan(
            origin=str(found),
            files=(*files, meta_path) if meta_path.is_file() else files,
            read=partial(_read_pickles, files, meta_path, label_key, meta_key, classes),
        )
    if (root / split).is_dir():
        return locate_tree(root, split, canonical=classes, what=name)
    missing = [n for n in names if not (root / folder / n).is_file()]
    raise FileNotFoundError(
        f"split {split!r} needs either the python pickles {list(names)} (+ {meta}) in "
        f"{str(root / folder)!r} or {str(root)!r}, missing {missing}; or an ImageFolder tree "
        f"{str(root / split)!r}/<class>/*.png|jpg; found neither"
    )


CIFAR10 = Source(
    name="cifar10",
    description="CIFAR-10 (32x32 colour, 10 classes): python pickles or ImageFolder tree",
    locate=partial(
        _locate,
        folder="cifar-10-batches-py",
        batches={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        meta="batches.meta",
        label_key=b"labels",
        meta_key=b"label_names",
        classes=CIFAR10_CLASSES,
        name="cifar10",
    ),
    # Per-pixel statistics of the 50000 training images. (The dataset-condensation code base
    # uses std (0.2023, 0.1994, 0.2010), the mean of per-image stds, a different quantity.)
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = Source(
    name="cifar100",
    description="CIFAR-100 (32x32 colour, 100 fine classes): python pickles or ImageFolder tree",
    locate=partial(
        _locate,
        folder="cifar-100-python",
        batches={"train": ("train",), "test": ("test",)},
        meta="meta",
        label_key=b"fine_labels",
        meta_key=b"fine_label_names",
        classes=CIFAR100_CLASSES,
        name="cifar100",
    ),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
)
