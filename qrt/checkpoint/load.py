"""load_checkpoint: a quantized checkpoint directory -> a ready model (qrt.hub.load_quantized
resolves names such as repo ids to the directory first).

Three steps (gpt-fast): skeleton on meta (qrt.checkpoint.skeleton); swap Linear -> QuantLinear per
the checkpoint's config groups; assign tensors straight from safetensors onto the target
device. Quantized layers are never materialized in floating point. Then tied embeddings
are re-tied and every QuantLinear repacks once for its backend (finalize).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from qrt.checkpoint.memory import release_freed_memory
from qrt.checkpoint.shards import ShardIndex
from qrt.checkpoint.skeleton import build_skeleton, load_config, meta_tensors, set_tensor
from qrt.formats.registry import reader_for
from qrt.formats.validate import read_checkpoint_config
from qrt.formats.targets import set_submodule
from qrt.runtime.embedding import QuantEmbedding, tied_head
from qrt.runtime.linear import QuantLinear
from qrt.schemes import FLOAT_DTYPES

log = logging.getLogger("qrt")
TRIM_EVERY = 8  # layers between heap trims during the repack (qrt.checkpoint.memory: peak RSS vs ~7 ms a trim)


def resolve_dtype(dtype, device: torch.device, config: dict) -> torch.dtype:
    """Compute dtype. None: float32 on CPU (CPU half-precision matmuls are slow), the
    checkpoint's 16-bit dtype elsewhere; "auto": the checkpoint's dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    stored = FLOAT_DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), torch.float16)
    if dtype is None:
        return torch.float32 if device.type == "cpu" else stored
    if dtype == "auto":
        return stored
    if dtype in FLOAT_DTYPES:
        return FLOAT_DTYPES[dtype]
    raise ValueError(f"dtype: expected None, 'auto', a torch.dtype or one of {sorted(FLOAT_DTYPES)}, found {dtype!r}")


def stored_quant_config(root: Path) -> dict | None:
    """The quantization settings of checkpoint directory `root`: config.json's
    quantization_config, else those of AutoGPTQ/AutoAWQ's own layouts; None if unquantized."""
    return read_checkpoint_config(root)[1]  # validated (qrt.CheckpointConfigError names the field)


def load_checkpoint(root: Path, device=None, dtype=None, device_map=None, trust_remote_code: bool = False,
                    progress: bool = True, allow_unused_tensors: bool = False) -> nn.Module:
    """Load the quantized checkpoint (compressed-tensors, GPTQ, AWQ) in directory `root`.

    device: "cpu", "cuda", ... (default: cuda if available). dtype: compute dtype, see
    resolve_dtype. device_map: None, "auto" or an accelerate device map, dispatched
    through accelerate (the model is staged on the CPU first). allow_unused_tensors: load even
    if the checkpoint holds tensors the model config has no place for (by default an error:
    a config that does not match its weights generates garbage).
    """
    root = Path(root)
    raw, qcfg = read_checkpoint_config(root)  # validated, with AutoGPTQ/AutoAWQ's own saves

    if qcfg is None:
        raise ValueError(f"{root / 'config.json'}: no quantization_config; expected a quantized checkpoint "
                         "(make one with `qrt quantize`, or load any model with qrt.hub.load_model)")
    reader = reader_for(qcfg)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_dtype(dtype, device, raw)
    stage = torch.device("cpu") if device_map is not None else device
    shards = ShardIndex(root)
    model = build_skeleton(load_config(root, trust_remote_code), dtype, trust_remote_code)
    used = _load_quantized_layers(model, reader, qcfg, shards, stage, dtype, progress)
    used |= _load_plain_tensors(model, shards, stage, dtype, used)
    _retie(model)
    _check_complete(model, shards, used, allow_unused_tensors)
    model.to(stage)  # non-persistent buffers were built on the CPU
    if device_map is not None:
        model = _dispatch(model, device_map, dtype)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    for i, m in enumerate(tqdm(layers, desc="Repacking for the backend", unit="layer", disable=not progress)):
        m.finalize()
        if i % TRIM_EVERY == TRIM_EVERY - 1:
            release_freed_memory()
    model.qrt_checkpoint = {"path": str(root), "quantization_config": qcfg}
    return model


