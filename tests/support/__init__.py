"""What the tests and the benchmarks share: the stack launcher, ports, waits, payloads."""
