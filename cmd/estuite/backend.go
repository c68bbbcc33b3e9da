package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	berrors "go.etcd.io/bbolt/errors"
)

// backendFlags select the storage every command works on: the embedded store in a directory,
// or Azure Table Storage (Azure, Azurite, Cosmos DB Table API) when a connection string is given.
type backendFlags struct {
	data        string
	dataSet     bool
	azureConn   string
	tablePrefix string
}

func (b *backendFlags) register(fs *flag.FlagSet) {
	fs.Func("data", "directory of the embedded store (default ./estuite-data)", func(v string) error {
		b.data, b.dataSet = v, true
		return nil
	})
	// The environment's value is the default, but not shown as one by --help: it holds a key.
	b.azureConn = os.Getenv("AZURE_STORAGE_CONNECTION_STRING")
	fs.Func("azure-connection-string", "use Azure Table Storage with this connection string (default $AZURE_STORAGE_CONNECTION_STRING;\n"+
		"prefer it: a flag shows in the process list)", func(v string) error {
		b.azureConn = v
		return nil
	})
	fs.StringVar(&b.tablePrefix, "table-prefix", estuite.DefaultTablePrefix, "prefix of the table names")
}

// embedded reports whether the flags select the embedded store.
func (b *backendFlags) embedded() bool { return b.azureConn == "" }

// describe names the selected backend for logs and messages.
func (b *backendFlags) describe() string {
	if b.embedded() {
		return "embedded store in " + b.dir()
	}
	return "Azure Table Storage (tables " + b.tablePrefix + "streams, " + b.tablePrefix + "events)"
}

func (b *backendFlags) dir() string {
	if b.dataSet {
		return b.data
	}
	return "estuite-data"
}

// open opens the store the flags select. Selecting both backends is an error, never a guess.
func (b *backendFlags) open(ctx context.Context) (*estuite.Store, error) {
	if b.dataSet && b.azureConn != "" {
		return nil, usagef("--data selects the embedded store and a connection string selects Azure: choose one")
	}
	var backend table.Backend
	if b.embedded() {
		if err := checkPrivate(b.dir(), "estuite.db", instanceFile); err != nil {
			return nil, err
		}
		path := filepath.Join(b.dir(), "estuite.db")
		bb, err := bolt.Open(path, &bolt.Options{Timeout: 2 * time.Second})
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%s is in use by another process (a running `estuite serve`?): stop it, or use its HTTP API", path)
		}
		if err != nil {
			return nil, err
		}
		backend = bb
	} else {
		ab, err := azure.Open(b.azureConn, nil)
		if err != nil {
			return nil, err
		}
		backend = ab
	}
	store, err := estuite.Open(ctx, backend, &estuite.Options{TablePrefix: b.tablePrefix})
	if err != nil {
		backend.Close()
		return nil, fmt.Errorf("opening the %s: %w", b.describe(), err)
	}
	return store, nil
}

// checkPrivate refuses an embedded store whose directory, or one of whose files, others than its
// owner (group or others) may write to: they could replace or corrupt the store, or the
// instance ID that the dispatcher lease relies on. What does not exist yet is fine: the folder and
// the store file are created private (0700, 0600), the instance ID 0644. On Windows, where modes
// say nothing about this, nothing is checked.
func checkPrivate(dir string, files ...string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	paths := []string{dir}
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			return fmt.Errorf("%s is writable by its group or others (mode %04o): whoever can write it can replace the store; make it private: chmod go-w %s",
				p, perm, p)
		}
	}
	return nil
}
