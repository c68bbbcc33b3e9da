package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/aggregate"
	"github.com/estuite/estuite/internal/azuritetest"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
	"github.com/estuite/estuite/table/mem"
)

// The test domain: a bank account.

type Opened struct{ Owner string }
type Deposited struct{ Amount int }
type Withdrawn struct{ Amount int }

type accountState struct {
	Owner    string
	Open     bool
	Balance  int
	Deposits int
	Amounts  []int
	ByAmount map[int]int
}

type account struct {
	aggregate.Base
	State accountState
	// applied counts the events folded in, snapshot or not: a test of what a load decoded.
	applied int
}

func newAccount() *account { return &account{} }

func (a *account) Apply(event any) {
	a.applied++
	switch e := event.(type) {
	case Opened:
		a.State.Owner, a.State.Open = e.Owner, true
	case Deposited:
		a.State.Balance += e.Amount
		a.State.Deposits++
		a.State.Amounts = append(a.State.Amounts, e.Amount)
		if a.State.ByAmount == nil {
			a.State.ByAmount = make(map[int]int)
		}
		a.State.ByAmount[e.Amount]++
	case Withdrawn:
		a.State.Balance -= e.Amount
		a.State.Amounts = append(a.State.Amounts, -e.Amount)
		if a.State.ByAmount[e.Amount]--; a.State.ByAmount[e.Amount] <= 0 {
			delete(a.State.ByAmount, e.Amount)
		}
	default:
		panic(fmt.Sprintf("account: unexpected event %T", event))
	}
}

func (a *account) SnapshotState() any { return &a.State }

var errInsufficientFunds = errors.New("insufficient funds")

func (a *account) Open(owner string) error {
	if a.State.Open {
		return errors.New("already open")
	}
	aggregate.Raise(a, Opened{Owner: owner})
	return nil
}

func (a *account) Deposit(n int) error {
	if !a.State.Open {
		return errors.New("not open")
	}
	aggregate.Raise(a, Deposited{Amount: n})
	return nil
}

func (a *account) Withdraw(n int) error {
	if a.State.Balance < n {
		return errInsufficientFunds
	}
	aggregate.Raise(a, Withdrawn{Amount: n})
	return nil
}

func accountRegistry() *aggregate.Registry {
	reg := aggregate.NewRegistry(nil)
	aggregate.Register[Opened](reg, "AccountOpened")
	aggregate.Register[Deposited](reg, "MoneyDeposited")
	aggregate.Register[Withdrawn](reg, "MoneyWithdrawn")
	return reg
}

// Backends.

func TestMain(m *testing.M) { azuritetest.Main(m) }

type backendCase struct {
	name string
	open func(t testing.TB) table.Backend
	// shared marks a backend whose tables outlive the test (Azurite): each store gets tables of
	// its own, named after the test.
	shared bool
}

var backends = []backendCase{
	{"mem", func(testing.TB) table.Backend { return mem.New(nil) }, false},
	{"mem-paged", func(testing.TB) table.Backend { return mem.New(&mem.Options{PageSize: 3, EmptyPages: true}) }, false},
	{"bolt", func(t testing.TB) table.Backend {
		b, err := bolt.Open(filepath.Join(t.TempDir(), "estuite.db"), &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, false},
	{"azurite", func(t testing.TB) table.Backend {
		b, err := azure.Open(azuritetest.ConnectionString(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}, true},
}

// onAzurite reports whether t runs on the Azurite backend (a subtest of forEachBackend or
// forEachCostBackend named "azurite").
func onAzurite(t testing.TB) bool {
	name := t.Name()
	return strings.HasSuffix(name, "/azurite") || strings.Contains(name, "/azurite/")
}

func forEachBackend(t *testing.T, f func(t *testing.T, s *estuite.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, openCaseStore(t, b)) })
	}
}

// forEachCostBackend runs f on the backends whose pages are as full as storage's (not
// mem-paged), for assertions on request counts.
func forEachCostBackend(t *testing.T, f func(t *testing.T, s *estuite.Store)) {
	for _, b := range backends {
		if b.name == "mem-paged" {
			continue
		}
		t.Run(b.name, func(t *testing.T) { f(t, openCaseStore(t, b)) })
	}
}

// openCaseStore opens a store on a new backend of bc; on a shared one with tables of its own.
func openCaseStore(t testing.TB, bc backendCase) *estuite.Store {
	t.Helper()
	var opts *estuite.Options
	if bc.shared {
		prefix := azuritetest.NewTableName(t)
		if len(prefix) > 50 { // room for the longest table suffix
			prefix = "t" + prefix[len(prefix)-49:]
		}
		opts = &estuite.Options{TablePrefix: prefix}
	}
	return openStoreWith(t, bc.open(t), opts)
}

func openStore(t testing.TB, b table.Backend) *estuite.Store { return openStoreWith(t, b, nil) }

func openStoreWith(t testing.TB, b table.Backend, opts *estuite.Options) *estuite.Store {
	t.Helper()
	s, err := estuite.Open(context.Background(), b, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func memStore(t testing.TB) *estuite.Store { return openStore(t, mem.New(nil)) }

func newRepo(s *estuite.Store, reg *aggregate.Registry, opts *aggregate.Options) *aggregate.Repository[*account] {
	if opts == nil {
		opts = &aggregate.Options{StreamPrefix: "account-"}
	}
	return aggregate.NewRepository(s, reg, newAccount, opts)
}

// storedTypes returns the stored type names of a stream's events.
func storedTypes(t *testing.T, s *estuite.Store, stream string) []string {
	t.Helper()
	read, err := s.Read(context.Background(), stream, nil)
	if errors.Is(err, estuite.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for e, err := range read.Events {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e.Type)
	}
	return out
}

// maxRequestsPerShortRead is what Store.Read of a stream that fits one storage page costs: one
// range query returns its events and its head.
const maxRequestsPerShortRead = 1
