package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"strings"
)

// ChartSeries is one line of the cost chart: a y value for each commit size.
type ChartSeries struct {
	Name   string
	Color  string
	Dashed bool
	Points map[int]float64 // commit size → dollars per million events
}

// ChartSeriesFrom returns the chart's lines from the reports of write-only workloads (those
// without a read phase), one point per commit size: Estuite on Table Storage as measured, the
// Cosmos DB estimate of the same calls, and the floor (one batch per append, no feed).
func ChartSeriesFrom(r Report) []ChartSeries {
	estuite := ChartSeries{Name: "Estuite on Azure Table Storage (measured)", Color: "#1f77b4", Points: map[int]float64{}}
	cosmos := ChartSeries{Name: "Estuite on Cosmos DB Table API (RU estimate)", Color: "#d62728", Points: map[int]float64{}}
	floor := ChartSeries{Name: "Floor: 1 batch per append, no feed (= Streamstone-style)", Color: "#2ca02c", Dashed: true, Points: map[int]float64{}}
	for _, wr := range r.Workloads {
		if wr.Result.Workload.Read != NoRead {
			continue
		}
		k := wr.Result.Workload.CommitSize
		estuite.Points[k] = wr.Cost.WritePerMillion
		cosmos.Points[k] = wr.Cost.Cosmos.WritePerMillion
		floor.Points[k] = wr.Cost.Floor.WritePerMillion
	}
	return []ChartSeries{cosmos, estuite, floor}
}

// WriteChartSVG draws the cost per million events written and dispatched (y, logarithmic)
// against the commit size (x) as an SVG image. title names the run (prices, date, backend).
func WriteChartSVG(w io.Writer, series []ChartSeries, title string) error {
	var sizes []int
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for k, v := range s.Points {
			if !slices.Contains(sizes, k) {
				sizes = append(sizes, k)
			}
			if v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	if len(sizes) == 0 || math.IsInf(lo, 1) {
		return fmt.Errorf("bench: no write workload to chart (run append-1, append-10 or append-50)")
	}
	slices.Sort(sizes)
	const (
		width, height                    = 860, 520
		left, right, top, bottom float64 = 90, 330, 60, 70
	)
	plotW, plotH := width-left-right, height-top-bottom
	yMin, yMax := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if yMax == yMin {
		yMax++
	}
	x := func(i int) float64 {
		if len(sizes) == 1 {
			return left + plotW/2
		}
		return left + 30 + float64(i)*(plotW-60)/float64(len(sizes)-1)
	}
	y := func(v float64) float64 { return top + plotH*(yMax-math.Log10(v))/(yMax-yMin) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="13">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%g" y="24" font-size="16" font-weight="bold">Cost per million events written and dispatched, by commit size</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%g" y="44" fill="#555">%s</text>`+"\n", left, html.EscapeString(title))
	// Horizontal grid: one line per decade, labelled in dollars.
	for e := yMin; e <= yMax; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#ddd"/>`+"\n", left, y(v), left+plotW, y(v))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-8, y(v), axisDollars(v))
		for m := 2.0; m < 10 && e < yMax; m++ {
			fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" stroke="#f2f2f2"/>`+"\n", left, y(m*v), left+plotW, y(m*v))
		}
	}
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#888"/>`+"\n", left, top, plotW, plotH)
	for i, k := range sizes {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%g" x2="%.1f" y2="%g" stroke="#888"/>`+"\n", x(i), top+plotH, x(i), top+plotH+5)
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" text-anchor="middle">%d</text>`+"\n", x(i), top+plotH+22, k)
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">events per commit (one append = one commit)</text>`+"\n", left+plotW/2, top+plotH+50)
	fmt.Fprintf(&b, `<text transform="translate(22 %g) rotate(-90)" text-anchor="middle">dollars per million events (log scale)</text>`+"\n", top+plotH/2)
	for si, s := range series {
		var pts []string
		for i, k := range sizes {
			if v, ok := s.Points[k]; ok && v > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2.5"%s/>`+"\n", strings.Join(pts, " "), s.Color, dash)
		for i, k := range sizes {
			if v, ok := s.Points[k]; ok && v > 0 {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x(i), y(v), s.Color)
				anchor, dx := "start", 8.0
				if i == len(sizes)-1 {
					anchor, dx = "end", -8
				}
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="%s">%s</text>`+"\n", x(i)+dx, y(v)-7, s.Color, anchor, axisDollars(v))
			}
		}
		ly := top + 10 + float64(si)*44
		lx := left + plotW + 20
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="%s" stroke-width="2.5"%s/>`+"\n", lx, ly, lx+26, ly, s.Color, dash)
		for li, line := range wrap(s.Name, 34) {
			fmt.Fprintf(&b, `<text x="%g" y="%g" dominant-baseline="middle">%s</text>`+"\n", lx+34, ly+float64(li)*16, html.EscapeString(line))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// axisDollars labels a dollar amount compactly.
func axisDollars(v float64) string {
	switch {
	case v >= 1:
		return fmt.Sprintf("$%s", trimZeros(fmt.Sprintf("%.2f", v)))
	case v >= 0.001:
		return fmt.Sprintf("$%s", trimZeros(fmt.Sprintf("%.4f", v)))
	default:
		return fmt.Sprintf("$%s", trimZeros(fmt.Sprintf("%.6f", v)))
	}
}

func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// wrap breaks s into lines of at most n characters at spaces.
func wrap(s string, n int) []string {
	var lines []string
	cur := ""
	for _, word := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(word) > n {
			lines = append(lines, cur)
			cur = word
			continue
		}
		cur = strings.TrimSpace(cur + " " + word)
	}
	return append(lines, cur)
}