def _by_module(shards: ShardIndex) -> dict[str, list[str]]:
    out = defaultdict(list)
    for k in shards.names():
        out[k.rpartition(".")[0]].append(k)
    return out


def _files(shards: ShardIndex, names) -> str:
    return ", ".join(sorted({str(shards.root / shards.file_of[n]) for n in names if n in shards.file_of}))


def _load_quantized_layers(model, reader, qcfg, shards, device, dtype, progress) -> set[str]:
    """Swap every Linear (and a compressed-tensors int8 Embedding) the checkpoint stores
    quantized for a QuantLinear (QuantEmbedding) filled from the checkpoint."""
    by_module, used = _by_module(shards), set()
    todo = [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Embedding)) and reader.is_quantized_layer(n, by_module.get(n, []))]
    for name, mod in tqdm(todo, desc="Loading quantized layers", unit="layer", disable=not progress):
        names = by_module[name]
        get = lambda k: shards.get_tensor(k, device)  # noqa: E731
        emb = isinstance(mod, nn.Embedding)
        out_f, in_f = (mod.num_embeddings, mod.embedding_dim) if emb else (mod.out_features, mod.in_features)
        try:
            kw = {"class_names": ("Embedding",)} if emb else {}
            scheme, bufs = reader.read_layer(get, name, qcfg, in_f, out_f, **kw)
            new = _quant_embedding(mod, scheme, dtype) if emb else QuantLinear(
                in_f, out_f, bias=mod.bias is not None, scheme=scheme, dtype=dtype, device="meta")
            _assign(new, bufs, name, device)
        except (ValueError, KeyError) as e:
            raise ValueError(f"{_files(shards, names)}: {e}") from None
        if not emb and mod.bias is not None:
            new.bias = nn.Parameter(_plain(shards, f"{name}.bias", tuple(mod.bias.shape), device, dtype),
                                    requires_grad=False)
        set_submodule(model, name, new)
        used.update(names)
    return used


def _quant_embedding(mod: nn.Embedding, scheme, dtype) -> QuantEmbedding:
    if (scheme.bits, scheme.strategy, scheme.symmetric) != (8, "channel", True):
        raise ValueError(f"quantized embedding: expected int8 symmetric per-row, found {scheme}")
    return QuantEmbedding(mod.num_embeddings, mod.embedding_dim, mod.padding_idx, dtype=dtype,
                          scale_dtype=FLOAT_DTYPES[scheme.scale_dtype or "float16"],
                          embed_scale=getattr(mod, "embed_scale", None), device="meta")


def _assign(module: nn.Module, bufs: dict, name: str, device) -> None:
    """Put reader tensors into the meta skeleton's buffers, checking shape and dtype."""
    for k, t in bufs.items():
        want = module._buffers.get(k)
        if want is None:
            raise ValueError(f"tensor '{name}.{k}': not a buffer of {type(module).__name__} with this scheme")
        # a reader may hand scales in another float dtype than the scheme's (fp16 -> fp32)
        same_kind = t.dtype == want.dtype or (t.is_floating_point() and want.is_floating_point())
        if tuple(t.shape) != tuple(want.shape) or not same_kind:
            raise ValueError(f"tensor '{name}.{k}': expected {want.dtype} {list(want.shape)}, "
                             f"found {t.dtype} {list(t.shape)}")
        finite = torch.isfinite(t.float()) if t.is_floating_point() and t.element_size() == 1 else \
            (torch.isfinite(t) if t.is_floating_point() else None)  # fp8 scales (NVFP4): no isfinite kernel
        if "scale" in k and finite is not None and not finite.all():
            bad = (~finite).nonzero()[0].tolist()
            raise ValueError(f"tensor '{name}.{k}': expected finite scales, found {t[tuple(bad)].item()} at {bad}")
        module._buffers[k] = t.to(device=device, dtype=want.dtype)
    module._buffers["weight_shape"] = _shape_buffer(module, device)


