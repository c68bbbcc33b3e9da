package bolt

import (
	"testing"

	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/tabletest"
)

func TestConformance(t *testing.T) {
	tabletest.Run(t, tabletest.Harness{NewTable: func(t *testing.T) table.Table {
		b, _ := openTest(t)
		return openTable(t, b, "conformance")
	}})
}
