"""The quality table's configs (bench/quality_table.py): name -> (method, scheme, actorder[,
extra kwargs]). method: fp | rtn | gptq | sq | awq (qrt) | llmc | llmc-awq | llmc-sq
(llmcompressor in its own venv). Extra kwargs go to qrt.quantize.gptq_model.
gptq_quantize_model, except TRANSFORM_KEYS[method], which configure the SmoothQuant / AWQ
transform, and "gptq_clip", GPTQ's clipping search (gptq_quantize_model's clip).
"""
CONFIGS = {
    "fp32": ("fp", None, None),
    "w8a16-rtn": ("rtn", "w8a16", None),
    "w8a8-rtn": ("rtn", "w8a8", None),
    "w8a8-gptq-act": ("gptq", "w8a8", "weight"),
    "w4a8-rtn": ("rtn", "w4a8", None),
    "w4a16-g128-rtn": ("rtn", "w4a16", None),
    "w4a16-g128-gptq": ("gptq", "w4a16", None),
    "w4a16-g128-gptq-act": ("gptq", "w4a16", "weight"),
    "w4a16-g128-llmc-act": ("llmc", "w4a16", "weight"),
    "w4a16-g128-llmc": ("llmc", "w4a16", None),
    # llmcompressor's exact settings: it keeps float32 scales (qrt writes 16-bit ones)
    "w4a16-g128-gptq-act-fp32scale": ("gptq", "w4a16", "weight", {"scale_dtype": "float32"}),
    "w4a16-g128-gptq-static-fp32scale": ("gptq", "w4a16", None, {"scale_dtype": "float32", "static_groups": True}),
    "w4a16-g64-rtn": ("rtn", "w4a16-g64", None),
    "w4a16-g64-gptq": ("gptq", "w4a16-g64", None),
    "w4a16-g64-gptq-act": ("gptq", "w4a16-g64", "weight"),
    "w3a16-g64-rtn": ("rtn", "w3a16", None),
    "w3a16-g64-gptq-act": ("gptq", "w3a16", "weight"),
    "w2a16-g64-gptq-act": ("gptq", "w2a16", "weight"),
    # true 128-column groups (SmolLM2's 576-wide inputs end in a ragged 64-column group; qrt-only files)
    "w4a16-g128ragged-rtn": ("rtn", "w4a16", None, {"ragged_groups": True}),
    "w4a16-g128ragged-gptq-act": ("gptq", "w4a16", "weight", {"ragged_groups": True}),
    # run-to-run spread of GPTQ: the same config calibrated on other windows of the same text
    "w4a16-g128-gptq-act-seed1": ("gptq", "w4a16", "weight", {"seed": 1}),
    # activation-aware scales folded before rounding (qrt.quantize.smoothquant / awq)
    "w8a8-sq-rtn": ("sq", "w8a8", None, {"rounding": "rtn"}),
    "w8a8-sq-gptq-act": ("sq", "w8a8", "weight", {"rounding": "gptq"}),
    "w4a16-g128-awq-rtn": ("awq", "w4a16", None, {"rounding": "rtn"}),
    "w4a16-g128-awq-gptq-act": ("awq", "w4a16", "weight", {"rounding": "gptq"}),
    # cheaper AWQ for the shared 2-core box: 32 calibration windows, 4 of them in the grid loss
    "w4a16-g128-awq-rtn-n32": ("awq", "w4a16", None, {"rounding": "rtn", "nsamples": 32, "loss_windows": 4}),
    "w4a16-g128-awq-clip-rtn-n32": ("awq", "w4a16", None, {"rounding": "rtn", "nsamples": 32, "loss_windows": 4,
                                                            "clip": True}),
    "w4a16-g128-awq-clip-gptq-act-n32": ("awq", "w4a16", "weight", {"rounding": "gptq", "nsamples": 32,
                                                                     "loss_windows": 4, "clip": True}),
    "w4a16-g128-awq-gptq-act-n32": ("awq", "w4a16", "weight", {"rounding": "gptq", "nsamples": 32,
                                                                "loss_windows": 4}),
}
# SmoothQuant sweep on a quarter of the calibration (ranges only; picks alpha and mappings)
CONFIGS.update({f"w8a8-sq-rtn-n32-a{a}-{m}": ("sq", "w8a8", None, {"rounding": "rtn", "nsamples": 32, "alpha": a,
                                                                    "mappings": m})
                for a in (0.5, 0.65, 0.8) for m in ("norms", "all")})
