"""Inputs (layer 3): the one operation format (``Op``), seeded workloads, CSV, and traces."""
