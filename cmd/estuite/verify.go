package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/estuite/estuite"
)

// exitInconsistent is verify's exit code when the store is inconsistent.
const exitInconsistent = 3

func init() {
	register(command{
		name: "verify",
		summary: "Walk the stream table and the feed and report events missing from the feed, duplicates,\n" +
			"gaps, order violations and rows that cannot be read. Exits 3 when the store is inconsistent.\n" +
			"With --repair, re-announce missing events so that the dispatcher writes them into the feed.\n" +
			"It reads every row of both tables: on Azure, that is a full scan of each.",
		setup: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
			var b backendFlags
			b.register(fs)
			repair := fs.Bool("repair", false, "repair what can be repaired, then dispatch and verify again")
			asJSON := fs.Bool("json", false, "print the report as JSON")
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 0 {
					return usagef("verify takes no arguments")
				}
				store, err := b.openExisting(ctx)
				if err != nil {
					return err
				}
				defer store.Close()
				progress := newProgress(e.stderr)
				report, err := store.Verify(ctx, &estuite.VerifyOptions{Progress: progress.show})
				progress.done()
				if err != nil {
					return err
				}
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
					printReport(e.stdout, report)
				}
				if !report.OK() {
					return exitCode(exitInconsistent)
				}
				return nil
			}
		},
	})
}

func printReport(w io.Writer, r *estuite.VerifyReport) {
	fmt.Fprintf(w, "streams: %d, events: %d, feed head: %d\n", r.Streams, r.Events, r.FeedHead)
	section := func(name string, n int, items any) {
		if n == 0 {
			return
		}
		b, _ := json.Marshal(items)
		fmt.Fprintf(w, "%s (%d): %s\n", name, n, b)
	}
	section("missing from the feed", len(r.Missing), r.Missing)
	section("pending dispatch", len(r.Pending), r.Pending)
	section("duplicates", len(r.Duplicates), r.Duplicates)
	section("gaps", len(r.Gaps), r.Gaps)
	section("order violations", len(r.OrderViolations), r.OrderViolations)
	section("unreadable rows", len(r.Unparseable), r.Unparseable)
	section("redacted entries of visible versions", len(r.WrongRedactions), r.WrongRedactions)
	section("lost below the removal floor", len(r.Lost), r.Lost)
	section("progress rows behind", len(r.ProgressBehind), r.ProgressBehind)
	section("streams missing from the catalog (--repair adds them)", len(r.Uncatalogued), r.Uncatalogued)
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
