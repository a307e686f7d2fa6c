"""`qrt quantize MODEL --scheme w4a16 --out DIR [--method gptq|smoothquant|awq] [--smooth awq]`:
quantize a model (RTN, or GPTQ / SmoothQuant / AWQ calibrated on text) into a
compressed-tensors checkpoint (vLLM / SGLang / transformers read it unchanged)."""
from __future__ import annotations

import argparse

ORDER = 10


def add_quantize_args(p: argparse.ArgumentParser) -> None:
    """Every `qrt quantize` option, in one place (other methods add theirs here)."""
    from qrt.schemes import PRESETS
    p.add_argument("model", nargs="?", default="smollm2",
                   help="local dir, repo id in the local HF cache, or 'smollm2' (default: the embedded model)")
    p.add_argument("--scheme", default="w4a16",
                   help=f"one of {', '.join(PRESETS)}, optionally with -gN (default: w4a16)")
    p.add_argument("--group-size", type=int, help="override the scheme's group size")
    p.add_argument("--ignore", nargs="*", default=["lm_head"],
                   help="modules left unquantized: names, class names or re:regex (default: lm_head)")
    p.add_argument("--targets", nargs="*", default=["Linear"], help="modules to quantize (default: Linear)")
    p.add_argument("--ragged-groups", action="store_true",
                   help="keep the group size even where it does not divide in_features (qrt-only files)")
    p.add_argument("--quantize-embedding", action="store_true",
                   help="store the embedding (and a tied lm_head) as int8 per row (qrt-only files)")
    p.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default: 2GB)")
    p.add_argument("--trust-remote-code", action="store_true", help="run model code from its repository")
    p.add_argument("--out", required=True, help="output checkpoint directory (written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an existing directory qrt did not write (only qrt's files are replaced)")
    add_gptq_args(p)


def add_gptq_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("GPTQ (--method gptq), SmoothQuant and AWQ (calibrated on text)")
    g.add_argument("--method", choices=["rtn", "gptq", "smoothquant", "awq"], default="rtn",
                   help="rtn: round to nearest (default); gptq: GPTQ with calibration text; "
                        "smoothquant / awq: those scales folded in, then round to nearest")
    g.add_argument("--smooth", choices=["smoothquant", "awq"], default=None,
                   help="with --method gptq: fold SmoothQuant or AWQ scales before GPTQ")
    g.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength (default: 0.5)")
    g.add_argument("--smooth-mappings", choices=["norms", "all"], default="norms",
                   help="SmoothQuant: norm -> q/k/v, gate/up (default) or also v -> o, up -> down")
    g.add_argument("--smooth-search", action="store_true",
                   help="SmoothQuant: pick alpha per mapping and block by the quantized output error "
                        "(11-point grid, 8 calibration windows; --alpha is then unused)")
    g.add_argument("--awq-grid", type=int, default=20, help="AWQ grid points per mapping (default: 20)")
    g.add_argument("--awq-clip", action="store_true",
                   help="AWQ: also search per-group weight clipping (AutoAWQ's auto_clip; round to nearest only)")
    g.add_argument("--awq-loss-windows", type=int, default=None,
                   help="AWQ: calibration windows in the grid-search loss (default: all)")
    g.add_argument("--awq-loss-tokens", type=int, default=None,
                   help="AWQ: tokens sampled from every window for the MLP's grid-search loss "
                        "(default: the --awq-loss-windows windows)")
    g.add_argument("--awq-refine", type=int, default=None, metavar="K",
                   help="AWQ grid search: every K-th ratio, then the ratios near the best of them "
                        "(the full grid's pick when the loss falls then rises along the ratio; default: every ratio)")
    g.add_argument("--actorder", choices=["weight", "group", "none"], default="weight",
                   help="column order: weight (default; no g_idx), group (g_idx; qrt reads it, "
                        "compressed-tensors >= 0.19 rejects it) or none")
    g.add_argument("--calib", default=None,
                   help="calibration text file (default: the packaged WikiText-2 validation split)")
    g.add_argument("--nsamples", type=int, default=128, help="calibration windows (default: 128)")
    g.add_argument("--seqlen", type=int, default=512, help="tokens per calibration window (default: 512)")
    g.add_argument("--gptq-clip", action="store_true",
                   help="GPTQ: group scales from a Hessian-aware clipping search (symmetric integer schemes; "
                        "--actorder weight)")
    g.add_argument("--percdamp", type=float, default=0.01, help="Hessian dampening (default: 0.01)")
    g.add_argument("--block-size", type=int, default=128, help="GPTQ lazy-update block (default: 128)")
    g.add_argument("--calib-device", default=None, help="device blocks are calibrated on (default: the model's)")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model into a compressed-tensors checkpoint",
                       description=__doc__)
    add_quantize_args(p)
    p.set_defaults(func=run)


