"""qrt's Triton kernels, installed as `qrt_kernels` (Hugging Face owns the name `kernels`).

Never imports qrt, transformers or nn.Module. `reference` holds a plain-torch twin of every
kernel; `dispatch` is the one place that picks a kernel by M, shape and device; `ops`
registers the public entry points as torch custom ops (torch.ops.qrt.*); every launch goes
through `launch.launch`, so bench/gpu_static.py can capture and compile them for sm_90.
"""
