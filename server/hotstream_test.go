package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// A hot stream: 32 HTTP clients appending with expected version "any" to one stream of one
// server. The server's appends to one stream queue and share batches instead of racing for the
// head, so none of them is answered with a 5xx, and the stream holds every append exactly once.
func TestHotStreamAppendsAllLandOnce(t *testing.T) {
	azurite := backendCase{"azurite", func(t *testing.T) (table.Backend, *mem.Backend) {
		b, err := azure.Open(azuritetest.ConnectionString(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return b, nil
	}}
	// The embedded store as it is served: with fsync, so that appends take long enough to overlap.
	embedded := backendCase{"bolt", func(t *testing.T) (table.Backend, *mem.Backend) {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return b, nil
	}}
	for _, bc := range []backendCase{embedded, azurite} {
		t.Run(bc.name, func(t *testing.T) {
			var opts []harnessOption
			if bc.name == "azurite" {
				prefix := azuritetest.NewTableName(t)
				if len(prefix) > 50 {
					prefix = "t" + prefix[len(prefix)-49:]
				}
				opts = append(opts, withStoreOptions(&estuite.Options{TablePrefix: prefix}))
			}
			h := newHarnessOn(t, bc, opts...)
			clients, each := 32, 25
			if bc.name == "azurite" {
				each = 8
			}
			type answer struct {
				commit string
				status int
				res    appendResult
				body   string
			}
			answers := make(chan answer, clients*each)
			var wg sync.WaitGroup
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						commit := fmt.Sprintf("client%d-%d", c, i)
						body, _ := json.Marshal(map[string]any{
							"expectedVersion": "any",
							"commitId":        commit,
							"events":          []map[string]any{{"type": "Hot", "data": map[string]any{"client": c, "i": i}}},
						})
						res, err := http.Post(h.ts.URL+streamPath("hot"), "application/json", bytes.NewReader(body))
						if err != nil {
							t.Error(err)
							return
						}
						b, _ := io.ReadAll(res.Body)
						res.Body.Close()
						a := answer{commit: commit, status: res.StatusCode, body: string(b)}
						if res.StatusCode == http.StatusCreated {
							if err := json.Unmarshal(b, &a.res); err != nil {
								t.Error(err)
							}
						}
						answers <- a
					}
				}()
			}
			wg.Wait()
			close(answers)
			var landed []answer
			for a := range answers {
				if a.status != http.StatusCreated {
					t.Errorf("append %s: status %d: %s", a.commit, a.status, a.body)
					continue
				}
				landed = append(landed, a)
			}
			if t.Failed() {
				return
			}
			sort.Slice(landed, func(i, j int) bool { return landed[i].res.FirstVersion < landed[j].res.FirstVersion })
			r, err := h.store.Read(context.Background(), "hot", nil)
			if err != nil {
				t.Fatal(err)
			}
			var commits []string
			for ev, err := range r.Events {
				if err != nil {
					t.Fatal(err)
				}
				commits = append(commits, ev.CommitID)
			}
			if len(commits) != clients*each {
				t.Fatalf("the stream holds %d events; %d appends were made", len(commits), clients*each)
			}
			for i, a := range landed {
				if a.res.FirstVersion != int64(i+1) || a.res.LastVersion != int64(i+1) || commits[i] != a.commit {
					t.Fatalf("append %s answered versions %d-%d; version %d holds %s", a.commit, a.res.FirstVersion, a.res.LastVersion, i+1, commits[i])
				}
			}
		})
	}
}
