"""Cache of decoded segmentation splits, built on :class:`softlabels.data.cache.CacheEntry`.

The classification cache stores ``(N,)`` labels; a segmentation split has ``(N, H, W)`` masks.
This entry keeps everything else of the classification cache (content key from the source
files' paths, sizes and mtimes; stale versions removed; atomic writes with the meta last; CRC32
of every array checked on load, a corrupt entry logged, deleted and rebuilt) and only changes
the arrays it holds::

    <name>-<split>-<root digest>-<content key>.images.npy  (N, C, H, W) uint8
    <name>-<split>-<root digest>-<content key>.masks.npy   (N, H, W) uint8, ignore index mapped
    <name>-<split>-<root digest>-<content key>.json        meta: shapes, dtypes, CRC32s, stats
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..._io import atomic_path, write_json
from ..cache import CACHE_FORMAT, CacheEntry

# Part of the content key: bump it when the decoding or the label mapping changes, so that old
# entries stop matching instead of being returned.
SEGMENTATION_CACHE_VERSION = "segmentation-1"


def _spec(array: np.ndarray) -> dict[str, Any]:
    crc = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))
    return {"shape": list(array.shape), "dtype": str(array.dtype), "crc32": crc}


class SegmentationCacheEntry(CacheEntry):
    """One cached segmentation split: images, masks and meta sharing ``stem`` in ``folder``.

    Create it with :meth:`CacheEntry.create` (pass ``extra`` for everything besides the files
    that changes the decoded result, e.g. the label mapping).
    """

    @property
    def labels_path(self) -> Path:
        # The base class treats (meta, images, labels) as the entry's files when deleting a
        # corrupt entry; pointing "labels" at the masks keeps that logic valid.
        return self.folder / f"{self.stem}.masks.npy"

    @property
    def masks_path(self) -> Path:
        return self.labels_path

    def load(self) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:  # type: ignore[override]
        """Return ``(images, masks, meta)``, or ``None`` for a missing or corrupt entry."""
        meta = self.read_meta()
        if meta is None:
            return None
        try:
            images = np.load(self.images_path, allow_pickle=False)
            masks = np.load(self.masks_path, allow_pickle=False)
            for array, spec in ((images, meta["images"]), (masks, meta["masks"])):
                if _spec(array) != spec:
                    raise ValueError("shape, dtype or checksum differs from the meta")
        except (OSError, ValueError, TypeError, KeyError, EOFError) as err:
            self._discard(f"corrupt entry ({err})")
            return None
        return images, masks, meta

    def store(  # type: ignore[override]
        self, images: np.ndarray, masks: np.ndarray, extra_meta: dict[str, Any]
    ) -> None:
        """Write the entry atomically (arrays first, meta last) and drop stale versions."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, array in ((self.images_path, images), (self.masks_path, masks)):
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                # Through a handle: np.save would append ".npy" to the temporary name.
                np.save(handle, array, allow_pickle=False)
        meta = {
            "format": CACHE_FORMAT,
            "key": self.key,
            "images": _spec(images),
            "masks": _spec(masks),
            **extra_meta,
        }
        write_json(self.meta_path, meta)
        self._remove_stale()
