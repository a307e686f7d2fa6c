"""The tensors of a safetensors checkpoint directory (one file or sharded with an index),
opened lazily with safe_open. Every problem is reported with the file and tensor names:
missing shard, corrupt or truncated file, a tensor the index lists but the file lacks.
Pickle checkpoints (*.bin, *.pt) are refused: loading them can run arbitrary code."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from qrt.formats.legacy import lone_safetensors

_BLOCK_ELEMENTS = 1 << 22  # rows converted per step: 16 MB of fp32
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


class ShardIndex:
    """name -> shard file for every tensor; get_tensor(name, device) reads one tensor."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._handles: dict[tuple[str, str], object] = {}
        self.file_of = self._tensor_files()
        for fname in sorted(set(self.file_of.values())):
            self._check_keys(fname)

    def _tensor_files(self) -> dict[str, str]:
        index = self.root / INDEX
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise ValueError(f"{index}: not a safetensors index (expected JSON with a 'weight_map'): {e}") from None
            missing = sorted({f for f in weight_map.values() if not (self.root / f).is_file()})
            if missing:
                example = next(k for k, f in weight_map.items() if f == missing[0])
                raise FileNotFoundError(f"{self.root}: shard {missing[0]} listed in {INDEX} is missing "
                                        f"({len(missing)} missing shard(s); it holds e.g. tensor '{example}')")
            return dict(weight_map)
        single = SINGLE if (self.root / SINGLE).is_file() else lone_safetensors(self.root)
        if single is not None:  # a lone file of another name: AutoGPTQ's gptq_model-4bit-128g
            return {k: single for k in self._open(single).keys()}
        pickles = sorted(p.name for p in self.root.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        if pickles:
            raise ValueError(f"{self.root}: only pickle weights found ({', '.join(pickles)}); qrt loads "
                             "safetensors only (pickle can execute code). Convert the checkpoint first")
        raise FileNotFoundError(f"{self.root}: no {SINGLE} or {INDEX}")

    def _open(self, fname: str, device: str = "cpu"):
        """safe_open handle (memory-mapped; tensors are read straight onto `device`)."""
        key = (fname, device)
        if key not in self._handles:
            try:
                self._handles[key] = safe_open(str(self.root / fname), framework="pt", device=device)
            except Exception as e:  # SafetensorError: bad header, truncated data
                raise ValueError(f"{self.root / fname}: corrupt or truncated safetensors file ({e})") from None
        return self._handles[key]

    def _check_keys(self, fname: str) -> None:
        have = set(self._open(fname).keys())
        want = [k for k, f in self.file_of.items() if f == fname]
        lacking = [k for k in want if k not in have]
        if lacking:
            raise ValueError(f"{self.root / fname}: tensor '{lacking[0]}' listed in {INDEX} is not in the file "
                             f"({len(lacking)} missing)")

    def names(self) -> Iterable[str]:
        return self.file_of.keys()

    def names_under(self, prefix: str) -> list[str]:
        return [k for k in self.file_of if k.startswith(prefix + ".")]

    def shape(self, name: str) -> list[int]:
        return list(self._open(self.file_of[name]).get_slice(name).get_shape())

    def get_tensor(self, name: str, device: "torch.device | str" = "cpu",
                   dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read one tensor (KeyError naming the directory if absent). dtype: convert floats;
        a large tensor is converted in row blocks, so the file's copy never exists whole
        next to the converted one (the fp16 -> fp32 embedding: peak +1x, not +1.5x)."""
        if name not in self.file_of:
            raise KeyError(f"tensor '{name}' not found in {self.root}")
        fname = self.file_of[name]
        try:
            handle = self._open(fname, str(device))
            view = handle.get_slice(name)
            shape = view.get_shape()
            if dtype is None or not view.get_dtype().startswith(("F", "BF")) or len(shape) == 0:
                t = handle.get_tensor(name)
                return t if dtype is None or not t.is_floating_point() else t.to(dtype)
            out = torch.empty(shape, dtype=dtype, device=device)
            step = max(1, _BLOCK_ELEMENTS // max(1, out[0].numel()))
            for i in range(0, shape[0], step):
                out[i:i + step] = view[i:i + step]
            return out
        except Exception as e:
            raise ValueError(f"{self.root / fname}: cannot read tensor '{name}' ({e})") from None

    def close(self) -> None:
        self._handles.clear()