def _shape_buffer(module: nn.Module, device) -> torch.Tensor:
    rows, cols = (module.out_features, module.in_features) if isinstance(module, QuantLinear) \
        else (module.num_embeddings, module.embedding_dim)
    return torch.tensor([rows, cols], dtype=torch.int64, device=device)


def _plain(shards: ShardIndex, key: str, shape: tuple, device, dtype) -> torch.Tensor:
    found = shards.shape(key)
    if tuple(found) != shape:
        raise ValueError(f"{_files(shards, [key])}: tensor '{key}': expected shape {list(shape)} (from the model "
                         f"config), found {list(found)}")
    return shards.get_tensor(key, device, dtype=dtype)


def _load_plain_tensors(model, shards, device, dtype, used) -> set[str]:
    """Every parameter / persistent buffer still on meta, from the checkpoint."""
    names, loaded = set(shards.names()), set()
    for mname, m in model.named_modules():
        for k, t in list(m._parameters.items()) + list(m._buffers.items()):
            key = f"{mname}.{k}" if mname else k
            if t is None or key not in names or key in used:
                continue
            if k in m._non_persistent_buffers_set:
                continue
            want = t.dtype if not t.is_floating_point() else dtype
            new = _plain(shards, key, tuple(t.shape), device, dtype)
            if new.dtype != want and not (new.is_floating_point() and t.is_floating_point()):
                raise ValueError(f"{_files(shards, [key])}: tensor '{key}': expected dtype {want}, found {new.dtype}")
            set_tensor(m, k, new)
            loaded.add(key)
    return loaded


def _retie(model: nn.Module) -> None:
    """Tie output embeddings the checkpoint did not store (config.tie_word_embeddings)."""
    get_map = getattr(model, "get_expanded_tied_weights_keys", None)
    for target, source in (get_map(all_submodels=True) if get_map else {}).items():
        t_mod, _, t_attr = target.rpartition(".")
        s_mod, _, s_attr = source.rpartition(".")
        src, dst = model.get_submodule(s_mod), model.get_submodule(t_mod)
        if isinstance(src, QuantEmbedding):
            bias = getattr(dst, "bias", None)
            bias = bias if bias is not None and bias.device.type != "meta" else None
            set_submodule(model, t_mod, tied_head(src, bias))
        elif getattr(dst, t_attr, None) is not None and getattr(dst, t_attr).device.type == "meta":
            setattr(dst, t_attr, getattr(src, s_attr))


def _check_complete(model: nn.Module, shards: ShardIndex, used: set[str], allow_unused: bool) -> None:
    missing = meta_tensors(model)
    if missing:
        raise ValueError(f"{shards.root}: checkpoint lacks {len(missing)} tensor(s) the model config needs, "
                         f"e.g. '{missing[0]}' (expected in the safetensors files, found nowhere)")
    extra = sorted(set(shards.names()) - used)
    if extra and not allow_unused:
        raise ValueError(f"{shards.root}: {len(extra)} checkpoint tensor(s) have no place in the model built from "
                         f"config.json, e.g. '{extra[0]}' in {_files(shards, extra[:1])} (does config.json match the "
                         "weights? pass allow_unused_tensors=True to load anyway)")
    if extra:
        log.warning("%s: %d checkpoint tensor(s) not used by the model, e.g. %s", shards.root, len(extra), extra[0])


def _dispatch(model: nn.Module, device_map, dtype) -> nn.Module:
    from accelerate import dispatch_model, infer_auto_device_map
    if device_map == "auto":
        device_map = infer_auto_device_map(model, no_split_module_classes=list(model._no_split_modules or []),
                                           dtype=dtype)
    if any(d == "disk" for d in device_map.values()):
        raise ValueError("device_map: disk offload is not supported for quantized models; found 'disk'")
    model.hf_device_map = device_map
    return dispatch_model(model, device_map=device_map)
