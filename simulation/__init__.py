"""The simulated workforce and sample-data generators (demo, tests, bench). Never imported by flows."""
