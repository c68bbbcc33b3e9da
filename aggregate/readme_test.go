package aggregate_test

import (
	"os"
	"strings"
	"testing"
)

// The README's "Aggregates" example is the package Example: every line of its code appears in
// example_test.go, so the README shows code that compiles and runs.
func TestREADMEAggregatesExampleIsInTheExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Aggregates\n")
	if !ok {
		t.Fatal(`README.md has no section "Aggregates"`)
	}
	_, code, ok := strings.Cut(section, "```go\n")
	code, _, ok2 := strings.Cut(code, "```")
	if !ok || !ok2 {
		t.Fatal(`the README's "Aggregates" section has no Go code`)
	}
	have := make(map[string]bool)
	for line := range strings.Lines(string(examples)) {
		have[strings.TrimSpace(line)] = true
	}
	for line := range strings.Lines(code) {
		line = strings.TrimSpace(line)
		if comment := strings.Index(line, " // "); comment > 0 && !have[line] {
			line = strings.TrimSpace(line[:comment]) // an output shown as a comment
		}
		if line != "" && !have[line] {
			t.Errorf("README line not in example_test.go: %s", line)
		}
	}
}
