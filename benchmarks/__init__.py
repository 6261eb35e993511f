"""Benchmarks (quality, speed, HTTP throughput, overload); run each from the repository
root as ``python -m benchmarks.<name>``. Never installed, never imported by the library."""
