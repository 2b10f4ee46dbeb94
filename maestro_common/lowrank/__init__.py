"""The method library: nested low-rank factored layers and what acts on them (Maestro)."""
