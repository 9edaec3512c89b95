//go:build !race

// Package testenv tells tests about the build they run in.
package testenv

// RaceEnabled reports whether the race detector is on; it adds allocations,
// so allocation counts are only asserted without it.
const RaceEnabled = false
