"""Package discovery only (metadata lives in pyproject.toml): every package under qrt/,
and kernels/ installed under the import name `qrt_kernels`."""
from setuptools import find_packages, setup

kernel_pkgs = ["qrt_kernels" + p[len("kernels"):] for p in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=find_packages(include=["qrt", "qrt.*"]) + kernel_pkgs,
    package_dir={"qrt_kernels": "kernels"},
)