def scheme_from_args(args):
    from qrt.schemes import resolve_scheme
    scheme = resolve_scheme(args.scheme)
    if args.group_size is not None:
        if scheme.strategy != "group":
            raise SystemExit(f"--group-size: scheme {args.scheme!r} is per-{scheme.strategy}; "
                             "expected a group scheme such as w4a16")
        scheme = scheme.replace(group_size=args.group_size)
    return scheme


def run(args) -> int:
    import logging

    from qrt.checkpoint.info import checkpoint_info
    from qrt.checkpoint.save import save_quantized
    from qrt.hub.load import load_fp_model
    from qrt.quantize.rtn import quantize_model
    from qrt.checkpoint.atomic import check_out_dir
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    check_out_dir(args.out, args.overwrite)  # refuse a bad --out before a long quantization run
    scheme = scheme_from_args(args)
    model, tok = load_fp_model(args.model, trust_remote_code=args.trust_remote_code)
    if args.method != "rtn" or args.smooth:
        run_gptq(model, tok, scheme, args)
    else:
        quantize_model(model, scheme, ignore=args.ignore, targets=args.targets, progress=True,
                       ragged_groups=args.ragged_groups, quantize_embedding=args.quantize_embedding)
    info = save_quantized(model, args.out, max_shard_size=args.max_shard_size,
                          ragged_groups=args.ragged_groups, tokenizer=tok, overwrite=args.overwrite)
    print(info.summary())
    ci = checkpoint_info(info.path)
    print(f"size: {ci.file_bytes / 1e6:.1f} MB = {ci.ratio_vs_fp16:.3f}x the fp16 checkpoint "
          f"({ci.fp16_bytes / 1e6:.1f} MB)")
    return 0


def make_transform(model, args):
    """The SmoothQuant / AWQ transform that --method / --smooth ask for, or None."""
    smooth = args.smooth or (args.method if args.method in ("smoothquant", "awq") else None)
    if args.smooth and args.method != "gptq":
        raise SystemExit(f"--smooth {args.smooth} composes with --method gptq; for round to nearest "
                         f"use --method {args.smooth}")
    try:
        if smooth == "smoothquant":
            from qrt.quantize.smoothquant import SmoothQuant, SmoothQuantConfig
            return SmoothQuant(model, SmoothQuantConfig(alpha=args.alpha, mappings=args.smooth_mappings,
                                                        search=args.smooth_search))
        if smooth == "awq":
            from qrt.quantize.awq import AWQ, AWQConfig
            return AWQ(model, AWQConfig(n_grid=args.awq_grid, loss_windows=args.awq_loss_windows,
                                        loss_tokens=args.awq_loss_tokens, refine=args.awq_refine,
                                        clip=args.awq_clip))
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return None


def run_gptq(model, tok, scheme, args) -> None:
    from qrt.quantize.gptq_model import gptq_quantize_model
    if tok is None:
        raise SystemExit(f"--method {args.method}: {args.model} has no tokenizer files; calibration needs "
                         "one to tokenize the calibration text")
    if args.quantize_embedding:
        raise SystemExit("--quantize-embedding is RTN-only; drop it or use --method rtn")
    gptq_quantize_model(model, tok, scheme, calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                        actorder=args.actorder, percdamp=args.percdamp, block_size=args.block_size,
                        ignore=args.ignore, targets=args.targets, device=args.calib_device,
                        ragged_groups=args.ragged_groups, transform=make_transform(model, args),
                        rounding="gptq" if args.method == "gptq" else "rtn", clip=args.gptq_clip)
