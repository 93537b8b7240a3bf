"""Commands built on the rest: plan, benchmarks and the demo."""
