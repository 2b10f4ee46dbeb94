"""Maestro-FL server: the ServerApp, its strategy, reply validation and nested aggregation."""
