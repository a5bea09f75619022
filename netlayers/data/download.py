"""Find or download the Fashion-MNIST data set: ``netlayers data fashion-mnist [--data-root DIR]``.

First looks in the places netlayers searches (``--data-root``, ``$NETLAYERS_DATA_ROOT``,
``~/.cache/netlayers/datasets``, ``/usr/share/datasets``) for a ``fashion-mnist`` folder
with the four IDX files and, if found, says where. Otherwise downloads the four files
published by Zalando Research into ``DIR/fashion-mnist/`` (default
``~/.cache/netlayers/datasets/fashion-mnist/``), checking each against the MD5 sum given in
the Fashion-MNIST README, writing to a temporary file and renaming it only once it checks.

Files found locally are not checked against those MD5 sums: Debian's dataset-fashion-mnist
package ships the same images recompressed, so its ``.gz`` files have other checksums.
"""

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from ..errors import DataError
from .sources import USER_CACHE, data_roots

DATASET_DIR = "fashion-mnist"

#: The download locations in the Fashion-MNIST README, then the copy in its GitHub repository.
BASE_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: File name -> MD5 of the published .gz file (Fashion-MNIST README, "Get the Data").
FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

_CHUNK = 1 << 20


class DownloadError(DataError):
    """A file could not be fetched or did not match its published checksum."""


def find_existing(roots):
    """Return the first ``<root>/fashion-mnist`` folder holding all four files (raw or .gz)."""
    for root in roots:
        folder = Path(root) / DATASET_DIR
        if all(_has_file(folder, name) for name in FILES):
            return folder
    return None


def _has_file(folder, gz_name):
    """True if ``folder`` holds ``gz_name`` or its uncompressed form."""
    return (folder / gz_name).is_file() or (folder / gz_name.removesuffix(".gz")).is_file()


def md5_of(path):
    """The hex MD5 digest of the file at ``path``, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path, expected):
    """Raise DownloadError unless the file at ``path`` has the MD5 digest ``expected``."""
    found = md5_of(path)
    if found != expected.lower():
        raise DownloadError(f"{path}: checksum mismatch: MD5 {found}, expected {expected}")


def download_file(url, dest, expected_md5, *, opener=urllib.request.urlopen, timeout=60):
    """Fetch ``url`` into ``dest`` via a temporary file in the same folder.

    The temporary file is renamed to ``dest`` only after its MD5 matches ``expected_md5``;
    on any failure it is removed and DownloadError raised. ``opener`` (``urlopen`` by
    default) is a parameter so tests can run without a network.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, opener(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
        verify_md5(tmp, expected_md5)
        os.replace(tmp, dest)
    except DownloadError:
        tmp.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{url}: download failed: {err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def download_all(folder, *, base_urls=BASE_URLS, opener=urllib.request.urlopen, log=print):
    """Download the files missing from ``folder``, trying each base URL in turn."""
    folder = Path(folder)
    for name, md5 in FILES.items():
        dest = folder / name
        if dest.is_file() and md5_of(dest) == md5:
            log(f"already there: {dest}")
            continue
        errors = []
        for base in base_urls:
            try:
                log(f"downloading {base}{name}")
                download_file(base + name, dest, md5, opener=opener)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            raise DownloadError("; ".join(errors))
    return folder


def fetch_fashion_mnist(data_root=None, log=print):
    """Find the data set, or download it into ``DIR/fashion-mnist`` (``data_root``, else the
    user cache); returns the folder that holds it. Raises DownloadError when it cannot."""
    found = find_existing(data_roots(data_root))
    if found is not None:
        log(f"Fashion-MNIST found in {found}")
        return found
    root = data_roots(data_root)[0] if data_root else USER_CACHE.expanduser()
    folder = root / DATASET_DIR
    log(f"Fashion-MNIST not found; downloading into {folder}")
    download_all(folder, log=log)
    log(f"Fashion-MNIST ready in {folder}")
    return folder
