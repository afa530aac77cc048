"""The three datasets as `Task`s, read from a data root and verified by SHA-256.

Data root: the `root` argument, else $SHARPLIB_DATA, else ./data, laid out as
abalone/abalone.data, cora/ind.cora.*, fashion-mnist/*-ubyte.gz. The root is only read,
except that missing files are downloaded into it when asked (download=True or
SHARPLIB_DOWNLOAD=1). A file that is on disk but wrong is reported, never replaced.
FashionMNIST is decompressed into a cache folder (`cache_dir`, else $SHARPLIB_CACHE,
else ./data/cache), where torchvision reads it.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pooch
import torch
from torch import Tensor

from sharplib.core.checksums import IDX, RAW
from sharplib.core.config import check_number
from sharplib.core.task import Task

# Canonical download locations, per dataset folder of the root.
SOURCES = {
    "abalone": "https://archive.ics.uci.edu/ml/machine-learning-databases/abalone/",
    "cora": "https://github.com/kimiyoung/planetoid/raw/master/data/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
ABALONE = "abalone/abalone.data"
ABALONE_SEX = ("M", "F", "I")  # one-hot column order
CORA = tuple(f"cora/ind.cora.{ext}" for ext in ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index"))
FASHION_MNIST = {
    split: (f"fashion-mnist/{prefix}-images-idx3-ubyte.gz", f"fashion-mnist/{prefix}-labels-idx1-ubyte.gz")
    for split, prefix in (("train", "train"), ("test", "t10k"))
}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is abandoned


class DatasetNotFoundError(FileNotFoundError):
    """A dataset file is not under the data root (and downloading was not asked for)."""


class ChecksumError(ValueError):
    """A file (on disk or just downloaded) does not have the expected SHA-256."""


class DownloadError(OSError):
    """A download failed (no connection, HTTP error, connection dropped mid-file)."""


# ---------------------------------------------------------------------------- locations

def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root`, else $SHARPLIB_DATA, else ./data.

    Args:
        root: the folder asked for, or None.

    Returns:
        The root as an absolute path (`~` expanded).
    """
    chosen = root if root is not None else os.environ.get("SHARPLIB_DATA") or "data"
    return Path(chosen).expanduser().absolute()


def resolve_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Writable folder for derived files: `cache_dir`, else $SHARPLIB_CACHE, else ./data/cache.

    Args:
        cache_dir: the folder asked for, or None.

    Returns:
        The folder as an absolute path (`~` expanded).
    """
    chosen = cache_dir if cache_dir is not None else os.environ.get("SHARPLIB_CACHE") or Path("data", "cache")
    return Path(chosen).expanduser().absolute()


def source_url(rel: str, mirror: str | None = None) -> str:
    """Where a dataset file is downloaded from.

    Args:
        rel: the file's path under the data root (e.g. "cora/..."), its first folder naming the dataset.
        mirror: a base URL to use instead of the canonical one (None: $SHARPLIB_MIRROR, if set).

    Returns:
        `<mirror>/<rel>`, else the dataset's canonical URL (SOURCES) followed by the file name.
    """
    mirror = mirror or os.environ.get("SHARPLIB_MIRROR")
    if mirror:
        return f"{mirror.rstrip('/')}/{rel}"
    folder, name = rel.split("/", 1)
    return SOURCES[folder] + name


def _download_requested(download: bool) -> bool:
    return download or os.environ.get("SHARPLIB_DOWNLOAD", "").lower() in ("1", "true", "yes")


def _not_found(rel: str, root: str | os.PathLike | None, mirror: str | None) -> DatasetNotFoundError:
    env = os.environ.get("SHARPLIB_DATA")
    return DatasetNotFoundError(
        f"dataset file {rel} not found at {resolve_root(root) / rel}\n"
        "The data root is the first of these that is set:\n"
        f"  1. the root argument: {'(not given)' if root is None else Path(root).absolute()}\n"
        f"  2. $SHARPLIB_DATA: {env or '(unset)'}\n"
        f"  3. ./data: {Path('data').absolute()}\n"
        f"To get it: pass download=True (or set SHARPLIB_DOWNLOAD=1) to fetch it from {source_url(rel, mirror)},\n"
        "or set SHARPLIB_DATA to a folder holding the offline copies (abalone/, cora/, fashion-mnist/)."
    )


# ---------------------------------------------------------------------------- verification

def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks.

    Args:
        path: the file.

    Returns:
        The digest as hex.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(what: str, expected: str, got: str, consequence: str) -> ChecksumError:
    return ChecksumError(f"{what}: SHA-256 mismatch\n  expected {expected}\n  got      {got}\n{consequence}")


_LEFT_ALONE = "The file was left as it is: replace it with a good copy, or delete it and use download=True."


def _check_sha256(path: Path, rel: str, what: str, consequence: str) -> None:
    got = sha256(path)
    if got != RAW[rel]:
        raise _mismatch(what, RAW[rel], got, consequence)


def _gunzip_verified(gz: Path, rel: str, out: Path, what: str, consequence: str) -> None:
    """Decompress `gz` to `out`, replacing it only if the content has the known SHA-256.

    The content, not the .gz bytes, is checked: the offline and the canonical archives
    compress the same IDX bytes differently.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as dst, gzip.open(gz, "rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # not gzip, bad CRC, truncated, bad deflate data
            raise _mismatch(f"{what} (not a valid gzip file: {err})", RAW[rel], sha256(gz), consequence) from err
        if digest.hexdigest() != IDX[rel]:
            raise _mismatch(f"{what} (decompressed content)", IDX[rel], digest.hexdigest(), consequence)
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, dest: Path, verify: Callable[[Path], None]) -> None:
    """Download `url` to `dest`: to a temporary name first, renamed only once `verify` passes,
    so an interrupted or corrupted download never leaves a file at `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            pooch.HTTPDownloader(timeout=DOWNLOAD_TIMEOUT)(url, str(tmp), None)
        except OSError as err:  # requests' errors are OSErrors: no connection, HTTP status, cut-off body
            raise DownloadError(f"could not download {url} to {dest}: {err}") from err
        verify(tmp)
        tmp.chmod(0o644)  # mkstemp makes it private
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    rel: str,
    root: str | os.PathLike | None = None,
    download: bool = False,
    mirror: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The verified file `rel`, downloaded first if it is missing and downloading is allowed.

    Args:
        rel: the file's path under the data root (a key of `checksums.RAW`).
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files (also with SHARPLIB_DOWNLOAD=1).
        mirror: a base URL to download from instead of the canonical one ($SHARPLIB_MIRROR).
        cache_dir: where FashionMNIST is decompressed (None: $SHARPLIB_CACHE, else ./data/cache).

    Returns:
        The file's path; for a FashionMNIST .gz, its decompressed IDX file in `<cache>/FashionMNIST/raw/`
        (where torchvision looks), reused when a verified copy is already there.

    Raises:
        DatasetNotFoundError, ChecksumError, DownloadError.
    """
    if rel not in RAW:
        raise ValueError(f"unknown dataset file {rel!r}; known: {sorted(RAW)}")
    path = resolve_root(root) / rel
    url = source_url(rel, mirror)
    if rel in IDX:
        out = resolve_cache(cache_dir) / "FashionMNIST" / "raw" / path.stem
        if out.exists() and sha256(out) == IDX[rel]:
            return out
        if path.exists():
            _gunzip_verified(path, rel, out, str(path), _LEFT_ALONE)
        elif _download_requested(download):
            _download(url, path, lambda tmp: _gunzip_verified(tmp, rel, out, url, f"Nothing was saved at {path}."))
        else:
            raise _not_found(rel, root, mirror)
        return out
    if path.exists():
        _check_sha256(path, rel, str(path), _LEFT_ALONE)
    elif _download_requested(download):
        _download(url, path, lambda tmp: _check_sha256(tmp, rel, url, f"Nothing was saved at {path}."))
    else:
        raise _not_found(rel, root, mirror)
    return path


