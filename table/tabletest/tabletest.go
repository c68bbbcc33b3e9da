// Package tabletest is the conformance suite of the table contract. Every backend runs it with
// one short test:
//
//	func TestConformance(t *testing.T) {
//		tabletest.Run(t, tabletest.Harness{NewTable: func(t *testing.T) table.Table { ... }})
//	}
package tabletest

import (
	"testing"

	"github.com/estuite/estuite/table"
)

// Harness gives the suite fresh tables of the backend under test.
type Harness struct {
	// NewTable returns a new, empty table; it is called once per subtest.
	NewTable func(t *testing.T) table.Table
}

// Run runs the whole conformance suite against the backend of h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	// TODO: filled in by the conformance suite work.
}
