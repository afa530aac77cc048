"""Dataset loaders: preprocessing, verification, root resolution, and downloads from a local server."""
from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from sharplib.core import data
from sharplib.core.checksums import IDX, RAW
from sharplib.core.data import ChecksumError, DatasetNotFoundError, DownloadError

ABALONE_FIRST_ROW = [1, 0, 0, 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]  # "M,0.455,...,0.15,15"
FMNIST_LABELS = "fashion-mnist/t10k-labels-idx1-ubyte.gz"  # the smallest FashionMNIST file
ENV = ("SHARPLIB_DATA", "SHARPLIB_CACHE", "SHARPLIB_DOWNLOAD", "SHARPLIB_MIRROR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings of the shell running the tests must not change what they check.
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 10)


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def abalone(data_root: Path) -> data.Task:
    return data.load_abalone(data_root)


@pytest.fixture(scope="session")
def fmnist(data_root: Path, cache: Path) -> data.Task:
    return data.load_fashion_mnist(data_root, cache_dir=cache)


@pytest.fixture(scope="session")
def cora(data_root: Path) -> data.Task:
    return data.load_cora(data_root)


def assert_same_task(a: data.Task, b: data.Task) -> None:
    assert a.name == b.name and a.loss == b.loss
    for field in ("x_train", "y_train", "x_test", "y_test", "node_features", "edge_index"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None and y is None) or torch.equal(x, y), field


# ---------------------------------------------------------------------------- a local server

