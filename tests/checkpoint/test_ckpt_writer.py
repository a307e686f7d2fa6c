"""Issue 17, finding 5: `save_quantized` / `qrt quantize --out` never lose a user's files or a
checkpoint: foreign directories are refused unless overwrite, only qrt's files are replaced, a
bad --out is refused before any work, SIGTERM cleans up, a killed run is repaired by the next,
and an interrupt at any step leaves the old or the new checkpoint complete."""
import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import qrt.checkpoint.atomic as atomic
import qrt.commands.quantize as quantize_cmd
from qrt import load_quantized, quantize_model, save_quantized

HERE = Path(__file__).parent


@pytest.fixture
def models(make_model):
    """Two different quantized tiny models: the 'old' and the 'new' checkpoint."""
    a, b = make_model("llama"), make_model("llama")
    quantize_model(a, "w4a16", progress=False)
    quantize_model(b, "w8a16", progress=False)
    return a, b


def snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_rewrite_keeps_the_users_files(models, tmp_path):
    old, new = models
    save_quantized(old, tmp_path / "q", max_shard_size="200KB")  # sharded: an index + 3+ shards
    (tmp_path / "q" / "NOTES.md").write_text("mine")
    save_quantized(new, tmp_path / "q")  # one shard now
    names = set(os.listdir(tmp_path / "q"))
    assert "NOTES.md" in names and (tmp_path / "q" / "NOTES.md").read_text() == "mine"
    assert "model.safetensors.index.json" not in names and "model-00001-of-00003.safetensors" not in names
    assert load_quantized(tmp_path / "q", device="cpu", progress=False).model.layers[0].mlp.up_proj.scheme.bits == 8


def test_foreign_dir_refused_unless_overwrite(models, tmp_path):
    d = tmp_path / "hf_model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"old weights")
    (d / "README.md").write_text("model card")
    with pytest.raises(FileExistsError, match="not an empty or model directory written by qrt.*--overwrite"):
        save_quantized(models[0], d)
    assert snapshot(d) == {"config.json": b"{}", "model.safetensors": b"old weights", "README.md": b"model card"}
    save_quantized(models[0], d, overwrite=True)
    assert (d / "README.md").read_text() == "model card" and (d / "model.safetensors").read_bytes() != b"old weights"
    assert load_quantized(d, device="cpu", progress=False) is not None and leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "foreign dir", "under a file"])
def test_bad_out_refused_before_any_work(tmp_path, monkeypatch, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    elif kind == "foreign dir":
        out.mkdir()
        (out / "photo.jpg").write_bytes(b"\xff")
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "sub" / "out"

    def must_not_run(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")
    monkeypatch.setattr("qrt.hub.load.load_fp_model", must_not_run)
    p = argparse.ArgumentParser()
    quantize_cmd.add_quantize_args(p)
    with pytest.raises((FileExistsError, PermissionError), match=str(out)):
        quantize_cmd.run(p.parse_args(["--out", str(out)]))


SAVE_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})  # tests/: tiny_models.py
    import qrt.checkpoint.save as save
    from tiny_models import make
    from qrt import quantize_model, save_quantized
    model = make("llama")
    quantize_model(model, "w4a16", progress=False)
    real = save.save_file
    def slow(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        print("WROTE", path, flush=True)
        time.sleep(60)
    save.save_file = slow
    save_quantized(model, {out!r}, max_shard_size="200KB")
""")


def _start_save(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SAVE_SCRIPT.format(here=str(HERE.parent), out=str(out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the first shard is on disk (or the child died)
    assert line.startswith("WROTE"), (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_save_leaves_the_old_checkpoint_and_no_temp_dir(models, tmp_path, sig):
    out = tmp_path / "q"
    save_quantized(models[0], out)
    before = snapshot(out)
    proc = _start_save(out)
    assert any(".tmp-" in n for n in leftovers(tmp_path))
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == (143 if sig == signal.SIGTERM else -signal.SIGKILL), proc.stderr.read()[-2000:]
    assert snapshot(out) == before
    if sig == signal.SIGTERM:
        assert leftovers(tmp_path) == []  # cleaned up by the dying process itself
    else:
        assert len(leftovers(tmp_path)) == 1  # SIGKILL cannot be caught: the next run removes it
        save_quantized(models[1], out)
        assert leftovers(tmp_path) == [] and snapshot(out) != before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    return p.pid


def test_next_run_restores_an_old_checkpoint_killed_between_renames(models, tmp_path):
    """Without an atomic exchange, a SIGKILL between `out -> .old` and `tmp -> out` leaves no out."""
    out = tmp_path / "q"
    save_quantized(models[0], out)
    before = snapshot(out)
    pid = _dead_pid()
    out.rename(tmp_path / f".q.old-{pid}-abcd1234")
    (tmp_path / f".q.tmp-{pid}-xyz").mkdir()
    assert atomic.clean_stale(out) and snapshot(out) == before and leftovers(tmp_path) == []


STEPS = ["_write_manifest", "_keep_user_files", "_publishable", "_exchange", "rmtree"]
CASES = [(s, True) for s in STEPS] + [(s, False) for s in STEPS if s != "_exchange"] + \
    [("rename#1", False), ("rename#2", False)]  # without renameat2: two renames with a rollback


@pytest.mark.parametrize("step,exchange", CASES, ids=[f"{s}-{'renameat2' if e else 'renames'}" for s, e in CASES])
def test_interrupt_at_each_step_leaves_old_or_new_complete(models, tmp_path, monkeypatch, step, exchange):
    out = tmp_path / "q"
    save_quantized(models[0], out, max_shard_size="200KB")
    (out / "NOTES.md").write_text("mine")
    before = snapshot(out)
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    if step in ("rename#1", "rename#2"):
        real, calls = os.rename, []

        def rename(a, b):
            calls.append(a)
            if len(calls) == int(step[-1]) and ".old-" not in str(a):  # not the rollback's rename
                raise KeyboardInterrupt(step)
            real(a, b)
        monkeypatch.setattr(atomic.os, "rename", rename)
    elif step == "rmtree":
        monkeypatch.setattr(atomic.shutil, "rmtree",
                            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt(step)))
    else:
        original = getattr(atomic, step)

        def interrupted(*a, **k):
            if step == "_exchange":
                raise KeyboardInterrupt(step)
            original(*a, **k)
            raise KeyboardInterrupt(step)  # after the step did its work
        monkeypatch.setattr(atomic, step, interrupted)
    try:
        save_quantized(models[1], out)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    after = snapshot(out)
    assert after == before or (after["NOTES.md"] == b"mine" and after != before), sorted(after)
    bits = load_quantized(out, device="cpu", progress=False).model.layers[0].mlp.up_proj.scheme.bits
    assert bits == (4 if after == before else 8)
    if step == "rmtree":  # only the cleanup of the replaced checkpoint was cut short
        assert after != before and len(leftovers(tmp_path)) == 1
    else:
        assert leftovers(tmp_path) == [], leftovers(tmp_path)
