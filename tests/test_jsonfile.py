"""JSON files a user gives (--task_spec, --matches, a student config) read alike: a BOM is fine, a broken file is
one line naming the flag, the file and the place."""
import pytest

from bertorch.errors import ModelError, UsageError
from bertorch.jsonfile import read_json_file


def test_a_byte_order_mark_is_read_like_plain_utf8(tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b"\xef\xbb\xbf" + '[{"name": "情感"}]'.encode("utf-8"))
    assert read_json_file(str(path), "--task_spec") == [{"name": "情感"}]


def test_broken_json_names_the_flag_file_line_and_column(tmp_path):
    path = tmp_path / "matches.json"
    path.write_text('[\n  {"feature": "hidden",}\n]', encoding="utf-8")
    with pytest.raises(UsageError, match=r"^--matches .*matches\.json: not valid JSON \(.* at line 2, column 24\)$"):
        read_json_file(str(path), "--matches")


def test_missing_and_non_utf8_files_are_one_line_of_the_kind_asked(tmp_path):
    with pytest.raises(ModelError, match=r"^--student_model .*nope\.json: cannot read the file \(No such file"):
        read_json_file(str(tmp_path / "nope.json"), "--student_model", ModelError)
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes('{"名": 1}'.encode("gbk"))
    with pytest.raises(UsageError, match=r"gbk\.json: not UTF-8 text \(byte 2\); save it as UTF-8"):
        read_json_file(str(gbk), "--task_spec")