def _handler(directory: Path, mode: str, log: list[str]) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread for long

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            log.append(self.path)
            path = Path(self.translate_path(self.path))
            if mode == "ok" or not path.is_file():
                return super().do_GET()
            body = bytearray(path.read_bytes())
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "corrupt":
                body[len(body) // 2] ^= 0xFF
                self.wfile.write(body)
            else:  # "drop": a few bytes of the announced length, then the connection closes
                self.wfile.write(body[:100])
                self.wfile.flush()
                self.close_connection = True

    return Handler


@contextmanager
def serve(directory: Path, mode: str = "ok") -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving `directory`; yields its base URL and the paths requested."""
    log: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(directory, mode, log))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def no_files_left(folder: Path) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


# ---------------------------------------------------------------------------- Abalone

def test_abalone_shapes_and_standardization(abalone: data.Task) -> None:
    assert (abalone.name, abalone.loss) == ("abalone", "mse")
    assert abalone.x_train.shape == (3342, 10) and abalone.x_test.shape == (835, 10)
    assert abalone.y_train.shape == (3342,) and abalone.y_test.shape == (835,)
    for t in (abalone.x_train, abalone.y_train, abalone.x_test, abalone.y_test):
        assert t.dtype == torch.float32
    for t in (abalone.x_train, abalone.y_train):
        assert torch.allclose(t.mean(0), torch.zeros(()), atol=1e-5)
        assert torch.allclose(t.std(0, correction=0), torch.ones(()), atol=1e-4)
    # The test split is scaled by the training statistics, so it is not exactly standardized.
    assert not torch.allclose(abalone.x_test.mean(0), torch.zeros(()), atol=1e-5)


def test_abalone_keeps_first_row_and_matches_independent_preprocessing(data_root: Path, abalone: data.Task) -> None:
    x, y = data.read_abalone(data_root / "abalone" / "abalone.data")
    assert x.shape == (4177, 10) and y.shape == (4177,)
    assert torch.allclose(x[0], torch.tensor(ABALONE_FIRST_ROW)) and y[0] == 15  # no header row lost
    assert torch.equal(x[:, :3].sum(1), torch.ones(4177))  # exactly one sex per row
    train, test = data.abalone_split(4177, seed=42)
    assert 0 in torch.cat([train, test])
    # The same preprocessing written independently, in float64 with pandas.
    df = pd.read_csv(data_root / "abalone" / "abalone.data", header=None)
    raw = np.column_stack([(df[0] == s) for s in "MFI"] + [df[c] for c in range(1, 9)]).astype(np.float64)
    rows = raw[train.numpy()]
    mean, std = rows.mean(0), rows.std(0)
    expected_x_train = (rows[:, :10] - mean[:10]) / std[:10]
    expected_y_test = (raw[test.numpy(), 10] - mean[10]) / std[10]
    assert np.allclose(abalone.x_train.numpy(), expected_x_train, atol=1e-5)
    assert np.allclose(abalone.y_test.numpy(), expected_y_test, atol=1e-5)


def test_abalone_split_is_seeded(data_root: Path, abalone: data.Task) -> None:
    train, test = data.abalone_split(4177, seed=42)
    assert len(train) == 3342 and len(test) == 835
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(4177))
    assert_same_task(data.load_abalone(data_root, seed=42), abalone)
    other = data.load_abalone(data_root, seed=43)
    assert not torch.equal(other.y_train, abalone.y_train)


# ---------------------------------------------------------------------------- FashionMNIST

def test_fashion_mnist(fmnist: data.Task) -> None:
    assert (fmnist.name, fmnist.loss) == ("fashion_mnist", "cross_entropy")
    assert fmnist.x_train.shape == (60000, 1, 28, 28) and fmnist.x_test.shape == (10000, 1, 28, 28)
    assert fmnist.x_train.dtype == torch.float32 and fmnist.y_train.dtype == torch.int64
    assert torch.equal(fmnist.y_train.bincount(), torch.full((10,), 6000))
    assert torch.equal(fmnist.y_test.bincount(), torch.full((10,), 1000))
    # Pixels scaled to [0, 1] before the normalization: black and white land at these values.
    assert fmnist.x_train.min().item() == pytest.approx((0 - 0.2860) / 0.3530, abs=1e-6)
    assert fmnist.x_train.max().item() == pytest.approx((1 - 0.2860) / 0.3530, abs=1e-6)
    assert abs(fmnist.x_train.mean().item()) < 0.01 and abs(fmnist.x_train.std().item() - 1) < 0.01


def test_fashion_mnist_cache_is_reused_and_repaired(data_root: Path, tmp_path: Path) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "fashion-mnist").mkdir(parents=True)
    shutil.copy(data_root / FMNIST_LABELS, root / FMNIST_LABELS)
    idx = data.fetch(FMNIST_LABELS, root, cache_dir=cache)
    assert idx == cache / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    assert data.sha256(idx) == IDX[FMNIST_LABELS]
    # A verified decompressed copy is used without the archive...
    (root / FMNIST_LABELS).unlink()
    assert data.fetch(FMNIST_LABELS, root, cache_dir=cache) == idx
    # ...but a damaged one is not: it is rebuilt from the archive (a derived file, not a download).
    idx.write_bytes(b"damaged")
    with pytest.raises(DatasetNotFoundError):
        data.fetch(FMNIST_LABELS, root, cache_dir=cache)
    shutil.copy(data_root / FMNIST_LABELS, root / FMNIST_LABELS)
    data.fetch(FMNIST_LABELS, root, cache_dir=cache)
    assert data.sha256(idx) == IDX[FMNIST_LABELS]


# ---------------------------------------------------------------------------- Cora

def test_cora(cora: data.Task) -> None:
    assert (cora.name, cora.loss, cora.is_graph) == ("cora", "cross_entropy", True)
    assert cora.node_features.shape == (2708, 1433) and cora.node_features.dtype == torch.float32
    assert cora.edge_index.shape[0] == 2 and cora.edge_index.dtype == torch.int64
    assert cora.edge_index.max() < 2708
    assert cora.x_train.dtype == torch.int64 and cora.y_train.dtype == torch.int64
    assert torch.equal(cora.x_train, torch.arange(140))  # the public split's training nodes
    assert len(cora.x_test) == 1000 and len(set(cora.x_test.tolist())) == 1000
    assert not set(cora.x_test.tolist()) & set(cora.x_train.tolist())
    assert torch.equal(cora.y_train.bincount(), torch.full((7,), 20))
    assert cora.y_test.unique().tolist() == list(range(7))
    # The stored binary bag-of-words features, untransformed (the protocol, "GAT on Cora").
    assert set(cora.node_features.unique().tolist()) == {0.0, 1.0} and cora.name == "cora"
    assert (cora.node_features.sum(1) > 1).sum() > 2700


def test_cora_row_normalized_is_an_explicit_option(data_root: Path, cora: data.Task) -> None:
    normalized = data.load_cora(data_root, normalize_features=True)
    sums = normalized.node_features.sum(1)
    assert torch.allclose(sums[sums > 0], torch.ones(()), atol=1e-5) and (sums > 0).sum() > 2700
    assert normalized.name != cora.name  # pools trained on one are never reused for the other
    assert torch.allclose(normalized.node_features * cora.node_features.sum(1, keepdim=True).clamp(min=1), cora.node_features)
    with pytest.raises(ValueError, match="normalize_features"):
        data.load_cora(data_root, normalize_features="yes")


def test_cora_equals_planetoid(data_root: Path, tmp_path: Path, cora: data.Task) -> None:
    from torch_geometric.datasets import Planetoid

    shutil.copytree(data_root / "cora", tmp_path / "Cora" / "raw")
    g = Planetoid(str(tmp_path), "Cora", split="public")[0]
    assert torch.equal(cora.node_features, g.x) and torch.equal(cora.edge_index, g.edge_index)
    assert torch.equal(cora.x_train, g.train_mask.nonzero().view(-1))
    assert torch.equal(cora.x_test, g.test_mask.nonzero().view(-1))
    assert torch.equal(cora.y_test, g.y[g.test_mask])
    val, y_val = data.cora_val_nodes(data_root)
    assert torch.equal(val, g.val_mask.nonzero().view(-1)) and len(val) == 500
    assert torch.equal(y_val, g.y[g.val_mask])


# ---------------------------------------------------------------------------- device, names, roots

def test_device_argument(data_root: Path) -> None:
    assert data.load_abalone(data_root).device.type == "cpu"
    task = data.load_cora(data_root, device="meta")  # a real device move without needing a GPU
    assert {t.device.type for t in (task.x_train, task.y_test, task.node_features, task.edge_index)} == {"meta"}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device(data_root: Path) -> None:
    assert data.load_abalone(data_root, device="cuda").x_train.is_cuda


def test_load_task_dispatch(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data.load_task("fcnn", data_root).name == "abalone"
    for name in ("abalone", "fashion_mnist", "cora"):
        monkeypatch.setitem(data.LOADERS, name, lambda name=name, **kw: (name, kw))
    for alias, name in [("lenet5", "fashion_mnist"), ("Fashion-MNIST", "fashion_mnist"), ("gat", "cora"), ("cora", "cora")]:
        got, kwargs = data.load_task(alias, "r", device="meta", download=True, cache_dir="c")
        assert got == name and kwargs == dict(root="r", device="meta", download=True, cache_dir="c")
    with pytest.raises(ValueError, match="mnist") as err:
        data.load_task("mnist")
    assert all(n in str(err.value) for n in ("abalone", "fashion_mnist", "cora", "fcnn", "lenet5", "gat"))


def test_root_and_cache_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert data.resolve_root() == tmp_path / "data"
    assert data.resolve_cache() == tmp_path / "data" / "cache"
    monkeypatch.setenv("SHARPLIB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("SHARPLIB_CACHE", str(tmp_path / "envcache"))
    assert data.resolve_root() == tmp_path / "env"
    assert data.resolve_cache() == tmp_path / "envcache"
    assert data.resolve_root(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_root("rel") == tmp_path / "rel"
    assert data.resolve_cache(tmp_path / "argcache") == tmp_path / "argcache"


# ---------------------------------------------------------------------------- missing and corrupt files

def test_missing_file_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError) as err:
        data.load_abalone(tmp_path / "empty")
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / "empty" / "abalone" / "abalone.data") in msg
    assert "SHARPLIB_DATA" in msg and str(tmp_path / "data") in msg  # every place of the search order
    assert "download=True" in msg and "archive.ics.uci.edu" in msg
    assert not (tmp_path / "empty").exists()  # nothing written


def _corrupt_copy(src: Path, dest: Path) -> bytes:
    body = bytearray(src.read_bytes())
    body[len(body) // 2] ^= 0xFF
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(body)
    return bytes(body)


def test_corrupt_file_is_reported_and_kept(data_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "abalone" / "abalone.data"
    body = _corrupt_copy(data_root / "abalone" / "abalone.data", bad)
    with serve(data_root) as (url, log):
        with pytest.raises(ChecksumError) as err:
            data.load_abalone(tmp_path, download=True, mirror=url)
    msg = str(err.value)
    assert str(bad) in msg and RAW["abalone/abalone.data"] in msg and data.sha256(bad) in msg
    assert bad.read_bytes() == body and log == []  # neither replaced nor re-downloaded


@pytest.mark.parametrize("damage", ["flipped byte", "other content"])
def test_corrupt_fashion_mnist_archive(data_root: Path, tmp_path: Path, damage: str) -> None:
    bad, cache = tmp_path / FMNIST_LABELS, tmp_path / "cache"
    if damage == "flipped byte":
        body = _corrupt_copy(data_root / FMNIST_LABELS, bad)
        expected, got = RAW[FMNIST_LABELS], data.sha256(bad)
    else:  # a valid archive of wrong content: caught by the hash of the decompressed bytes
        content = bytearray(gzip.decompress((data_root / FMNIST_LABELS).read_bytes()))
        content[-1] = (content[-1] + 1) % 10
        bad.parent.mkdir(parents=True)
        bad.write_bytes(body := gzip.compress(bytes(content)))
        expected, got = IDX[FMNIST_LABELS], hashlib.sha256(content).hexdigest()
    with pytest.raises(ChecksumError) as err:
        data.fetch(FMNIST_LABELS, tmp_path, download=True, mirror="http://127.0.0.1:9", cache_dir=cache)
    assert str(bad) in str(err.value) and expected in str(err.value) and got in str(err.value)
    assert bad.read_bytes() == body and no_files_left(cache)


# ---------------------------------------------------------------------------- downloads

def test_download_all_three(data_root: Path, tmp_path: Path, abalone, fmnist, cora) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    with serve(data_root) as (url, log):
        tasks = [
            data.load_abalone(root, download=True, mirror=url),
            data.load_fashion_mnist(root, download=True, mirror=url, cache_dir=cache),
            data.load_cora(root, download=True, mirror=url),
        ]
    for got, want in zip(tasks, (abalone, fmnist, cora)):
        assert_same_task(got, want)
    assert sorted(log) == sorted(f"/{rel}" for rel in RAW)
    for rel in RAW:
        assert data.sha256(root / rel) == RAW[rel]
    assert not list(root.rglob("*.part")) and not list(cache.rglob("*.part"))


def test_download_settings_from_environment(data_root: Path, tmp_path: Path, abalone, monkeypatch) -> None:
    with serve(data_root) as (url, log):
        monkeypatch.setenv("SHARPLIB_MIRROR", url)
        monkeypatch.setenv("SHARPLIB_DATA", str(tmp_path))
        with pytest.raises(DatasetNotFoundError, match=url):
            data.load_abalone()
        monkeypatch.setenv("SHARPLIB_DOWNLOAD", "1")
        assert_same_task(data.load_abalone(), abalone)
    assert log == ["/abalone/abalone.data"]


def test_canonical_urls() -> None:
    assert data.source_url("abalone/abalone.data") == (
        "https://archive.ics.uci.edu/ml/machine-learning-databases/abalone/abalone.data"
    )
    assert data.source_url("cora/ind.cora.x") == "https://github.com/kimiyoung/planetoid/raw/master/data/ind.cora.x"
    assert data.source_url(FMNIST_LABELS) == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz"
    )
    assert data.source_url("cora/ind.cora.x", "http://h/m/") == "http://h/m/cora/ind.cora.x"


BROKEN = ["abalone/abalone.data", "cora/ind.cora.y", FMNIST_LABELS]


@pytest.mark.parametrize("rel", BROKEN)
def test_corrupted_download_leaves_nothing(data_root: Path, tmp_path: Path, rel: str) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    with serve(data_root, "corrupt") as (url, log):
        with pytest.raises(ChecksumError) as err:
            data.fetch(rel, root, download=True, mirror=url, cache_dir=cache)
    served = bytearray((data_root / rel).read_bytes())
    served[len(served) // 2] ^= 0xFF
    msg = str(err.value)
    assert f"{url}/{rel}" in msg and f"expected {RAW[rel]}" in msg
    assert re.search(r"got +([0-9a-f]{64})", msg).group(1) == hashlib.sha256(served).hexdigest()
    assert log == [f"/{rel}"]
    assert no_files_left(root) and no_files_left(cache)


@pytest.mark.parametrize("rel", BROKEN)
def test_dropped_connection_leaves_nothing(data_root: Path, tmp_path: Path, rel: str) -> None:
    root, cache = tmp_path / "root", tmp_path / "cache"
    with serve(data_root, "drop") as (url, log):
        with pytest.raises(DownloadError, match=rel):
            data.fetch(rel, root, download=True, mirror=url, cache_dir=cache)
    assert log == [f"/{rel}"]
    assert no_files_left(root) and no_files_left(cache)


def test_missing_on_server(tmp_path: Path) -> None:
    with serve(tmp_path / "nothing") as (url, _):
        with pytest.raises(DownloadError, match="404"):
            data.load_abalone(tmp_path / "root", download=True, mirror=url)
    assert no_files_left(tmp_path / "root")
