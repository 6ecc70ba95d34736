"""Benchmarks behind the speed and memory targets; `make bench` runs them and appends to BENCHMARKS.md."""
