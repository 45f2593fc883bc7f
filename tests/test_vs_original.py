"""bench/vs_original.py: it skips in one line without the original bertorch, feeds both programs the same valid
prefix, reads both programs' log lines, and builds command lines that both programs' parsers accept."""
import json
import os
import subprocess
import sys

import pytest

from bench import vs_original as vo
from conftest import ROOT, SHARED_DATA

ORIGINAL = os.path.join(vo.PEERS, "bertorch-original")

# Runs each script until its flags are parsed, then stops: the namespaces go to argv[2] as JSON lines.
PARSE_ONLY = """
import argparse, json, os, runpy, sys
class Parsed(Exception):
    pass
real = argparse.ArgumentParser.parse_args
def parse_and_stop(self, args=None, namespace=None):
    raise Parsed(vars(real(self, args, namespace)))
argparse.ArgumentParser.parse_args = parse_and_stop
commands, out = json.loads(sys.argv[1]), open(sys.argv[2], "w")
for argv in commands:
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(argv[0]))
    try:
        runpy.run_path(argv[0], run_name="__main__")
        out.write("null\\n")  # ran to the end without parsing: not what the test expects
    except Parsed as parsed:
        out.write(json.dumps(parsed.args[0], default=str) + "\\n")
"""


def test_without_the_original_it_says_so_in_one_line_and_exits_0(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.vs_original", "--peers", str(tmp_path / "no-peers"),
                           "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"vs_original: skipped, the original bertorch is not in "
                                        f"{tmp_path / 'no-peers' / 'bertorch-original'}"]
    assert not (tmp_path / "out").exists()


def test_the_prefix_keeps_the_first_lines_both_programs_read(tmp_path):
    source, dest = tmp_path / "train.tsv", tmp_path / "prefix.tsv"
    source.write_text("好\tpositive\n\n坏\n\tnegative\n差\tnegative\textra\n一般\tnegative\n还行\tpositive\n",
                      encoding="utf-8")
    assert vo.prefix_file(str(source), str(dest), 2, "tsv2") == 2
    assert dest.read_text(encoding="utf-8") == "好\tpositive\n一般\tnegative\n"
    assert vo.prefix_file(str(source), str(dest), 10, "tsv2") == 3  # fewer valid lines than asked: all of them
    ner = tmp_path / "train.json"
    long = json.dumps({"text": ["长"] * 127, "label": ["O"] * 127})  # ours would train it as 2 windows
    ner.write_text('{"text": ["张", "三"], "label": ["B-NAME"]}\n' + long + '\n'
                   '{"text": ["李", "四"], "label": ["B-NAME", "I-NAME"]}\n', encoding="utf-8")
    assert vo.prefix_file(str(ner), str(dest), 5, "ner") == 1 and "李" in dest.read_text(encoding="utf-8")
    lines = tmp_path / "sentences.txt"
    lines.write_text("一句话\n\n  \n带\t制表符\n又一句\n", encoding="utf-8")
    assert vo.prefix_file(str(lines), str(dest), 5, "lines") == 2
    assert dest.read_text(encoding="utf-8") == "一句话\n又一句\n"


def test_steps_per_second_come_from_the_log_line_timestamps():
    original = ("2022-11-29 10:00:00.000 | INFO     | __main__:train:301 - global step: 10, epoch: 1, batch: 10, "
                "loss: 0.69315, accuracy: 0.50000, speed: 0.50 step/s\n"
                "2022-11-29 10:00:20.000 | INFO     | __main__:train:301 - global step: 20, epoch: 1, batch: 20, "
                "loss: 0.68000, accuracy: 0.60000, speed: 0.50 step/s\n")
    ours = (" 10%|#         | 10/100 [00:09<01:21]\r2022-11-29 10:00:30.500 | INFO     | "
            "bertorch.trainer:log_train:279 - global step: 30, epoch: 1, batch: 30, loss: 0.6, speed: 0.95 step/s\n"
            "2022-11-29 10:00:31.000 | INFO     | bertorch.trainer:evaluate:300 - eval accuracy: 0.7\n")
    speed = vo.log_speed(original + ours)
    assert speed["step/s"] == pytest.approx(20 / 30.5)
    assert speed["own_speed"] == pytest.approx((0.50 + 0.95) / 2)  # the lines' own figures after the first
    with pytest.raises(RuntimeError, match="1 training log line"):
        vo.log_speed(original.splitlines()[0])


@pytest.mark.skipif(not (os.path.isdir(ORIGINAL) and os.path.isdir(SHARED_DATA)),
                    reason=f"needs the original bertorch in {ORIGINAL} and the data in {SHARED_DATA}")
def test_every_case_builds_command_lines_both_programs_parse(tmp_path):
    steps, built = 3, []  # (case, program, data file, argv)
    for name, case in vo.CASES.items():
        data = str(tmp_path / f"{name}{os.path.splitext(case.source)[1]}")
        assert vo.prefix_file(os.path.join(SHARED_DATA, case.source), data, steps * vo.BATCH_SIZE,
                              case.kind) == steps * vo.BATCH_SIZE
        for program in vo.PROGRAMS:
            built.append((name, program, data, vo.command(program, case, data, vo.MODEL_DIR, str(tmp_path / "out"),
                                                           steps, ORIGINAL)))
    parsed = {}
    for side in ("original", "ours"):
        mine = [b for b in built if (b[1] == "original") == (side == "original")]
        out = tmp_path / f"{side}.jsonl"
        proc = subprocess.run([sys.executable, "-c", PARSE_ONLY, json.dumps([b[3] for b in mine]), str(out)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert proc.returncode == 0, proc.stderr[-3000:]
        for b, line in zip(mine, out.read_text().splitlines(), strict=True):
            parsed[b[:2]] = (json.loads(line), b[2])
    assert len(parsed) == len(vo.CASES) * len(vo.PROGRAMS)
    for (name, program), (flags, data) in parsed.items():
        assert flags is not None, (name, program)
        assert (flags["train_data_file"], flags["batch_size"], flags["max_seq_length"], flags["epochs"],
                flags["learning_rate"]) == (data, 32, 128, 1, 1e-4), (name, program)
        assert flags.get("use_crf", False) == (name == "ner_crf")
        if program == "original":
            assert flags["local_rank"] == -1 and flags["save_steps"] == steps  # writes its model at the last step
        else:
            assert flags["save_steps"] == 0 and flags["group_by_length"] == (program != "ours_padded")
            assert flags["bf16"] == program.startswith("ours_bf16")
