"""qrt's Triton kernels, installed as `qrt_kernels` (Hugging Face owns the name `kernels`).

Never imports qrt, transformers or nn.Module. `reference` holds a plain-torch twin of every
kernel; `dispatch` is the one place that picks a kernel by M, shape and device.
"""
