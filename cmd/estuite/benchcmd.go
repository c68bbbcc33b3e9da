package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/estuite/estuite/bench"
	"github.com/estuite/estuite/table"
	"github.com/estuite/estuite/table/azure"
	"github.com/estuite/estuite/table/bolt"
)

// DefaultChartPath is where `estuite bench` writes its chart unless told otherwise.
const DefaultChartPath = "bench-cost.svg"

func init() {
	register(command{
		name: "bench",
		summary: "Measure what workloads cost: storage transactions by kind, bytes stored, events per second,\n" +
			"latency, and dollars per million events on Azure Table Storage (and a Cosmos DB estimate).\n" +
			"Each workload writes tables of its own, named --table-prefix plus the workload's name\n" +
			"(default prefix: bench and the time), and leaves them behind: on Azure, delete them after.\n" +
			"Without a connection string it runs on an embedded store in a temporary directory.\n" +
			"docs/cost.md publishes a run on Azurite.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			list := fs.String("workloads", "all", "comma-separated workloads to run (see --list)")
			scale := fs.Float64("scale", 1, "multiply the workloads' sizes by this factor (0.01 runs in seconds)")
			asJSON := fs.Bool("json", false, "print the report as JSON instead of tables")
			pricesPath := fs.String("prices", "", "price table (JSON) to use instead of the shipped one (see --print-prices)")
			chart := fs.String("chart", DefaultChartPath, "write the SVG chart of cost per million events against commit size here (empty: no chart)")
			listOnly := fs.Bool("list", false, "list the workloads and exit")
			printPrices := fs.Bool("print-prices", false, "print the shipped price table, a template for --prices, and exit")
			return func(ctx context.Context, e *env, args []string) error {
				if err := r.localOnly("bench", "it measures storage itself (the embedded store, or Azure with a connection string)"); err != nil {
					return err
				}
				if len(args) != 0 {
					return usagef("bench takes no arguments")
				}
				all := bench.DefaultWorkloads()
				if *listOnly {
					for _, w := range all {
						fmt.Fprintf(e.stdout, "%-20s %s\n", w.Name, w.Description)
					}
					return nil
				}
				if *printPrices {
					_, err := e.stdout.Write(bench.DefaultPricesJSON())
					return err
				}
				if !(*scale > 0) || *scale > 100 {
					return usagef("--scale must be above 0 and at most 100")
				}
				workloads, err := bench.Select(all, *list)
				if err != nil {
					return usagef("%v", err)
				}
				for i := range workloads {
					workloads[i] = workloads[i].Scaled(*scale)
				}
				prices := bench.DefaultPrices()
				if *pricesPath != "" {
					if prices, err = bench.LoadPrices(*pricesPath); err != nil {
						return err
					}
				}
				prefixSet := false
				fs.Visit(func(f *flag.Flag) { prefixSet = prefixSet || f.Name == "table-prefix" })
				if !prefixSet {
					b.tablePrefix = "bench" + time.Now().UTC().Format("20060102150405")
				}
				return runBench(ctx, e, &b, workloads, *scale, prices, *asJSON, *chart)
			}
		},
	})
}

