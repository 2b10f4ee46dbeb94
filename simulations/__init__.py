"""The simulation harness: tier profiles, the virtual clock, and comparison reports."""
