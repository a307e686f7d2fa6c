"""Where models live (a local directory, the local Hugging Face cache, the embedded
SmolLM2) and loading one by name."""
