"""The shared vocabulary every layer speaks: messages, hooks, the session store port and
the attention vocabulary. It imports nothing of Loom's but errors and signals."""
