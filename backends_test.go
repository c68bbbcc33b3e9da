package estuite_test

import (
	"path/filepath"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

func init() {
	backends = append(backends,
		backendCase{"bolt", func(t *testing.T) *estuite.Store {
			b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			return openStore(t, b, nil)
		}},
		backendCase{"azurite", func(t *testing.T) *estuite.Store {
			b, err := azure.Open(azuritetest.ConnectionString(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			return openStore(t, b, &estuite.Options{TablePrefix: uniquePrefix(t)})
		}},
	)
}

// uniquePrefix returns a table prefix no other test uses, short enough for "streams" to follow.
func uniquePrefix(t testing.TB) string {
	name := azuritetest.NewTableName(t)
	if max := 63 - len("streams") - 1; len(name) > max {
		name = name[len(name)-max:]
	}
	return "t" + name
}
