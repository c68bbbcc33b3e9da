//go:build !race

package estuite_test

// simDefaultSeeds is TestSimulation's default number of seeds (see race_on_test.go).
const simDefaultSeeds = 500
