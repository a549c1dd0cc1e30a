"""Download of the public datasets, only when asked (``load_dataset(..., download=True)``).

URLs and MD5 checksums are torchvision's (``torchvision/datasets/mnist.py`` and ``cifar.py``).
MD5 is used because that is what the publishers and torchvision give; it guards against
truncated or corrupted transfers and wrong files, not against a malicious mirror. Each file:

1. is streamed to a temporary file next to its destination while its checksum is computed;
2. is renamed into place only if the checksum matches; on a mismatch the temporary file is
   deleted and a ``ValueError`` names the URL and both checksums (a file already in place with
   a wrong checksum is deleted and fetched again);
3. if it is a ``.tar.gz`` archive, is extracted after checking that no member has an absolute
   path, a ``..`` component, or is a link or device file.

``RESOURCES`` is a plain table; tests point it at a local server by replacing entries.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .._io import atomic_path

logger = logging.getLogger(__name__)

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One file to fetch.

    Attributes:
        filename: name of the file in the data root.
        urls: where to fetch it, tried in order (mirrors) until one answers.
        md5: expected MD5 hex digest of the downloaded file (or give ``sha256``).
        sha256: expected SHA-256 hex digest, checked in addition when given.
        extract: the file is a ``.tar.gz`` archive to unpack into the data root.
    """

    filename: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


def _idx_files(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(
        Resource(filename=name, urls=tuple(m + name for m in mirrors), md5=md5)
        for name, md5 in md5s.items()
    )


RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": _idx_files(
        _MNIST_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": _idx_files(
        _FASHION_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": (
        Resource(
            filename="cifar-10-python.tar.gz",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            md5="c58f30108f718f92721af3b95e74349a",
            extract=True,
        ),
    ),
    "cifar100": (
        Resource(
            filename="cifar-100-python.tar.gz",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            md5="eb9058c3a382ffc7106e4002c42a8d85",
            extract=True,
        ),
    ),
}


def file_digests(path: str | Path) -> tuple[str, str]:
    """``(md5, sha256)`` hex digests of a file, read in 1 MiB blocks."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _mismatch(resource: Resource, md5: str, sha: str) -> str | None:
    """Describe a checksum mismatch, or ``None`` if the digests match the resource."""
    if resource.md5 is None and resource.sha256 is None:
        raise ValueError(f"resource {resource.filename!r} has no checksum; refusing to use it")
    if resource.md5 is not None and md5 != resource.md5.lower():
        return f"md5 {md5}, expected {resource.md5}"
    if resource.sha256 is not None and sha != resource.sha256.lower():
        return f"sha256 {sha}, expected {resource.sha256}"
    return None


def _stream(url: str, tmp: Path, timeout: float) -> tuple[str, str]:
    """Copy ``url`` to ``tmp`` block by block; return its ``(md5, sha256)``."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        while block := response.read(_BLOCK):
            out.write(block)
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def download_file(resource: Resource, folder: str | Path, *, timeout: float = 60.0) -> Path:
    """Fetch ``resource`` into ``folder`` unless a file with the right checksum is there.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: the downloaded file has the wrong checksum (nothing is left in place).
        ConnectionError: no URL of the resource could be fetched.
    """
    target = Path(folder) / resource.filename
    if target.is_file():
        if _mismatch(resource, *file_digests(target)) is None:
            return target
        logger.warning("%s has a wrong checksum; downloading it again", target)
        target.unlink()
    errors: list[str] = []
    for url in resource.urls:
        logger.info("downloading %s to %s", url, target)
        try:
            # The with-block must end by an exception for atomic_path to discard the temporary
            # file; leaving it normally would move a partial or wrong file into place.
            with atomic_path(target) as tmp:
                problem = _mismatch(resource, *_stream(url, tmp, timeout))
                if problem is not None:
                    raise ValueError(
                        f"checksum mismatch for {url}: got {problem}; the file was discarded "
                        "(corrupt transfer or changed file upstream)"
                    )
        except (urllib.error.URLError, OSError) as err:
            errors.append(f"{url}: {err}")
            continue  # try the next mirror
        return target
    raise ConnectionError(
        f"could not download {resource.filename}: " + "; ".join(errors)
        + f". Download it by hand into {str(Path(folder))!r}."
    )


def safe_extract(archive: str | Path, folder: str | Path) -> None:
    """Extract a tar archive into ``folder``, refusing members that could escape it.

    Raises:
        ValueError: naming the archive and the member with an absolute path, a ``..``
            component, or that is a link, device or other special file. Nothing is extracted
            in that case.
    """
    archive, folder = Path(archive), Path(folder)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                name = PurePosixPath(member.name)
                if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts:
                    raise ValueError(
                        f"archive {str(archive)!r} has member {member.name!r} with an absolute "
                        "path or '..': refusing to extract it"
                    )
                if not (member.isfile() or member.isdir()):
                    raise ValueError(
                        f"archive {str(archive)!r} has member {member.name!r} that is a link or "
                        "special file: refusing to extract it"
                    )
            folder.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: a second guard
                tar.extractall(folder, members=members, filter="data")
            else:  # pragma: no cover - older Pythons; the checks above already ran
                tar.extractall(folder, members=members)
    except tarfile.TarError as err:
        raise ValueError(f"{str(archive)!r} is not a readable tar archive: {err}") from err


def download_dataset(name: str, root: str | Path) -> list[Path]:
    """Fetch (and extract) every resource of dataset ``name`` into ``root``.

    Returns:
        The downloaded files.

    Raises:
        ValueError: ``name`` has no download, or a checksum does not match.
        ConnectionError: the network is unreachable.
    """
    if name not in RESOURCES:
        raise ValueError(
            f"no download is available for {name!r}; downloadable: {sorted(RESOURCES)}"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fetched = []
    for resource in RESOURCES[name]:
        path = download_file(resource, root)
        if resource.extract:
            safe_extract(path, root)
        fetched.append(path)
    return fetched


