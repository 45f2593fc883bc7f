"""Download a data set from its original public sources, check every file's sha256, and convert it to
bertorch's formats (byte-for-byte the files of the project's data build, checked by sha256 too).

    python -m bertorch.data.fetch msra [ontonote4 ...] [--data_dir D]    # default $BERTORCH_DATA_DIR,
                                                                          # else ~/.cache/bertorch/data
    python -m bertorch.data.fetch --list                                  # the sets, what each needs
    python -m bertorch.data.fetch unsup --download_dir raw/               # keep (and reuse) the downloads

The converted set lands in D (ner/msra/train.json, ...), where the scripts' relative data paths find it.
Offline: run it where the network is and copy D over, or put the upstream files under --download_dir
yourself (the layout and sha256 of each are in bertorch/data/sources.py; `--mirror URL` reads a mirror
with that layout). Every problem ends in one `error: ...` line.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Sequence

from bertorch.data import sources as S
from bertorch.data.build import Build
from bertorch.data.readers import FETCHED_DATA_DIR, data_roots
from bertorch.errors import UsageError

CHUNK = 1 << 20


class FetchError(UsageError):
    """A download or a check that failed; the message says which file and what to do."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def default_data_dir() -> str:
    return os.environ.get("BERTORCH_DATA_DIR") or FETCHED_DATA_DIR


class Fetcher:
    """Upstream files on demand: downloaded once into `download_dir` (or found there, checked), archive
    members extracted beside them."""

    def __init__(self, download_dir: str, mirror: str | None = None, offline_hint: str = ""):
        self.download_dir, self.mirror, self.offline_hint = download_dir, mirror, offline_hint

    def url(self, name: str) -> str:
        if self.mirror:
            return self.mirror.rstrip("/") + "/" + name
        origin, path = name.split("/", 1)
        return S.ORIGINS[origin] + path

    def get(self, name: str) -> str:
        """Local path of upstream file `name` (an archive member when it starts with an archive's name)."""
        origin, member = name.split("/", 1)
        if origin in S.ARCHIVES:
            archive, prefix = S.ARCHIVES[origin]
            return self.extract(self.download(archive), prefix + member, name)
        return self.download(name)

    def download(self, name: str) -> str:
        sha, size = S.UPSTREAM[name]
        dest = os.path.join(self.download_dir, name)
        if os.path.exists(dest):  # downloaded before, or put there by hand (offline)
            self.check(dest, sha, f"{dest}: sha256 mismatch", f"delete it, or replace it with {self.url(name)}")
            return dest
        url = self.url(name)
        print(f"downloading {url} ({size / 1e6:.1f} MB)", file=sys.stderr, flush=True)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        part = dest + ".part"
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "bertorch-fetch"})
            with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, CHUNK)
        except (urllib.error.URLError, OSError) as e:  # HTTP errors; no network, refused, timed out, cut off
            if os.path.exists(part):
                os.remove(part)
            if isinstance(e, urllib.error.HTTPError):
                raise FetchError(f"{url}: HTTP {e.code} {e.reason}: the file is not there (moved upstream? try "
                                 f"--mirror, or put the file at {dest})") from None
            raise FetchError(f"cannot download {url} ({getattr(e, 'reason', None) or e}); offline? "
                             f"{self.offline_hint}") from None
        self.check(part, sha, f"{url}: sha256 mismatch", "the upstream file changed or the download was corrupted; "
                                                         "nothing was converted", remove=True)
        os.replace(part, dest)
        return dest

    @staticmethod
    def check(path: str, sha: str, what: str, advice: str, remove: bool = False) -> None:
        got = sha256_of(path)
        if got != sha:
            if remove:
                os.remove(path)
            raise FetchError(f"{what} (expected {sha}, got {got}): {advice}")

    def extract(self, archive: str, member: str, name: str) -> str:
        dest = os.path.join(self.download_dir, "extracted", name)
        if not os.path.exists(dest):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if archive.endswith((".whl", ".zip")):
                with zipfile.ZipFile(archive) as z:
                    data = z.read(member)
            else:
                with tarfile.open(archive) as t:
                    data = t.extractfile(member).read()
            with open(dest + ".part", "wb") as f:
                f.write(data)
            os.replace(dest + ".part", dest)
        return dest


