"""Imports point one way, down the data flow: a module imports only from its own folder or
from folders earlier in LAYERS (qrt/numerics never reaches up into qrt/runtime, and so on).

Every import statement counts, also those inside functions, and so does a string naming a
qrt module (a registry that imports by name). qrt/__init__.py is the public facade and may
name anything; nothing inside the package may import the facade.
"""
import ast
from pathlib import Path

import qrt

QRT = Path(qrt.__file__).resolve().parent
KERNELS = QRT.parent / "kernels"

# The data flow, bottom up. Folders on one line are siblings: they may not import each other.
LAYERS = [
    {"schemes", "data"},         # configs; the text that calibrates and evaluates
    {"numerics"},                # qparams, quantize/dequantize, packing, act-order permutations
    {"runtime"},                 # QuantLinear, QuantEmbedding, backends
    {"formats"},                 # compressed-tensors, GPTQ, AWQ tensors; module-name matching
    {"checkpoint", "quantize"},  # save/load a directory; RTN, GPTQ, QAT over a model
    {"hub"},                     # where models live; load one by name
    {"engine"},                  # scheduler, paged KV cache, model runner (vLLM's vocabulary)
    {"eval", "serve"},           # perplexity; the engine and the HTTP server
    {"commands"},                # the CLI subcommands
    {"cli"},
    {"__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def part_of(path: Path) -> str:
    """The top-level part of qrt a file belongs to: its folder, or its module name."""
    rel = path.relative_to(QRT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def module_name(path: Path, root: Path, package: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_qrt_module(name: str) -> bool:
    parts = name.split(".")
    return parts[0] == "qrt" and len(parts) > 1 and (
        QRT.joinpath(*parts[1:]).with_suffix(".py").is_file() or QRT.joinpath(*parts[1:]).is_dir())


def imported_names(source: str, here: str, is_pkg: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) for every import and qrt-module string in `source`, the text
    of module `here`; `from qrt import x` yields qrt.x when x is a submodule, else `qrt`."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = here.split(".") if is_pkg else here.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if is_qrt_module(sub) else base))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and is_qrt_module(node.value):
            out.append((node.lineno, node.value))
    return out


def file_imports(path: Path, root: Path, package: str) -> list[tuple[int, str]]:
    return imported_names(path.read_text(), module_name(path, root, package), path.name == "__init__.py")


def test_every_part_of_qrt_has_a_layer():
    parts = {part_of(p) for p in QRT.rglob("*.py") if p.name != "__init__.py" or p.parent != QRT}
    unplaced = sorted(parts - set(RANK))
    assert not unplaced, f"qrt/{unplaced}: not placed in LAYERS; put each new folder or module in the data flow"


def test_imports_point_down_the_data_flow():
    back = []
    for path in sorted(QRT.rglob("*.py")):
        if path == QRT / "__init__.py":
            continue  # the facade re-exports by name
        src = part_of(path)
        for line, name in file_imports(path, QRT, "qrt"):
            if name != "qrt" and not name.startswith("qrt."):
                continue
            dst = name.split(".")[1] if name != "qrt" else "the qrt facade"
            if dst == src:
                continue
            if dst not in RANK or RANK[dst] >= RANK[src]:
                back.append(f"{path.relative_to(QRT.parent)}:{line}: {src} imports {name} ({dst})")
    assert not back, "imports against the data flow (" + " -> ".join("/".join(sorted(s)) for s in LAYERS) + "):\n" \
        + "\n".join(back)


def test_kernels_import_nothing_from_qrt():
    found = [f"{p.relative_to(KERNELS.parent)}:{line}: {name}"
             for p in sorted(KERNELS.rglob("*.py"))
             for line, name in file_imports(p, KERNELS, "qrt_kernels")
             if name == "qrt" or name.startswith("qrt.")]
    assert not found, "kernels/ must not import qrt:\n" + "\n".join(found)


def test_the_scanner_sees_nested_relative_and_string_imports():
    src = ("def f():\n    from qrt.runtime.linear import QuantLinear\n"
           "from ..hub import resolve\nfrom qrt import serve\nREG = 'qrt.formats.gptq'\n")
    names = sorted(n for _, n in imported_names(src, "qrt.numerics.quant"))
    assert names == ["qrt.formats.gptq", "qrt.hub.resolve", "qrt.runtime.linear", "qrt.serve"]
