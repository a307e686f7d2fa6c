"""quant_method -> layer reader module. Each reader module provides
`is_quantized_layer(prefix, tensor_names) -> bool` and
`read_layer(get_tensor, prefix, quant_config, in_features, out_features)
   -> (QuantScheme, {QuantLinear buffer name: tensor})`."""
from __future__ import annotations

import importlib

READERS = {"compressed-tensors": "qrt.formats.compressed_tensors",
           "gptq": "qrt.formats.gptq",
           "awq": "qrt.formats.awq"}


def reader_for(quant_config: dict):
    """The reader module for a config.json `quantization_config`."""
    if not isinstance(quant_config, dict):
        raise ValueError(f"quantization_config: expected a JSON object, found {type(quant_config).__name__}")
    method = quant_config.get("quant_method")
    if method not in READERS:
        raise ValueError(f"quantization_config.quant_method: expected one of {sorted(READERS)}, found {method!r}")
    try:
        return importlib.import_module(READERS[method])
    except ModuleNotFoundError as e:
        raise ValueError(f"quant_method {method!r} is not supported by this qrt build ({e})") from None
