"""convstudy.untrusted: the one reader for user files refuses what would block, crash or blow up, in one line."""

from __future__ import annotations

import os
import threading
import time

import pytest

from convstudy.errors import UserError
from convstudy.untrusted import check_structure, load_untrusted, parse_untrusted, read_untrusted_text


def one_line_error(call) -> str:
    with pytest.raises(UserError) as exc:
        call()
    message = str(exc.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "study.toml"
    os.mkfifo(fifo)
    result: list[object] = []

    def read() -> None:
        try:
            result.append(read_untrusted_text(fifo, what="study file"))
        except UserError as exc:
            result.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # release the blocked open() so the test fails instead of hanging
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail("reading a FIFO blocked")
    (error,) = result
    assert isinstance(error, UserError) and "not a regular file" in str(error)


@pytest.mark.parametrize("target", ["dir", "/dev/null", "/dev/zero"])
def test_directories_and_devices_are_refused(target, tmp_path):
    path = tmp_path if target == "dir" else target
    message = one_line_error(lambda: read_untrusted_text(path, what="study file"))
    assert "directory" in message or "not a regular file" in message


def test_missing_file_names_what_was_expected(tmp_path):
    message = one_line_error(lambda: read_untrusted_text(tmp_path / "x.toml", what="study file", missing_hint=" (x)"))
    assert message.endswith("x.toml: no such study file (x)")


def test_size_utf8_and_nul_are_bounded(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 2000)
    assert "larger than" in one_line_error(lambda: read_untrusted_text(big, max_bytes=1000))
    assert read_untrusted_text(big, max_bytes=2000) == "#" * 2000
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = '\xff'")
    assert "invalid UTF-8" in one_line_error(lambda: read_untrusted_text(bad))
    nul = tmp_path / "nul.toml"
    nul.write_bytes(b"name = 's'\x00")
    assert "NUL" in one_line_error(lambda: read_untrusted_text(nul))


DEEP = 5000
HOSTILE = {
    "toml deep arrays": ("toml", "x = " + "[" * DEEP + "]" * DEEP, "nested"),
    "toml deep tables": ("toml", "x = " + "{a = " * DEEP + "1" + "}" * DEEP, "nested"),
    "toml 5000 digits": ("toml", "x = " + "9" * 5000, "digits"),
    "toml 40 digits": ("toml", "x = " + "9" * 40, "integer"),
    "toml date": ("toml", "x = 1979-05-27", "date"),
    "json deep arrays": ("json", "[" * DEEP + "]" * DEEP, "nested"),
    "json deep objects": ("json", '{"a":' * DEEP + "1" + "}" * DEEP, "nested"),
    "json 5000 digits": ("json", '{"x": ' + "9" * 5000 + "}", "digits"),
    "json 2**60": ("json", '{"x": ' + str(2**60) + "}", "integer"),
    "json NaN": ("json", '{"x": NaN}', "NaN"),
    "json duplicate key": ("json", '{"x": 1, "x": 2}', "duplicate"),
    "yaml deep flow": ("yaml", "x: " + "[" * DEEP + "]" * DEEP, "nested"),
    "yaml 5000 digits": ("yaml", "x: " + "9" * 5000, "digits"),
    "yaml binary": ("yaml", "x: !!binary aGVsbG8=", "binary"),
    "yaml timestamp": ("yaml", "x: !!timestamp 2001-12-14", "date"),
    "yaml plain date": ("yaml", "x: 2001-12-14", "date"),
    "yaml set": ("yaml", "x: !!set {a, b}", "set"),
    "yaml omap": ("yaml", "x: !!omap [a: 1, b: 2]", "pairs"),
    "yaml python tag": ("yaml", "x: !!python/object/apply:os.system [echo hi]", "tag"),
    "yaml bad timestamp": ("yaml", "x: !!timestamp 2001-13-45", "YAML"),
    "yaml int key": ("yaml", "1: a", "key"),
    "yaml bool key": ("yaml", "on: a", "key"),
    "yaml duplicate key": ("yaml", "x: 1\nx: 2", "duplicate"),
    "yaml recursive": ("yaml", "x: &a [*a]", "nested"),
    "yaml two documents": ("yaml", "a: 1\n---\nb: 2", "YAML"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_documents_are_one_line_errors(case):
    fmt, text, word = HOSTILE[case]
    message = one_line_error(lambda: parse_untrusted(text, fmt, "f." + fmt))
    assert message.startswith(f"f.{fmt}: ") and word in message, message


def test_billion_laughs_is_bounded_and_fast():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    start = time.perf_counter()
    message = one_line_error(lambda: parse_untrusted("\n".join(lines), "yaml", "lol.yaml"))
    assert time.perf_counter() - start < 2 and "values" in message


def test_plain_documents_pass_through():
    assert parse_untrusted('a = [1, 2.5, "x", true]\n[b]\nc = {d = 1}', "toml", "s") == {
        "a": [1, 2.5, "x", True], "b": {"c": {"d": 1}}}
    assert parse_untrusted("a: &x [1, 2]\nb: *x\nc: null", "yaml", "s") == {"a": [1, 2], "b": [1, 2], "c": None}
    assert parse_untrusted('{"a": [1, -2, 1e999, null]}', "json", "s") == {"a": [1, -2, float("inf"), None]}


def test_check_structure_limits_are_parameters():
    check_structure({"a": [[1]]}, "s", max_depth=3)
    assert "nested" in one_line_error(lambda: check_structure({"a": [[1]]}, "s", max_depth=2))
    assert "values" in one_line_error(lambda: check_structure(list(range(10)), "s", max_nodes=5))
    assert "a[1]" in one_line_error(lambda: check_structure({"a": [0, 2**54]}, "s"))
    check_structure({"a": [True, -(2**53), 2**53, 1.5, None, "x"]}, "s")
    assert "a: binary" in one_line_error(lambda: check_structure({"a": b"x"}, "s"))


def test_load_untrusted_reads_parses_and_checks(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": [' * 40 + "]}" * 40)
    assert "m.json: " in one_line_error(lambda: load_untrusted(path, "json", what="model file"))
    path.write_text('{"a": 1}')
    assert load_untrusted(path, "json", what="model file") == {"a": 1}
