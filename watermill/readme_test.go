package watermill_test

import (
	"os"
	"strings"
	"testing"
)

// The README's "Watermill" code is the package Example's: every line of it appears in
// example_test.go, so the README shows code that compiles and runs.
func TestREADMEWatermillExampleIsInTheExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Watermill\n")
	if !ok {
		t.Fatal(`README.md has no section "Watermill"`)
	}
	_, code, ok := strings.Cut(section, "```go\n")
	code, _, ok2 := strings.Cut(code, "```")
	if !ok || !ok2 {
		t.Fatal(`the README's "Watermill" section has no Go code`)
	}
	have := make(map[string]bool)
	for line := range strings.Lines(string(examples)) {
		have[strings.TrimSpace(line)] = true
	}
	for line := range strings.Lines(code) {
		if line = strings.TrimSpace(line); line != "" && !have[line] {
			t.Errorf("README line not in example_test.go: %s", line)
		}
	}
}

// CI runs the README's test command, this module's tests included: .ci/run ends with the same
// text as the command the README shows after `npm ci && `.
func TestCIRunsTheREADMECommand(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	run, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var command string
	for line := range strings.Lines(string(readme)) {
		if after, ok := strings.CutPrefix(strings.TrimSpace(line), "npm ci && "); ok {
			command = after
			break
		}
	}
	if !strings.Contains(command, "(cd watermill && go vet ./... && go test -race") {
		t.Fatalf("the README's test command does not run this module's tests: %q", command)
	}
	lines := strings.Split(strings.TrimSpace(string(run)), "\n")
	if last := lines[len(lines)-1]; last != command {
		t.Fatalf(".ci/run ends with\n\t%s\nthe README's command is\n\t%s", last, command)
	}
}
