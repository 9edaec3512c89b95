// Package bench compares httpretry with other Go retry and resilience
// libraries. It is its own module so that the main module never depends on
// them; everything here is benchmarks and the tests that keep them honest.
// See README.md for what each benchmark measures and the latest results.
package bench
