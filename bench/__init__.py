"""The gateway benchmark harness: ``make bench`` runs :mod:`bench.run_bench` (see README.md)."""
