//go:build race

package faultserver

// raceEnabled lets allocation tests skip under -race, which allocates.
const raceEnabled = true
