package azuritetest

import (
	"strings"
	"testing"

	"github.com/estuite/estuite/table"
)

func TestNewTableNameIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		name := NewTableName(t)
		if err := table.ValidateTableName(name); err != nil {
			t.Fatal(err)
		}
		if seen[name] {
			t.Fatalf("%s returned twice", name)
		}
		seen[name] = true
	}
	t.Run(strings.Repeat("a_very-long/subtest name ", 10), func(t *testing.T) {
		if err := table.ValidateTableName(NewTableName(t)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWellKnownConnectionString(t *testing.T) {
	want := "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
	if got := WellKnownConnectionString(10002); got != want {
		t.Errorf("got %s", got)
	}
}
