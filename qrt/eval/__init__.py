"""Evaluation: perplexity and the text it runs on."""
