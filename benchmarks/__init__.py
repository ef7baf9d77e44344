"""piggyback measured against the field: ``python -m benchmarks.run``; see README.md."""
