"""Issue 17, finding 6: the `qrt` command prints one line (`qrt: error: ...`) and exits 1 for a
user error, 2 for a usage error, instead of a 20-50-line traceback; --debug shows the traceback."""
import subprocess
import sys

import pytest

from qrt.cli import entry


def qrt(*args, timeout=300):
    """`python -m qrt ARGS` (what the console script runs) -> (exit status, stderr lines)."""
    r = subprocess.run([sys.executable, "-m", "qrt", *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()]


@pytest.fixture
def bad_config_dir(tmp_path):
    (tmp_path / "config.json").write_text('{"quantization_config": {"config_groups": 5}')  # truncated JSON
    return tmp_path


def test_user_errors_are_one_line_and_exit_1(tmp_path, bad_config_dir):
    (tmp_path / "afile").write_text("x")
    rc, err = qrt("quantize", "--out", tmp_path / "afile")
    assert rc == 1 and len(err) == 1 and err[0].startswith("qrt: error: output path ") and "is a file" in err[0]
    for cmd in ("info", "generate"):
        rc, err = qrt(cmd, bad_config_dir, *(["hi"] if cmd == "generate" else []))
        assert rc == 1 and err == [f"qrt: error: {bad_config_dir / 'config.json'}: expected valid JSON, found "
                                   "<Expecting ',' delimiter at line 1 column 45>"], err


def test_usage_errors_exit_2(tmp_path):
    rc, err = qrt("quantize")  # --out is required
    assert rc == 2 and err[-1].endswith("error: the following arguments are required: --out")
    rc, err = qrt("quantize", "--scheme", "w8a16", "--group-size", "64", "--out", tmp_path / "o")
    assert rc == 2 and err == ["qrt: error: --group-size: scheme 'w8a16' is per-channel; expected a group scheme "
                               "such as w4a16"]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "afile").write_text("x")
    rc, err = qrt("--debug", "quantize", "--out", tmp_path / "afile")
    assert rc == 1 and err[0].startswith("Traceback") and err[-1].startswith("FileExistsError: output path")


def test_a_bug_is_one_line_naming_it(monkeypatch, capsys):
    import qrt.commands.info as info

    def broken(args):
        raise TypeError("a bug")
    monkeypatch.setattr(info, "run", broken)
    assert entry(["info", "x"]) == 1
    assert capsys.readouterr().err.strip() == "qrt: internal error: TypeError: a bug (run with --debug for the traceback)"
