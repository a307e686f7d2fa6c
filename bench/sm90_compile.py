"""Compile a captured kernel launch for a GPU that is not there, and read the cubin.

The one module that touches Triton's compiler internals (the JIT's argument binder and its
signature packing), so it checks the Triton version it was written against and fails
loudly on any other: the binder and `_pack_args` are not a stable API.

    compiled = compile_launch(launch, arch=90)   # qrt_kernels.launch.Launch
    compiled.sass, compiled.ptx, compiled.shared_bytes, compiled.regs, compiled.stack_bytes
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton

PINNED_TRITON = "3.9.0"  # written and checked against this release only
if triton.__version__ != PINNED_TRITON:
    raise RuntimeError(f"bench/sm90_compile.py uses Triton's JIT internals as of triton "
                       f"{PINNED_TRITON}, found triton {triton.__version__}: re-check "
                       "create_function_from_signature / JITFunction._pack_args, then update PINNED_TRITON")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

_TOOLS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
# Triton 3.9 on CUDA warns once when TRITON_DEFAULT_FP_FUSION is unset and keeps fusion on;
# a CUDA launch would see the same default, so set it explicitly to that value
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


@dataclass
class Compiled:
    """What one launch compiles to on the target."""

    name: str
    sass: str
    ptx: str
    shared_bytes: int        # dynamic shared memory the launch asks for
    regs: int                # registers per thread (cubin resource usage)
    stack_bytes: int         # stack frame per thread: > 0 means local-memory spills
    num_warps: int


def tool(name: str) -> str:
    path = _TOOLS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the triton {PINNED_TRITON} wheel ships it; reinstall triton")
    return str(path)


def _bind(launch, backend):
    """(options, signature, constexprs, attrs) exactly as JITFunction.run derives them for
    these arguments (same specialization: ints equal to 1, divisibility by 16, None)."""
    kernel = launch.kernel
    kwargs = dict(launch.meta)
    kwargs.setdefault("debug", False)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    return kernel._pack_args(backend, kwargs, bound, specialization, options)


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers, stack bytes) of the cubin's one kernel, from cuobjdump -res-usage."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool("cuobjdump"), "-res-usage", f.name], capture_output=True,
                             text=True, check=True, timeout=120).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage gave no REG/STACK line:\n{out}")
    return int(m.group(1)), int(m.group(2))


def disassemble(cubin: bytes) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True,
                              check=True, timeout=120).stdout


def compile_key(launch, arch: int = 90) -> str:
    """Identical keys compile to identical code (same kernel, specialization, options)."""
    options, signature, constexprs, attrs = _bind(launch, make_backend(GPUTarget("cuda", arch, 32)))
    return repr((launch.kernel.fn.__qualname__, arch, sorted(signature.items()), sorted(constexprs.items()),
                 sorted(attrs.items()), sorted(options.__dict__.items())))


def compile_launch(launch, arch: int = 90) -> Compiled:
    """Compile `launch` (qrt_kernels.launch.Launch) for compute capability `arch`
    (90: sm_90a, H100/H200) with no GPU and no driver."""
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    options, signature, constexprs, attrs = _bind(launch, backend)
    src = ASTSource(launch.kernel, signature, constexprs, attrs)
    ck = triton.compile(src, target=target, options=options.__dict__)
    regs, stack = _resource_usage(ck.asm["cubin"])
    return Compiled(name=ck.metadata.name, sass=disassemble(ck.asm["cubin"]), ptx=ck.asm["ptx"],
                    shared_bytes=int(ck.metadata.shared), regs=regs, stack_bytes=stack,
                    num_warps=int(ck.metadata.num_warps))
