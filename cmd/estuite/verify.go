package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/estuite/estuite"
	"github.com/estuite/estuite/client"
)

// exitInconsistent is verify's exit code when the store is inconsistent.
const exitInconsistent = 3

func init() {
	register(command{
		name: "verify",
		summary: "Walk the stream table and the feed and report events missing from the feed, duplicates,\n" +
			"gaps, order violations and rows that cannot be read. Exits 3 when the store is inconsistent.\n" +
			"With --repair, re-announce missing events so that the dispatcher writes them into the feed.\n" +
			"It reads every row of both tables: on Azure, that is a full scan of each.\n" +
			"With --server, the server runs it (POST /admin/verify) and the command polls it until done.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			var r remoteFlags
			r.register(fs)
			repair := fs.Bool("repair", false, "repair what can be repaired, then dispatch and verify again")
			asJSON := fs.Bool("json", false, "print the report as JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("verify takes no arguments")
				}
				if r.serverSet && *repair {
					return usagef("--repair works on the store itself, not through --server: the server verifies only")
				}
				t, err := openTarget(ctx, fs, &b, &r, true)
				if err != nil {
					return err
				}
				defer t.close()
				progress := newProgress(e.stderr)
				var counts *client.VerifyCounts
				var report *estuite.VerifyReport
				if t.remote != nil {
					job, err := t.remote.Verify(ctx, 0, func(j client.VerifyJob) { progress.show(j.Progress.VerifyProgress) })
					progress.done()
					if err != nil {
						return err
					}
					report, counts = job.Report, &job.Counts
					if job.Truncated {
						fmt.Fprintf(e.stderr, "verify: the server sent the first %d entries of each list; the counts are complete\n", client.MaxVerifyListItems)
					}
				} else {
					report, err = t.store.Verify(ctx, &estuite.VerifyOptions{Progress: progress.show})
					progress.done()
					if err != nil {
						return err
					}
				}
				store := t.store
				if *repair && (!report.OK() || len(report.Uncatalogued) > 0) {
					res, err := store.Repair(ctx, report)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stderr, "repair: %+v\n", res)
					if _, err := estuite.NewDispatcher(store, nil).Step(ctx); err != nil {
						return fmt.Errorf("dispatching after the repair: %w", err)
					}
					if report, err = store.Verify(ctx, &estuite.VerifyOptions{Progress: progress.show}); err != nil {
						return err
					}
					progress.done()
				}
				if *asJSON {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					if err := enc.Encode(report); err != nil {
						return err
					}
				} else {
					printReport(e.stdout, report, counts)
				}
				if !report.OK() {
					return exitCode(exitInconsistent)
				}
				return nil
			}
		},
	})
}

// printReport prints a report for people. counts, when not nil, are the lists' full lengths (a
// report from a server holds at most client.MaxVerifyListItems entries of each).
func printReport(w io.Writer, r *estuite.VerifyReport, counts *client.VerifyCounts) {
	if counts == nil {
		counts = &client.VerifyCounts{Missing: len(r.Missing), Pending: len(r.Pending), Duplicates: len(r.Duplicates), Gaps: len(r.Gaps),
			OrderViolations: len(r.OrderViolations), Unparseable: len(r.Unparseable), WrongRedactions: len(r.WrongRedactions),
			Lost: len(r.Lost), ProgressBehind: len(r.ProgressBehind), Uncatalogued: len(r.Uncatalogued)}
	}
	fmt.Fprintf(w, "streams: %d, events: %d, feed head: %d\n", r.Streams, r.Events, r.FeedHead)
	section := func(name string, n int, items any) {
		if n == 0 {
			return
		}
		b, _ := json.Marshal(items)
		fmt.Fprintf(w, "%s (%d): %s\n", name, n, b)
	}
	section("missing from the feed", counts.Missing, r.Missing)
	section("pending dispatch", counts.Pending, r.Pending)
	section("duplicates", counts.Duplicates, r.Duplicates)
	section("gaps", counts.Gaps, r.Gaps)
	section("order violations", counts.OrderViolations, r.OrderViolations)
	section("unreadable rows", counts.Unparseable, r.Unparseable)
	section("redacted entries of visible versions", counts.WrongRedactions, r.WrongRedactions)
	section("lost below the removal floor", counts.Lost, r.Lost)
	section("progress rows behind", counts.ProgressBehind, r.ProgressBehind)
	section("streams missing from the catalog (--repair adds them)", counts.Uncatalogued, r.Uncatalogued)
	if r.Redacted > 0 {
		fmt.Fprintf(w, "redacted feed entries: %d\n", r.Redacted)
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintln(w, "INCONSISTENT")
	}
}

// progress shows a verify walk's progress on a terminal (and nothing elsewhere).
type progress struct {
	w        io.Writer
	terminal bool
	shown    bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) show(v estuite.VerifyProgress) {
	if !p.terminal {
		return
	}
	p.shown = true
	fmt.Fprintf(p.w, "\r\033[Kverify: %s: %d rows, %d streams, %d feed positions", v.Phase, v.Rows, v.Streams, v.FeedPositions)
}

func (p *progress) done() {
	if p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}