def available(name: str, data_dir: str) -> str | None:
    """The data root that already holds every file of `name` (at its documented size: data/'s unsup sample
    is not the set), if one does."""
    for root in [data_dir] + data_roots():
        if all(os.path.isfile(os.path.join(root, path)) and os.path.getsize(os.path.join(root, path)) == size
               for path, (_, size) in S.outputs_of(name).items()):
            return root
    return None


def fetch(names: Sequence[str], data_dir: str, download_dir: str | None = None, mirror: str | None = None,
          force: bool = False) -> list[str]:
    """Fetch and convert `names` into data_dir; returns the files written. Sets already found in a data root
    are skipped unless `force`."""
    todo = []
    for name in names:
        root = None if force else available(name, data_dir)
        if root:
            print(f"{name}: already in {root}; nothing to do (--force fetches it again)", file=sys.stderr)
        else:
            todo.append(name)
    if not todo:
        return []
    files = sorted(path for name in todo for path in S.outputs_of(name))
    hint = (f"run this where the network is and copy {', '.join(sorted({p.rsplit('/', 1)[0] for p in files}))} "
            f"into --data_dir or $BERTORCH_DATA_DIR, or put the upstream files under --download_dir")
    with tempfile.TemporaryDirectory(prefix="bertorch-fetch-") as tmp:
        fetcher = Fetcher(download_dir or os.path.join(tmp, "downloads"), mirror, hint)
        build = Build(fetcher.get)
        converted = {}
        for name in todo:
            method = S.DATASETS[name][0]
            converted.update((p, lines) for p, lines in getattr(build, method)().items() if p in files)
        staged = os.path.join(tmp, "out")
        for path in files:  # every file is checked before any is moved into data_dir
            out = os.path.join(staged, path)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(line + "\n" for line in converted[path])
            Fetcher.check(out, S.OUTPUTS[path][0], f"converted {path} is not the documented build's",
                          "please report it (nothing was written)")
        for path in files:
            os.makedirs(os.path.dirname(os.path.join(data_dir, path)), exist_ok=True)
            shutil.move(os.path.join(staged, path), os.path.join(data_dir, path))
    for name in todo:
        print(f"{name}: wrote {', '.join(S.outputs_of(name))} under {data_dir} (licence: {S.DATASETS[name][3]})",
              file=sys.stderr)
    return [os.path.join(data_dir, p) for p in files]


def list_sets() -> str:
    rows = []
    for name, (_, prefix, needs, licence) in S.DATASETS.items():
        size = sum(b for _, b in S.outputs_of(name).values()) / 1e6
        shipped = "" if name in S.BIG else " (data/ ships it)"
        rows.append(f"{name:14s} {prefix:20s} {size:5.1f} MB{shipped}\n    needs: {needs}\n    licence: {licence}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"data sets: {', '.join(S.DATASETS)}, or all")
    p.add_argument("--data_dir", default=None, help="where the converted sets go (default: $BERTORCH_DATA_DIR, "
                                                    f"else {FETCHED_DATA_DIR})")
    p.add_argument("--download_dir", default=None,
                   help="keep the upstream files here, and use the ones already there (default: a temporary "
                        "directory, removed afterwards)")
    p.add_argument("--mirror", default=None, help="base URL of a mirror with the layout of sources.py's names")
    p.add_argument("--force", action="store_true", help="fetch a set even if a data root already has it")
    p.add_argument("--list", action="store_true", help="list the sets, what each downloads, and their licences")
    return p


def main(argv: Sequence[str] | None = None) -> list[str]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print(list_sets())
        return []
    names = list(S.DATASETS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in S.DATASETS]
    if unknown or not names:
        parser.error((f"unknown data set {unknown[0]!r}" if unknown else "name a data set") +
                     f"; choose from {', '.join(S.DATASETS)} (or all)")
    try:
        return fetch(names, args.data_dir or default_data_dir(), args.download_dir, args.mirror, args.force)
    except FetchError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
