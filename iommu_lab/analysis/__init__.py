"""Layer 4, analysis: caller patterns, the run engine (with its compact path), compare()."""
