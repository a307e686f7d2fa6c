"""The serving engine's one door to transformers' unstable internals refuses untested releases."""
import pytest

from qrt.serve import cb_compat


def test_the_installed_transformers_is_supported():
    cb_compat.check_transformers_version()  # what CI installs (constraints.txt) is in the range


@pytest.mark.parametrize("version", ["5.24.0", "5.22.2", "4.57.1"])
def test_an_untested_release_fails_naming_the_supported_range(version, monkeypatch):
    monkeypatch.delenv(cb_compat.ALLOW_ENV, raising=False)
    with pytest.raises(RuntimeError) as info:
        cb_compat.check_transformers_version(version)
    msg = str(info.value)
    assert version in msg and str(cb_compat.SUPPORTED_TRANSFORMERS) in msg and cb_compat.ALLOW_ENV in msg


def test_the_override_turns_the_refusal_into_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(cb_compat.ALLOW_ENV, "1")
    cb_compat.check_transformers_version("5.99.0")
    assert "5.99.0" in caplog.text


def test_pyproject_and_the_check_name_the_same_range():
    import tomllib
    from pathlib import Path
    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("transformers"))
    from packaging.specifiers import SpecifierSet
    assert SpecifierSet(spec[len("transformers"):]) == cb_compat.SUPPORTED_TRANSFORMERS
