"""The Maestro-FL ClientApp: trains its tier's rank prefix of the global model."""
