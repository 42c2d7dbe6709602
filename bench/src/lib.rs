//! Benchmarks for Sluice: criterion micro-benchmarks (`benches/`) and the load generator.