# ---------------------------------------------------------------------------- Abalone

def read_abalone(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Raw Abalone inputs and targets.

    Args:
        path: the abalone.data file (no header row).

    Returns:
        (x [n, 10]: Sex one-hot M, F, I and 7 measurements; Rings [n]), float32.
    """
    df = pd.read_csv(path, header=None)  # the file has no header row: every line is a sample
    if df.shape[1] != 9:
        raise ValueError(f"{path}: expected 9 columns, found {df.shape[1]}")
    sex = df[0].astype(str)
    unknown = set(sex) - set(ABALONE_SEX)
    if unknown:
        raise ValueError(f"{path}: unknown Sex values {sorted(unknown)}")
    onehot = np.stack([(sex == s).to_numpy() for s in ABALONE_SEX], axis=1)
    x = np.concatenate([onehot, df.iloc[:, 1:8].to_numpy()], axis=1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(df[8].to_numpy(np.float32))


def abalone_split(n: int, seed: int = 42) -> tuple[Tensor, Tensor]:
    """Row indices of the seeded 80/20 split: n_test = int(0.2 n) (835 of 4177), the rest train.

    Args:
        n: number of rows.
        seed: seed of the permutation.

    Returns:
        (train indices, test indices).
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(0.2 * n)
    return perm[: n - n_test], perm[n - n_test :]


def _standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Scale both by the training split's per-column mean and (population) std."""
    mean, std = train.mean(0), train.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays finite
    return (train - mean) / std, (test - mean) / std


def load_abalone(
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    seed: int = 42,
    mirror: str | None = None,
) -> Task:
    """Abalone regression: 3342 train / 835 test rows, 10 standardized inputs, standardized Rings.

    Inputs and target are standardized by the training split's mean and population std.

    Args:
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files (also with SHARPLIB_DOWNLOAD=1).
        mirror: a base URL to download from instead of the canonical one ($SHARPLIB_MIRROR).
        seed: seed of the train/test split.

    Returns:
        The Task "abalone" (loss "mse").
    """
    check_number("load_abalone", "seed", seed, minimum=0, integer=True)
    x, y = read_abalone(fetch(ABALONE, root, download, mirror))
    train, test = abalone_split(len(x), seed)
    x_train, x_test = _standardize(x[train], x[test])
    y_train, y_test = _standardize(y[train], y[test])
    return Task("abalone", x_train, y_train, x_test, y_test, loss="mse").to(device)


# ---------------------------------------------------------------------------- FashionMNIST

def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    mirror: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Task:
    """FashionMNIST: 60000 / 10000 images [1, 28, 28] scaled to [0, 1] then normalized; int64 labels.

    Args:
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files (also with SHARPLIB_DOWNLOAD=1).
        mirror: a base URL to download from instead of the canonical one ($SHARPLIB_MIRROR).
        cache_dir: where the images are decompressed (None: $SHARPLIB_CACHE, else ./data/cache).

    Returns:
        The Task "fashion_mnist" (loss "cross_entropy").
    """
    from torchvision.datasets import FashionMNIST  # heavy import, only needed here

    for rel in (*FASHION_MNIST["train"], *FASHION_MNIST["test"]):
        fetch(rel, root, download, mirror, cache_dir)
    splits = {train: FashionMNIST(str(resolve_cache(cache_dir)), train=train, download=False) for train in (True, False)}

    def images(ds: Any) -> Tensor:
        return ((ds.data.float() / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD).unsqueeze(1)

    return Task(
        "fashion_mnist",
        images(splits[True]),
        splits[True].targets.long(),
        images(splits[False]),
        splits[False].targets.long(),
        loss="cross_entropy",
    ).to(device)


# ---------------------------------------------------------------------------- Cora

def _read_cora(root: str | os.PathLike | None, download: bool, mirror: str | None) -> Any:
    """Cora as a torch_geometric `Data` with the public-split masks and the stored binary features.

    `read_planetoid_data` is exactly what `Planetoid(root, "Cora", split="public").process()`
    runs; calling it on the verified folder reads the read-only root in place, with no
    processed/ files to write or to go stale (tests check the result equals Planetoid's).
    """
    from torch_geometric.io import read_planetoid_data

    folder = {fetch(rel, root, download, mirror).parent for rel in CORA}.pop()
    return read_planetoid_data(str(folder), "Cora")


def _nodes(mask: Tensor) -> Tensor:
    return mask.nonzero().view(-1)


def load_cora(
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    mirror: str | None = None,
    normalize_features: bool = False,
) -> Task:
    """Cora node classification, public split: samples are node ids (140 train, 1000 test).

    Node features are the raw binary bag-of-words vectors, as the reference notebook trained on them (it built
    `NormalizeFeatures()` but read `dataset.data.x`, which a transform never touches).

    Args:
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files (also with SHARPLIB_DOWNLOAD=1).
        mirror: a base URL to download from instead of the canonical one ($SHARPLIB_MIRROR).
        normalize_features: divide each feature row by its sum (a sensitivity check; the protocol's GATs
            then stay at chance). The task's name says which.

    Returns:
        The Task "cora" or "cora-normalized" (loss "cross_entropy", with the whole graph).
    """
    if not isinstance(normalize_features, bool):  # 1 is refused, as config switches refuse it
        raise ValueError(f"load_cora: normalize_features must be True or False, got {normalize_features!r}")
    data = _read_cora(root, download, mirror)
    if normalize_features:
        from torch_geometric.transforms import NormalizeFeatures

        data = NormalizeFeatures()(data)
    train, test = _nodes(data.train_mask), _nodes(data.test_mask)
    return Task(
        "cora-normalized" if normalize_features else "cora",
        train,
        data.y[train],
        test,
        data.y[test],
        loss="cross_entropy",
        node_features=data.x.float(),
        edge_index=data.edge_index.long(),
    ).to(device)


def cora_val_nodes(
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    mirror: str | None = None,
) -> tuple[Tensor, Tensor]:
    """The 500 validation nodes of Cora's public split (not part of `Task`).

    Args:
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files (also with SHARPLIB_DOWNLOAD=1).
        mirror: a base URL to download from instead of the canonical one ($SHARPLIB_MIRROR).

    Returns:
        (node ids, labels).
    """
    data = _read_cora(root, download, mirror)
    val = _nodes(data.val_mask)
    return val.to(device), data.y[val].to(device)


# ---------------------------------------------------------------------------- by name

LOADERS: dict[str, Callable[..., Task]] = {
    "abalone": load_abalone,
    "fashion_mnist": load_fashion_mnist,
    "cora": load_cora,
}
ALIASES = {"fcnn": "abalone", "lenet5": "fashion_mnist", "gat": "cora"}


def load_task(
    name: str,
    root: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = False,
    **options: Any,
) -> Task:
    """The task called `name`, loaded by its loader.

    Args:
        name: a dataset ("abalone", "fashion_mnist", "cora") or the architecture trained on it ("fcnn", "lenet5", "gat").
        root: the data root (None: $SHARPLIB_DATA, else ./data).
        device: where the task's tensors go.
        download: fetch missing files.
        **options: passed to the loader (e.g. normalize_features for Cora).

    Returns:
        The Task.
    """
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in LOADERS:
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join([*LOADERS, *ALIASES])}")
    return LOADERS[key](root=root, device=device, download=download, **options)
