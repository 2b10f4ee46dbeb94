"""What the Flower apps share: run config, method registry, wire protocol, codec, tiers, files."""