CONFIGS.update({
    # like-for-like with llmcompressor's AWQModifier: 32 windows, every window in the grid loss, fp32 scales
    "w4a16-g128-awq-rtn-n32all-fp32scale": ("awq", "w4a16", None, {"rounding": "rtn", "nsamples": 32,
                                                                    "scale_dtype": "float32"}),
    "w4a16-g128-llmc-awq-rtn-n32": ("llmc-awq", "w4a16", None, {"nsamples": 32}),
    # the same pair on 8 x 512 calibration tokens (what the loaded shared box allowed)
    "w4a16-g128-awq-rtn-n8all-fp32scale": ("awq", "w4a16", None, {"rounding": "rtn", "nsamples": 8,
                                                                   "scale_dtype": "float32"}),
    "w4a16-g128-llmc-awq-rtn-n8": ("llmc-awq", "w4a16", None, {"nsamples": 8}),
    "w4a16-g128-llmc-awq-gptq-act-n32": ("llmc-awq", "w4a16", "weight", {"nsamples": 32, "rounding": "gptq"}),
    # llmcompressor's SmoothQuantModifier + its round to nearest / GPTQ, W8A8 (per-token int8 activations)
    "w8a8-llmc-sq-rtn": ("llmc-sq", "w8a8", None, {"alpha": 0.5}),
    "w8a8-llmc-sq-gptq-act": ("llmc-sq", "w8a8", "weight", {"alpha": 0.5, "rounding": "gptq"}),
    # SmoothQuant in front of FP8 W8A8 (issue 15's +1% target); the weights round to nearest
    "fp8-rtn": ("rtn", "fp8", None),
    "fp8-w-rtn": ("rtn", "fp8-w", None),
    "fp8-sq-rtn": ("sq", "fp8", None, {"rounding": "rtn"}),
    "fp8-sq-rtn-n32": ("sq", "fp8", None, {"rounding": "rtn", "nsamples": 32}),
    # GPTQ with an FP8 quantizer (RTN's per-channel scales, act order as the int rows)
    "fp8-gptq-act": ("gptq", "fp8", "weight"),
    "fp8-w-gptq-act": ("gptq", "fp8-w", "weight"),
    "fp8-sq-gptq-act": ("sq", "fp8", "weight", {"rounding": "gptq"}),
})
CONFIGS.update({
    # GPTQ whose static group scales come from Hessian-aware clipped weights (gptq_quantize_model's clip)
    "w4a16-g128-gptq-act-clip": ("gptq", "w4a16", "weight", {"clip": True}),
    "w4a16-g128-awq-gptq-act-clip": ("awq", "w4a16", "weight", {"rounding": "gptq", "gptq_clip": True,
                                                                 "loss_windows": 16}),
    # the same with 4 windows in AWQ's grid loss (a quarter of its cost)
    "w4a16-g128-awq-gptq-act-clip-lw4": ("awq", "w4a16", "weight", {"rounding": "gptq", "gptq_clip": True,
                                                                     "loss_windows": 4}),
    # SmoothQuant with alpha searched per mapping and block (SmoothQuantConfig.search), all mappings
    "w8a8-sq-search-rtn": ("sq", "w8a8", None, {"rounding": "rtn", "mappings": "all", "search": True}),
    "w8a8-sq-search-gptq-act": ("sq", "w8a8", "weight", {"rounding": "gptq", "mappings": "all", "search": True}),
    # the same search on a 6-point grid (alpha step 0.2) and 2 windows in the loss: ~1/8 of its cost
    "w8a8-sq-search6x2-rtn": ("sq", "w8a8", None, {"rounding": "rtn", "mappings": "all", "search": True,
                                                    "grid": 6, "loss_windows": 2}),
    "fp8-sq-search-rtn": ("sq", "fp8", None, {"rounding": "rtn", "mappings": "all", "search": True}),
    "fp8-sq-search-gptq-act": ("sq", "fp8", "weight", {"rounding": "gptq", "mappings": "all", "search": True}),
    # the best FP8 W8A8 row on other calibration draws (seed of the 128 windows): its spread
    **{f"fp8-sq-search-gptq-act-seed{k}": ("sq", "fp8", "weight", {"rounding": "gptq", "mappings": "all",
                                                                   "search": True, "seed": k}) for k in (1, 2)},
    # FP4 weight-only: round to nearest and GPTQ with an e2m1 quantizer on RTN's group scales
    "nvfp4a16-rtn": ("rtn", "nvfp4a16", None),
    "mxfp4a16-rtn": ("rtn", "mxfp4a16", None),
    "nvfp4a16-gptq-act": ("gptq", "nvfp4a16", "weight"),
    "mxfp4a16-gptq-act": ("gptq", "mxfp4a16", "weight"),
})
# AWQ + GPTQ + clip within the 10-minute budget: self_attn's grid loss on `lw` windows, the MLP's
# on `tokens` sampled from every window (AWQConfig.loss_tokens), `grid` points, searched whole or
# refined from every `refine`-th point (AWQConfig.refine)
CONFIGS.update({f"w4a16-g128-awq-gptq-act-clip-lw{lw}t{tokens // 1024}k-g{grid}" + (f"r{refine}" if refine else ""): (
    "awq", "w4a16", "weight", {"rounding": "gptq", "gptq_clip": True, "loss_windows": lw, "loss_tokens": tokens,
                               "n_grid": grid, "refine": refine})
    for lw, tokens, grid, refine in ((8, 4096, 10, None), (16, 4096, 6, None), (16, 2048, 10, None),
                                     (16, 4096, 8, None), (16, 2048, 20, 3), (16, 2048, 14, 3))})
TRANSFORM_KEYS = {"sq": ("alpha", "mappings", "search", "grid", "loss_windows"),
                  "awq": ("n_grid", "duo_scaling", "loss_windows", "loss_tokens", "refine", "clip")}
CONFIGS_METHOD = {"llmc-awq": "awq", "llmc-sq": "smoothquant"}
