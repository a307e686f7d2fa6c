"""Text that calibrates and evaluates: the packaged WikiText-2 splits and token windows."""
