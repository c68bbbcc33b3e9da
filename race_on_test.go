//go:build race

package estuite_test

// simDefaultSeeds is TestSimulation's default number of seeds. Under the race detector a seed
// costs about four times as much; the README's test command runs the 500 seeds once more
// without it, so that CI sees every schedule and the race detector sees a fifth of them.
const simDefaultSeeds = 100
