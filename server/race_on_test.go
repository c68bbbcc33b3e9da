//go:build race

package server_test

// raceEnabled: the race detector instruments allocations too, so allocation bounds allow more.
const raceEnabled = true
