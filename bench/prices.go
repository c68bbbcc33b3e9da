package bench

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// GB is the gigabyte of capacity prices: 2^30 bytes, as Azure bills storage.
const GB = 1 << 30

//go:embed prices-2026-11.json
var defaultPrices []byte

// Prices is a price table: what storage transactions, request units and capacity cost. The
// default (DefaultPrices) ships with the package as bench/prices-2026-11.json; LoadPrices reads
// a file of the same shape with one's own prices.
type Prices struct {
	// Date is when the prices were taken, e.g. "2026-11".
	Date string `json:"date"`
	// Source says where they come from.
	Source string `json:"source"`
	// Currency of every price, e.g. "USD".
	Currency string `json:"currency"`
	// TableStorage prices Azure Table Storage.
	TableStorage TableStoragePrices `json:"tableStorage"`
	// Cosmos prices the Cosmos DB Table API.
	Cosmos CosmosPrices `json:"cosmos"`
}

// TableStoragePrices are Azure Table Storage's prices. An entity group transaction is billed as
// one transaction, like any other request; every page of a query is a transaction.
type TableStoragePrices struct {
	// Redundancy is the replication these prices are for, e.g. "LRS".
	Redundancy string `json:"redundancy"`
	// PerTenThousandTransactions is the price of 10,000 transactions.
	PerTenThousandTransactions float64 `json:"perTenThousandTransactions"`
	// PerGBMonth is the price of storing one GB (2^30 bytes) for a month.
	PerGBMonth float64 `json:"perGBMonth"`
}

// CosmosPrices are the Cosmos DB prices the estimate uses.
type CosmosPrices struct {
	// Mode is the capacity mode, e.g. "serverless".
	Mode string `json:"mode"`
	// PerMillionRU is the price of one million request units.
	PerMillionRU float64 `json:"perMillionRU"`
	// PerGBMonth is the price of storing one GB (2^30 bytes) for a month.
	PerGBMonth float64 `json:"perGBMonth"`
}

// PerTransaction is the price of one Table Storage transaction.
func (p Prices) PerTransaction() float64 { return p.TableStorage.PerTenThousandTransactions / 10000 }

// PerRU is the price of one Cosmos DB request unit.
func (p Prices) PerRU() float64 { return p.Cosmos.PerMillionRU / 1e6 }

// DefaultPrices returns the price table that ships with the package (bench/prices-2026-11.json).
func DefaultPrices() Prices {
	p, err := ParsePrices(defaultPrices)
	if err != nil {
		panic("bench: the embedded price table is broken: " + err.Error())
	}
	return p
}

// DefaultPricesJSON returns the embedded default price table as JSON: a template for one's own.
func DefaultPricesJSON() []byte { return bytes.Clone(defaultPrices) }

// LoadPrices reads a price table from a JSON file shaped like bench/prices-2026-11.json. Every
// field must be there; unknown fields are an error, so that a misspelt price is never silently
// zero.
func LoadPrices(path string) (Prices, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Prices{}, fmt.Errorf("price file: %w", err)
	}
	p, err := ParsePrices(data)
	if err != nil {
		return Prices{}, fmt.Errorf("price file %s: %w", path, err)
	}
	return p, nil
}

// ParsePrices parses and checks a price table (see LoadPrices).
func ParsePrices(data []byte) (Prices, error) {
	// Pointers tell a missing number from a zero one.
	var raw struct {
		Date         *string `json:"date"`
		Source       *string `json:"source"`
		Currency     *string `json:"currency"`
		TableStorage *struct {
			Redundancy                 *string  `json:"redundancy"`
			PerTenThousandTransactions *float64 `json:"perTenThousandTransactions"`
			PerGBMonth                 *float64 `json:"perGBMonth"`
		} `json:"tableStorage"`
		Cosmos *struct {
			Mode         *string  `json:"mode"`
			PerMillionRU *float64 `json:"perMillionRU"`
			PerGBMonth   *float64 `json:"perGBMonth"`
		} `json:"cosmos"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Prices{}, fmt.Errorf("not a valid price table: %w", err)
	}
	if dec.More() {
		return Prices{}, errors.New("not a valid price table: more than one JSON value")
	}
	var problems []string
	str := func(name string, v *string) string {
		if v == nil || strings.TrimSpace(*v) == "" {
			problems = append(problems, name+" is missing")
			return ""
		}
		return *v
	}
	num := func(name string, v *float64) float64 {
		switch {
		case v == nil:
			problems = append(problems, name+" is missing")
			return 0
		case *v < 0:
			problems = append(problems, fmt.Sprintf("%s is negative (%v)", name, *v))
		}
		return *v
	}
	var p Prices
	p.Date, p.Source, p.Currency = str("date", raw.Date), str("source", raw.Source), str("currency", raw.Currency)
	if raw.TableStorage == nil {
		problems = append(problems, "tableStorage is missing")
	} else {
		t := raw.TableStorage
		p.TableStorage = TableStoragePrices{Redundancy: str("tableStorage.redundancy", t.Redundancy),
			PerTenThousandTransactions: num("tableStorage.perTenThousandTransactions", t.PerTenThousandTransactions),
			PerGBMonth:                 num("tableStorage.perGBMonth", t.PerGBMonth)}
	}
	if raw.Cosmos == nil {
		problems = append(problems, "cosmos is missing")
	} else {
		c := raw.Cosmos
		p.Cosmos = CosmosPrices{Mode: str("cosmos.mode", c.Mode),
			PerMillionRU: num("cosmos.perMillionRU", c.PerMillionRU), PerGBMonth: num("cosmos.perGBMonth", c.PerGBMonth)}
	}
	if len(problems) > 0 {
		return Prices{}, errors.New(strings.Join(problems, "; "))
	}
	return p, nil
}

// SecondsPerMonth is the month of the monthly figures computed from a rate: 730 hours, as Azure's
// pricing calculator counts a month.
const SecondsPerMonth = 730 * 3600

// TransactionsMonthly is what a steady rate of Table Storage transactions (per second) costs per
// month (SecondsPerMonth).
func (p Prices) TransactionsMonthly(perSecond float64) float64 {
	return perSecond * SecondsPerMonth * p.PerTransaction()
}
