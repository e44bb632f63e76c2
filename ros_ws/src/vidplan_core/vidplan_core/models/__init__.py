"""World model core (autoencoder, world model, flow map, heads, semantic reward)."""