func runBench(ctx context.Context, e *env, b *backendFlags, workloads []bench.Workload, scale float64, prices bench.Prices, asJSON bool, chartPath string) error {
	backend, where, cleanup, err := openBenchBackend(b)
	if err != nil {
		return err
	}
	defer cleanup()
	progress := progressPrinter(e.stderr)
	start := time.Now()
	results, err := bench.Run(ctx, backend, workloads, &bench.Options{TablePrefix: b.tablePrefix, Progress: progress})
	if progress != nil {
		progress(bench.Progress{}) // clear the line
	}
	if err != nil {
		return err
	}
	report := bench.NewReport(results, prices)
	report.Backend, report.Machine, report.Scale = where, machine(), scale
	report.Command = redactedCommand(os.Args)
	fmt.Fprintf(e.stderr, "bench: %d workloads in %s on %s\n", len(results), time.Since(start).Round(time.Second), where)
	if asJSON {
		if err := report.WriteJSON(e.stdout); err != nil {
			return err
		}
	} else if err := report.WriteText(e.stdout); err != nil {
		return err
	}
	if chartPath == "" {
		return nil
	}
	series := bench.ChartSeriesFrom(report)
	var buf strings.Builder
	title := fmt.Sprintf("%s, prices of %s (%s), %s", where, prices.Date, prices.Currency, report.Date.Format("2006-01-02"))
	if err := bench.WriteChartSVG(&buf, series, title); err != nil {
		fmt.Fprintf(e.stderr, "bench: no chart: %v\n", err)
		return nil
	}
	if err := os.WriteFile(chartPath, []byte(buf.String()), 0o644); err != nil {
		return fmt.Errorf("writing the chart: %w", err)
	}
	fmt.Fprintf(e.stderr, "bench: chart written to %s\n", chartPath)
	return nil
}

// openBenchBackend opens the backend the flags select; the embedded store defaults to a
// temporary directory, so that a benchmark never writes into ./estuite-data.
func openBenchBackend(b *backendFlags) (backend table.Backend, where string, cleanup func(), err error) {
	if b.dataSet && b.azureConn != "" {
		return nil, "", nil, usagef("--data selects the embedded store and a connection string selects Azure: choose one")
	}
	if !b.embedded() {
		ab, err := azure.Open(b.azureConn, nil)
		if err != nil {
			return nil, "", nil, err
		}
		return ab, "Azure Table Storage at " + tableEndpoint(b.azureConn), func() { ab.Close() }, nil
	}
	dir, remove := b.data, false
	if !b.dataSet {
		if dir, err = os.MkdirTemp("", "estuite-bench"); err != nil {
			return nil, "", nil, err
		}
		remove = true
	}
	bb, err := bolt.Open(filepath.Join(dir, "estuite.db"), &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if remove {
			os.RemoveAll(dir)
		}
		return nil, "", nil, err
	}
	return bb, "embedded store (bbolt)", func() {
		bb.Close()
		if remove {
			os.RemoveAll(dir)
		}
	}, nil
}

// tableEndpoint is the table endpoint (or account) a connection string names, never its key.
func tableEndpoint(conn string) string {
	account := ""
	for _, part := range strings.Split(conn, ";") {
		k, v, _ := strings.Cut(part, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "tableendpoint":
			return v
		case "accountname":
			account = v
		}
	}
	if account != "" {
		return "account " + account
	}
	return "the given connection string"
}

// redactedCommand is the command line with the connection string's value hidden.
func redactedCommand(args []string) string {
	out := []string{"estuite"}
	hide := false
	for _, a := range args[1:] {
		switch {
		case hide:
			out, hide = append(out, "'…'"), false
		case a == "--azure-connection-string" || a == "-azure-connection-string":
			out, hide = append(out, a), true
		case strings.HasPrefix(a, "--azure-connection-string=") || strings.HasPrefix(a, "-azure-connection-string="):
			k, _, _ := strings.Cut(a, "=")
			out = append(out, k+"='…'")
		default:
			out = append(out, a)
		}
	}
	return strings.Join(out, " ")
}

// machine describes this computer.
func machine() string {
	cpu := ""
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v) + ", "
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, %s%d CPUs, %s", runtime.GOOS, runtime.GOARCH, cpu, runtime.NumCPU(), runtime.Version())
}

// progressPrinter returns a progress callback that keeps one status line on a terminal, or nil
// when w is not one.
func progressPrinter(w io.Writer) func(bench.Progress) {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return func(p bench.Progress) {
		if p.Workload == "" {
			fmt.Fprint(w, "\r\033[K")
			return
		}
		line := fmt.Sprintf("%s: %s", p.Workload, p.Phase)
		if p.Total > 0 {
			line += fmt.Sprintf(" %d/%d (%.0f%%)", p.Done, p.Total, 100*float64(p.Done)/float64(p.Total))
		}
		fmt.Fprintf(w, "\r\033[K%s", line)
	}
}
