package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchCommandOnTheEmbeddedStore(t *testing.T) {
	dir := t.TempDir()
	chart := filepath.Join(dir, "cost.svg")
	out, code := estuiteCLI(t, "bench", "--scale", "0.01", "--workloads", "append-1,append-10,projection", "--json", "--chart", chart)
	if code != 0 {
		t.Fatalf("bench exited %d", code)
	}
	var report struct {
		Prices    struct{ Date string }
		Workloads []struct {
			Result struct {
				EventsWritten int64
				Requests      struct{ Write struct{ Batches int64 } }
			}
			Cost struct {
				WritePerMillion float64 `json:"writtenAndDispatchedPerMillionEvents"`
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if report.Prices.Date == "" || len(report.Workloads) != 3 {
		t.Fatalf("report: %+v", report)
	}
	for _, w := range report.Workloads {
		if w.Result.EventsWritten == 0 || w.Result.Requests.Write.Batches == 0 || w.Cost.WritePerMillion <= 0 {
			t.Errorf("workload: %+v", w)
		}
	}
	svg, err := os.ReadFile(chart)
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("chart: %v", err)
	}

	// Bad input is a usage error; a broken price file is a clear failure.
	if _, code := estuiteCLI(t, "bench", "--workloads", "nope"); code != 2 {
		t.Errorf("unknown workload: exit %d, want 2", code)
	}
	bad := filepath.Join(dir, "prices.json")
	os.WriteFile(bad, []byte(`{"date":"x"}`), 0o600)
	if _, code := estuiteCLI(t, "bench", "--scale", "0.01", "--prices", bad); code != 1 {
		t.Errorf("bad price file: exit %d, want 1", code)
	}
	if out, code := estuiteCLI(t, "bench", "--list"); code != 0 || !strings.Contains(out, "full-path") {
		t.Errorf("--list: exit %d\n%s", code, out)
	}
}
