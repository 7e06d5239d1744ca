"""Support for tests, benchmarks and docs: real third-party components, tiny models, cost counters (never imported by
the extension at run time)."""
