"""The checkpoint directory: save (atomic, sharded), load (meta skeleton -> swap -> assign),
shards, info."""
