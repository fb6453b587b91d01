"""Local services for the demo, the tests and benchmarks: the CPU vLLM test bed and a Phoenix trace backend."""
