// Package azuritetest gives tests a running Azurite table service (the Azure Storage emulator).
//
// A test package that needs Azurite declares
//
//	func TestMain(m *testing.M) { azuritetest.Main(m) }
//
// and calls ConnectionString in its tests. The service is found in this order:
//
//  1. the connection string in the environment variable ESTUITE_AZURITE_CONNECTION_STRING;
//  2. node_modules/.bin/azurite-table in the repository root (installed by `npm ci`), started
//     once per test binary on a free loopback port with in-memory storage, and stopped by Main.
//
// When neither works the test is skipped, or fails when the environment variable CI is set:
// Azure tests must never pass silently in CI.
package azuritetest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// EnvConnectionString names the environment variable that points the tests at a running
// Azurite (or Azure) table service instead of starting one.
const EnvConnectionString = "ESTUITE_AZURITE_CONNECTION_STRING"

// AccountKey is the well-known key of Azurite's devstoreaccount1.
const AccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// WellKnownConnectionString returns Azurite's well-known connection string for a table
// service listening on 127.0.0.1:port.
func WellKnownConnectionString(port int) string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + AccountKey +
		";TableEndpoint=http://127.0.0.1:" + strconv.Itoa(port) + "/devstoreaccount1;"
}

var (
	once     sync.Once
	connStr  string
	startErr error
	proc     *exec.Cmd
	exited   chan error // receives proc's exit
	dataDir  string
)

// Main runs the tests of m and stops the Azurite that ConnectionString started, if any. Call it
// from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	stop()
	os.Exit(code)
}

// ConnectionString returns a connection string to a running Azurite table service, starting one
// on first use. See the package documentation.
func ConnectionString(tb testing.TB) string {
	tb.Helper()
	if s := os.Getenv(EnvConnectionString); s != "" {
		return s
	}
	once.Do(func() { connStr, startErr = start() })
	if startErr != nil {
		msg := fmt.Sprintf("Azurite is not available: %v.\n"+
			"To run the Azure Table Storage tests, run `npm ci` in the repository root (installs Azurite 3.35.0),\n"+
			"or set %s to the connection string of a running Azurite table service.", startErr, EnvConnectionString)
		if os.Getenv("CI") != "" {
			tb.Fatal(msg)
		}
		tb.Skip("SKIPPING AZURE TESTS: " + msg)
	}
	return connStr
}

var tableCounter atomic.Int64

// NewTableName returns a table name that no other call in any test binary has returned: letters
// and digits, at most 63 characters, starting with a letter.
func NewTableName(tb testing.TB) string {
	tb.Helper()
	var clean strings.Builder
	for _, r := range tb.Name() {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			clean.WriteRune(r)
		}
	}
	suffix := fmt.Sprintf("%x%x%d", time.Now().UnixNano()&0xffffffffff, os.Getpid()&0xffff, tableCounter.Add(1))
	prefix := "t" + clean.String()
	if max := 63 - len(suffix); len(prefix) > max {
		prefix = prefix[:max]
	}
	return prefix + suffix
}

// start launches azurite-table from the repository's node_modules and waits until it listens.
func start() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "node_modules", ".bin", "azurite-table")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s not found", bin)
	}
	dir, err := os.MkdirTemp("", "azurite")
	if err != nil {
		return "", err
	}
	dataDir = dir
	// Azurite cannot be told to pick a port itself, so take a free one and hand it over; retry in
	// the unlikely case that someone else grabs it in between.
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		logPath := filepath.Join(dir, "output.log")
		logFile, err := os.Create(logPath)
		if err != nil {
			return "", err
		}
		cmd := exec.Command(bin, "--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(port),
			"--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent")
		cmd.Dir = dir
		cmd.Stdout = logFile
		cmd.Stderr = logFile
		cmd.SysProcAttr = sysProcAttr()
		err = cmd.Start()
		logFile.Close()
		if err != nil {
			return "", fmt.Errorf("starting %s: %w", bin, err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		if err := waitListening(port, done); err != nil {
			_ = cmd.Process.Kill()
			if attempt < 2 {
				continue
			}
			out, _ := os.ReadFile(logPath)
			return "", fmt.Errorf("%s did not start: %v; output:\n%s", bin, err, out)
		}
		proc, exited = cmd, done
		return WellKnownConnectionString(port), nil
	}
	panic("unreachable")
}

func waitListening(port int, exited <-chan error) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("timed out after 30s")
}

func stop() {
	if proc != nil {
		_ = proc.Process.Kill()
		<-exited
	}
	if dataDir != "" {
		_ = os.RemoveAll(dataDir)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory")
		}
		dir = parent
	}
}
