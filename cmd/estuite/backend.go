package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.opentelemetry.io/otel/trace"
)

// backendFlags select the storage every command works on: the embedded store in a directory,
// or Azure Table Storage (Azure, Azurite, Cosmos DB Table API) when a connection string is given.
type backendFlags struct {
	data        string
	dataSet     bool
	azureConn   string
	tablePrefix string

	masterKeyFile string        // --master-key-file; else $ESTUITE_MASTER_KEY
	previousKeys  []string      // --previous-master-key-file, repeated
	keyCache      time.Duration // --key-cache: Options.KeyCacheLifetime
	feedShards    int           // --feed-shards: Options.FeedShards
	wrapped       bool          // open found a master key
	serving       bool          // the command is serve: a locked store is another server's, not one to go through
	// tracerProvider is Options.TracerProvider (nil: no tracing); set by serve.
	tracerProvider trace.TracerProvider
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
	fs.StringVar(&b.masterKeyFile, "master-key-file", "", "read the master key that wraps subjects' data keys from this `file`: 32 bytes in standard\n"+
		"base64, e.g. from openssl rand -base64 32 (default $ESTUITE_MASTER_KEY; none: data keys are stored unwrapped)")
	fs.Func("previous-master-key-file", "while rotating the master key: a `file` with a master key that wrapped data keys before\n"+
		"--master-key-file's (repeat for several); used to unwrap, never to wrap (see estuite rewrap-keys)", func(v string) error {
		b.previousKeys = append(b.previousKeys, v)
		return nil
	})
	fs.IntVar(&b.feedShards, "feed-shards", 0, "feed shards of a new store (default: what the store has; a new one gets 1): a store's count never changes")
	fs.DurationVar(&b.keyCache, "key-cache", estuite.DefaultKeyCacheLifetime, "how long a subject's data key is used from memory before it is read again:\n"+
		"the longest this process goes on decrypting a subject another process forgot")
}

// masterKey returns the master key from --master-key-file, else $ESTUITE_MASTER_KEY; nil for none.
func (b *backendFlags) masterKey() ([]byte, error) {
	if b.masterKeyFile != "" {
		return readMasterKey(b.masterKeyFile, "--master-key-file")
	}
	return parseMasterKey(os.Getenv(masterKeyEnv), "$"+masterKeyEnv, false)
}

// previousMasterKeys reads the --previous-master-key-file files.
func (b *backendFlags) previousMasterKeys() ([][]byte, error) {
	var keys [][]byte
	for _, file := range b.previousKeys {
		k, err := readMasterKey(file, "--previous-master-key-file")
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// readMasterKey reads a master key from the file a flag names.
func readMasterKey(file, flagName string) ([]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the master key: %w", err)
	}
	return parseMasterKey(string(data), flagName+" "+file, true)
}

// parseMasterKey decodes a master key in base64 from where it was found (from). An empty text is
// no key, unless it came from a file.
func parseMasterKey(text, from string, fromFile bool) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		if fromFile {
			return nil, usagef("%s: the file is empty", from)
		}
		return nil, nil
	}
	key, err := base64.StdEncoding.Strict().DecodeString(text)
	if err != nil || len(key) != 32 {
		// Never the key itself in the message.
		return nil, usagef("%s: the master key must be 32 bytes in standard base64 (44 characters), e.g. from `openssl rand -base64 32`", from)
	}
	return key, nil
}

// masterKeyEnv is the environment variable that holds the master key when no file is given.
const masterKeyEnv = "ESTUITE_MASTER_KEY"

// embedded reports whether the flags select the embedded store.
func (b *backendFlags) embedded() bool { return b.azureConn == "" }

// describe names the selected backend for logs and messages.
func (b *backendFlags) describe() string {
	if b.embedded() {
		return "embedded store in " + b.dir()
	}
	return "Azure Table Storage (tables " + b.tablePrefix + "streams, " + b.tablePrefix + "events, " + b.tablePrefix + "keys)"
}

func (b *backendFlags) dir() string {
	if b.dataSet {
		return b.data
	}
	return "estuite-data"
}

// openExisting opens the store the flags select for a command that only reads (or repairs what
// is there): an embedded store's folder that holds no store is an error that says so, and no
// store is created in it (a mistyped --data would otherwise report an empty store as healthy).
func (b *backendFlags) openExisting(ctx context.Context) (*estuite.Store, error) {
	if b.embedded() {
		path := filepath.Join(b.dir(), "estuite.db")
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no store in %s (%s does not exist): check --data; this command never creates one", b.dir(), path)
		}
	}
	return b.open(ctx)
}

// open opens the store the flags select. Selecting both backends is an error, never a guess.
func (b *backendFlags) open(ctx context.Context) (*estuite.Store, error) {
	if b.dataSet && b.azureConn != "" {
		return nil, usagef("--data selects the embedded store and a connection string selects Azure: choose one")
	}
	master, err := b.masterKey()
	if err != nil {
		return nil, err
	}
	b.wrapped = master != nil
	previous, err := b.previousMasterKeys()
	if err != nil {
		return nil, err
	}
	if len(previous) > 0 && master == nil {
		return nil, usagef("--previous-master-key-file needs the new master key too (--master-key-file or $%s)", masterKeyEnv)
	}
	var backend table.Backend
	if b.embedded() {
		if err := checkPrivate(b.dir(), "estuite.db", instanceFile); err != nil {
			return nil, err
		}
		path := filepath.Join(b.dir(), "estuite.db")
		bb, err := bolt.Open(path, &bolt.Options{Timeout: 2 * time.Second})
		if errors.Is(err, berrors.ErrTimeout) && b.serving {
			return nil, fmt.Errorf("%s is in use by another process (another `estuite serve`?): one embedded store has one server", path)
		}
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%s is in use by another process (a running `estuite serve`?): go through it with --server http://%s\n"+
				"(its address, if it listens elsewhere: see its --addr; and --token-file or $ESTUITE_TOKEN if it has a token), or stop it", path, DefaultAddr)
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
	store, err := estuite.Open(ctx, backend, &estuite.Options{TablePrefix: b.tablePrefix, MasterKey: master, PreviousMasterKeys: previous, KeyCacheLifetime: b.keyCache, FeedShards: b.feedShards, TracerProvider: b.tracerProvider})
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
