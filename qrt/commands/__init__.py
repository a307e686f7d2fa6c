"""CLI subcommands: one module each, exposing register(subparsers)."""


def add_device_dtype(p) -> None:
    """--device / --dtype, as qrt.hub.load_model takes them (generate, eval, serve)."""
    from qrt.schemes import FLOAT_DTYPES  # (not qrt.hub: --help stays cheap)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if a GPU is present, else cpu)")
    p.add_argument("--dtype", default=None, choices=("auto", *FLOAT_DTYPES),
                   help="compute dtype (default: bfloat16 on CUDA, float32 on CPU; auto: the checkpoint's own)")
