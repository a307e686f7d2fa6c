"""`qrt info DIR`: scheme(s), sizes and per-layer bits / group size of a checkpoint,
read from config.json and the safetensors headers (no weights are loaded)."""
from __future__ import annotations

ORDER = 30


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint: schemes, sizes, per-layer bits", description=__doc__)
    p.add_argument("path", nargs="?", default="smollm2", help="checkpoint dir or cached repo id")
    p.add_argument("--summary", action="store_true", help="skip the per-layer table")
    p.set_defaults(func=run)


def run(args) -> int:
    from qrt.checkpoint.info import checkpoint_info
    from qrt.hub.resolve import resolve_model_dir
    ci = checkpoint_info(resolve_model_dir(args.path))
    if not args.summary:
        print(f"{'layer':<48} {'bits':>4} {'group':>7} {'out x in':>13} {'MB':>8}")
        for layer in ci.layers:
            bits = str(layer.bits) if layer.bits else "fp"
            group = str(layer.group_size) if layer.group_size else layer.strategy
            print(f"{layer.name:<48} {bits:>4} {group:>7} {layer.shape[0]:>6}x{layer.shape[1]:<6} "
                  f"{layer.nbytes / 1e6:>8.3f}")
    print(f"checkpoint: {ci.path}")
    print(f"quantization: {ci.quant_method or 'none'} ({ci.quant_format or '-'})")
    for name, desc in ci.groups.items():
        print(f"  {name}: {desc}")
    quantized = sum(1 for layer in ci.layers if layer.bits)
    print(f"layers: {quantized} quantized, {len(ci.layers) - quantized} floating point")
    print(f"size: {ci.file_bytes / 1e6:.1f} MB on disk = {ci.ratio_vs_fp16:.3f}x the fp16 equivalent "
          f"({ci.fp16_bytes / 1e6:.1f} MB)")
    return 0
