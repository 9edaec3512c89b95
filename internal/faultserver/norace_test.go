//go:build !race

package faultserver

const raceEnabled = false
