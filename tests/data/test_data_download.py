"""Downloads against a local HTTP server and file:// URLs (no network needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from softlabels.data import RESOURCES, Resource, load_dataset
from softlabels.data.download import download_file, safe_extract

RNG = np.random.default_rng(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of an HTTP server on 127.0.0.1 running in a thread."""
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _serve_mnist_test(served: Path, writers) -> list[Path]:
    images = RNG.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    return list(writers.mnist(served, "test", images, np.array([7, 8, 9]), gz=True))


def test_download_then_load(server, tmp_path: Path, writers, monkeypatch):
    base, served = server
    files = _serve_mnist_test(served, writers)
    table = tuple(Resource(p.name, (base + p.name,), md5=_md5(p)) for p in files)
    monkeypatch.setitem(RESOURCES, "mnist", table)
    root = tmp_path / "data"
    data = load_dataset("mnist", root, split="test", download=True, cache_dir=False)
    assert data.labels.tolist() == [7, 8, 9]
    for path in files:
        assert (root / path.name).read_bytes() == path.read_bytes()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_checksum_mismatch_is_refused_and_nothing_stays(server, tmp_path: Path, writers,
                                                        monkeypatch):  # fmt: skip
    base, served = server
    files = _serve_mnist_test(served, writers)
    table = tuple(Resource(p.name, (base + p.name,), md5="0" * 32) for p in files)
    monkeypatch.setitem(RESOURCES, "mnist", table)
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=r"checksum mismatch .* expected 0000") as info:
        load_dataset("mnist", root, split="test", download=True)
    assert files[0].name in str(info.value)
    assert list(root.iterdir()) == []


def test_sha256_is_checked_too(server, tmp_path: Path):
    base, served = server
    (served / "blob.bin").write_bytes(b"payload")
    resource = Resource("blob.bin", (base + "blob.bin",), md5=_md5(served / "blob.bin"),
                        sha256="f" * 64)  # fmt: skip
    with pytest.raises(ValueError, match="sha256"):
        download_file(resource, tmp_path / "out")
    good = Resource("blob.bin", (base + "blob.bin",),
                    sha256=hashlib.sha256(b"payload").hexdigest())  # fmt: skip
    assert download_file(good, tmp_path / "out").read_bytes() == b"payload"


def test_mirror_fallback_and_bad_existing_file_replaced(server, tmp_path: Path):
    base, served = server
    (served / "blob.bin").write_bytes(b"right content")
    out = tmp_path / "out"
    out.mkdir()
    (out / "blob.bin").write_bytes(b"stale content")
    resource = Resource(
        "blob.bin", (base + "missing/blob.bin", base + "blob.bin"), md5=_md5(served / "blob.bin")
    )
    assert download_file(resource, out).read_bytes() == b"right content"


def test_unreachable_everywhere_is_a_connection_error(server, tmp_path: Path):
    base, _ = server
    resource = Resource("x.bin", (base + "nope/x.bin",), md5="0" * 32)
    with pytest.raises(ConnectionError, match=r"could not download x\.bin"):
        download_file(resource, tmp_path)
    assert not (tmp_path / "x.bin").exists()


def test_present_data_needs_no_download(tmp_path: Path, writers, monkeypatch):
    writers.mnist(tmp_path, "test", np.zeros((1, 28, 28), np.uint8), np.array([4]))
    monkeypatch.setitem(RESOURCES, "mnist", (Resource("x", ("http://127.0.0.1:9/x",), "0"),))
    data = load_dataset("mnist", tmp_path, split="test", download=True, cache_dir=False)
    assert data.labels.tolist() == [4]


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def test_cifar10_archive_from_file_url(tmp_path: Path, writers, monkeypatch):
    staging = tmp_path / "staging" / "cifar-10-batches-py"
    images = RNG.integers(0, 256, size=(2, 3072), dtype=np.uint8)
    writers.cifar_batch(staging / "test_batch", images, [6, 1])
    archive = _tar_gz(tmp_path / "cifar-10-python.tar.gz", {
        f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in staging.iterdir()
    })  # fmt: skip
    table = (Resource(archive.name, (archive.as_uri(),), md5=_md5(archive), extract=True),)
    monkeypatch.setitem(RESOURCES, "cifar10", table)
    root = tmp_path / "root"
    data = load_dataset("cifar10", root, split="test", download=True, cache_dir=False)
    assert data.labels.tolist() == [6, 1]
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()


@pytest.mark.parametrize("name", ["../evil.txt", "/var/evil-absolute.txt", "a/../../evil.txt"])
def test_archive_escaping_the_folder_is_refused(tmp_path: Path, name: str):
    archive = _tar_gz(tmp_path / "bad.tar.gz", {"fine.txt": b"ok", name: b"evil"})
    out = tmp_path / "out" / "inner"
    with pytest.raises(ValueError, match=r"absolute path or '\.\.'"):
        safe_extract(archive, out)
    assert not out.exists()
    assert not (tmp_path / "out" / "evil.txt").exists()


def test_archive_with_a_link_is_refused(tmp_path: Path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("innocent")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="link or special file"):
        safe_extract(archive, tmp_path / "out")
