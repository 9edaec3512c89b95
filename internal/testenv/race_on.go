//go:build race

package testenv

// RaceEnabled reports whether the race detector is on; it adds allocations,
// so allocation counts are only asserted without it.
const RaceEnabled = true
