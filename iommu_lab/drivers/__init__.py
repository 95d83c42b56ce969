"""Layer 2, drivers: one module per kernel driver; each fills an ops table per kernel era."""
