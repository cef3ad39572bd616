// Package lifepage renders recorded lifetimes as one self-contained HTML
// page: for each scenario, its runs side by side (the correct variant and
// the naive one), each a timeline with a lane per object, a bar per
// lifetime state, the calls that entered provider code, the moment of the
// unplug or unload, and the violations marked and listed with their text.
//
// The page is static: inline CSS and SVG, one small inline script that
// only records script errors for tests (no script builds the timeline), no
// fetch of anything — it opens from a file with no server and no network.
package lifepage

import (
	"fmt"
	"html/template"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/lifetrace"
)

// Section is one scenario: a heading and its runs, drawn side by side.
type Section struct {
	Name  string // "zram-rmmod"
	Title string // what happens, in a sentence
	Doc   string // the seed document
	Runs  []Run  // usually correct, then naive
}

// Run is one run of a scenario.
type Run struct {
	Label   string // "correct", "naive"
	Verdict string // the checker's verdict, as the demo prints it
	Caught  bool   // the verdict is a finding (drawn red) rather than clean
	Note    string // a line under the label: the planted bug of a naive run
	Records []lifetrace.Record
}

// MaxLanes bounds the lanes drawn per run; the rest are counted in a line
// under the timeline. Lanes with violations, notes, severs and releases
// come first.
const MaxLanes = 40

// Write writes the page titled title with sections to w. It fails only if
// w does.
func Write(w io.Writer, title string, sections []Section) error {
	p := page{Title: title}
	for _, s := range sections {
		ps := pageSection{Section: s}
		for _, r := range s.Runs {
			ps.Runs = append(ps.Runs, layout(r))
		}
		p.Sections = append(p.Sections, ps)
	}
	return pageTmpl.Execute(w, p)
}

type page struct {
	Title    string
	Sections []pageSection
}

type pageSection struct {
	Section
	Runs []pageRun
}

// pageRun is a run laid out: everything in SVG coordinates.
type pageRun struct {
	Run
	Width, Height int
	Lanes         []pageLane
	Moments       []moment
	Axis          []tick
	Violations    []violation
	Hidden        int // lanes not drawn
	Empty         bool
}

type pageLane struct {
	Y      int
	Label  string // shortened
	Object string // full
	Type   string
	Bars   []bar
	Marks  []mark
}

type bar struct {
	X, W  float64
	Class string
	Title string
	Text  string // drawn after the bar: the calls a sever waited for
}

type mark struct {
	X     float64
	Class string // "call", "refused", "end", "violation", "step"
	Title string
	Num   int // violation number, 0 otherwise
}

type moment struct {
	X     float64
	Label string
	Title string
	Class string // "removal", "quiesce"
}

type tick struct {
	X     float64
	Label string
}

type violation struct {
	Num    int
	At     string
	Object string
	Text   string
}

const (
	labelW = 230
	plotW  = 420
	laneH  = 16
	topH   = 34
)

// removalStep recognizes the scenario step that removes something.
var removalStep = regexp.MustCompile(`(?i)\b(unplug|rmmod|unload|rmdir|delete|remove|unregister|reset|disconnect)`)

func layout(r Run) pageRun {
	tl := lifetrace.Build(r.Records)
	pr := pageRun{Run: r, Width: labelW + plotW + 70}
	end := tl.End
	if end <= 0 {
		end = time.Microsecond
	}
	x := func(t time.Duration) float64 {
		return labelW + float64(plotW)*float64(t)/float64(end)
	}
	for i := 0; i <= 4; i++ {
		t := end * time.Duration(i) / 4
		pr.Axis = append(pr.Axis, tick{X: x(t), Label: fmtDur(t)})
	}
	quiesce := end + 1
	for _, l := range tl.Lanes {
		for _, m := range l.Marks {
			if l.ID == 0 && m.Note == "step" && strings.Contains(m.Detail, "quiesce") && m.T < quiesce {
				quiesce = m.T
			}
		}
	}
	lanes := pick(tl.Lanes, quiesce)
	pr.Hidden = countShown(tl.Lanes) - len(lanes)
	vnum := 0
	for i, l := range lanes {
		pl := pageLane{Y: topH + i*laneH, Label: shorten(l.Object, 34), Object: l.Type + " " + l.Object, Type: l.Type}
		for _, s := range l.States {
			w := x(s.End) - x(s.Start)
			pl.Bars = append(pl.Bars, bar{X: x(s.Start), W: max(w, 1), Class: "state s-" + cssName(s.Name),
				Title: fmt.Sprintf("%s: %s from %s to %s", l.Object, s.Name, fmtDur(s.Start), fmtDur(s.End))})
		}
		if s := l.Sever; s != nil {
			b := bar{X: x(s.Start), W: max(x(s.End)-x(s.Start), 2), Class: "sever",
				Title: fmt.Sprintf("%s: sever from %s, drained at %s, waited for %d", l.Object, fmtDur(s.Start), fmtDur(s.End), s.N)}
			if s.N > 0 && l.Removal {
				b.Text = fmt.Sprintf("waited for %d", s.N)
			}
			pl.Bars = append(pl.Bars, b)
		}
		for _, e := range l.Ends {
			pl.Marks = append(pl.Marks, mark{X: x(e.Start), Class: "end", Title: fmt.Sprintf("%s: %s at %s", l.Object, e.Name, fmtDur(e.Start))})
		}
		for _, m := range l.Marks {
			mk := mark{X: x(m.T), Title: fmt.Sprintf("%s %s: %s", fmtDur(m.T), l.Object, m.Detail)}
			switch {
			case m.Kind == sever.EventViolation:
				vnum++
				mk.Class, mk.Num = "violation", vnum
				pr.Violations = append(pr.Violations, violation{Num: vnum, At: fmtDur(m.T), Object: l.Object, Text: m.Detail})
			case m.Kind == sever.EventRefused:
				mk.Class = "refused"
			case m.Note == "entered":
				mk.Class = "call"
			case m.Note == "step":
				mk.Class = "step"
				if l.ID == 0 && removalStep.MatchString(m.Detail) && len(pr.Moments) == 0 {
					pr.Moments = append(pr.Moments, moment{X: x(m.T), Label: removalLabel(m.Detail), Title: m.Detail, Class: "removal"})
				}
				if strings.Contains(m.Detail, "quiesce") {
					pr.Moments = append(pr.Moments, moment{X: x(m.T), Label: "quiesce", Title: m.Detail, Class: "quiesce"})
				}
			default:
				mk.Class = "note"
			}
			pl.Marks = append(pl.Marks, mk)
		}
		pr.Lanes = append(pr.Lanes, pl)
	}
	pr.Empty = len(lanes) == 0
	pr.Height = topH + len(lanes)*laneH + 8
	return pr
}

// interesting reports whether a lane shows more than a creation.
func interesting(l *lifetrace.Lane) bool {
	return l.ID == 0 || len(l.Marks) > 0 || l.Sever != nil || len(l.Ends) > 0
}

func countShown(lanes []*lifetrace.Lane) int {
	n := 0
	for _, l := range lanes {
		if interesting(l) {
			n++
		}
	}
	return n
}

// pick chooses the lanes to draw, at most MaxLanes, in creation order:
// first those with violations, then notes and steps, then owners and
// severs that waited, then severs and releases before quiesce, then the
// rest (what quiesce tore down).
func pick(lanes []*lifetrace.Lane, quiesce time.Duration) []*lifetrace.Lane {
	rank := func(l *lifetrace.Lane) int {
		for _, m := range l.Marks {
			if m.Kind == sever.EventViolation {
				return 0
			}
		}
		switch {
		case l.ID == 0 || len(l.Marks) > 0:
			return 1
		case l.Sever != nil && l.Sever.N > 0:
			return 2
		case l.Type == "owner":
			return 2
		case l.Sever != nil && l.Sever.Start < quiesce:
			return 3
		case len(l.Ends) > 0 && l.Ends[0].Start < quiesce:
			return 3
		}
		return 4
	}
	var cand []*lifetrace.Lane
	for _, l := range lanes {
		if interesting(l) {
			cand = append(cand, l)
		}
	}
	idx := map[*lifetrace.Lane]int{}
	for i, l := range cand {
		idx[l] = i
	}
	sort.SliceStable(cand, func(a, b int) bool { return rank(cand[a]) < rank(cand[b]) })
	if len(cand) > MaxLanes {
		cand = cand[:MaxLanes]
	}
	sort.SliceStable(cand, func(a, b int) bool {
		// The notes lane on top, then creation order.
		if (cand[a].ID == 0) != (cand[b].ID == 0) {
			return cand[a].ID == 0
		}
		return idx[cand[a]] < idx[cand[b]]
	})
	return cand
}

func removalLabel(step string) string {
	if m := removalStep.FindString(step); m != "" {
		return strings.ToLower(m)
	}
	return "removal"
}

func shorten(s string, n int) string {
	s = strings.TrimPrefix(s, "kernfs: ")
	if r := []rune(s); len(r) > n {
		return "…" + string(r[len(r)-n+1:])
	}
	return s
}

func cssName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.3fms", float64(d.Microseconds())/1000)
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"f":   func(x float64) string { return fmt.Sprintf("%.1f", x) },
	"add": func(a, b int) int { return a + b },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<script>
window.severErrors = [];
window.addEventListener("error", function (e) { window.severErrors.push(String(e.message)); });
</script>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 .3em; }
h2 { font-size: 1.2em; margin: 1.6em 0 .2em; border-top: 1px solid #ccc; padding-top: .8em; }
.doc { color: #666; font-size: .9em; margin: 0 0 .6em; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(660px, 1fr)); gap: 1.2em; }
.run { border: 1px solid #ddd; border-radius: 6px; padding: .5em .7em; overflow-x: auto; }
.run h3 { margin: 0; font-size: 1em; }
.verdict { font-weight: normal; padding: 0 .4em; border-radius: 3px; margin-left: .4em; }
.verdict.clean { background: #dcf5dc; color: #14541a; }
.verdict.caught { background: #fde0dc; color: #8a1c0f; }
.bug { color: #8a1c0f; font-size: .85em; margin: .2em 0; }
.legend span { display: inline-block; margin-right: 1em; font-size: .85em; }
.sw.s-live { background: #8fd18f; } .sw.s-severing { background: #f4b860; } .sw.s-severed { background: #c8c8c8; } .sw.sever { background: #444; height: .3em; }
.sw { display: inline-block; width: 1.4em; height: .8em; vertical-align: middle; margin-right: .3em; border-radius: 2px; }
svg { display: block; margin-top: .4em; }
svg text { font: 11px ui-monospace, monospace; fill: #333; }
svg .axis text { fill: #888; }
svg .axis line { stroke: #eee; }
.lane:nth-child(odd) .bg { fill: #fafafa; }
.lane .bg { fill: #fff; }
.s-live { fill: #8fd18f; } .s-severing, .s-going { fill: #f4b860; } .s-severed { fill: #c8c8c8; }
.s-gone, .s-released, .s-freed { fill: #888; }
.sever { fill: #444; }
svg text.waited { font-size: 9px; fill: #8a4b00; }
.end { stroke: #000; stroke-width: 2; }
.call { stroke: #2b6cd4; stroke-width: 1.5; }
.refused { stroke: #999; stroke-width: 1.5; }
.step, .note { stroke: #7a4fb5; stroke-width: 1.5; }
.violation { fill: #d7261e; stroke: #fff; stroke-width: 1; }
.vnum { fill: #d7261e; font-weight: bold; }
.moment line { stroke-width: 1.5; stroke-dasharray: 4 3; }
.moment.removal line { stroke: #d7261e; } .moment.removal text { fill: #d7261e; font-weight: bold; }
.moment.quiesce line { stroke: #999; } .moment.quiesce text { fill: #777; }
ol.violations { margin: .4em 0 0; padding-left: 2em; font-size: .85em; }
ol.violations li { color: #8a1c0f; }
ol.violations .obj { color: #333; font-family: ui-monospace, monospace; }
.hidden { color: #888; font-size: .8em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="legend">
<span><i class="sw s-live"></i>live</span><span><i class="sw s-severing"></i>severing / going</span>
<span><i class="sw s-severed"></i>severed</span><span><i class="sw sever"></i>sever (to drained)</span>
<span><svg width="10" height="12" style="display:inline;margin:0"><line class="end" x1="5" x2="5" y1="0" y2="12"/></svg> released / freed</span>
<span><svg width="10" height="12" style="display:inline;margin:0"><line class="call" x1="5" x2="5" y1="0" y2="12"/></svg> call into provider code</span>
<span><svg width="10" height="12" style="display:inline;margin:0"><line class="refused" x1="5" x2="5" y1="0" y2="12"/></svg> call refused</span>
<span><svg width="12" height="12" style="display:inline;margin:0"><path class="violation" d="M6 0 L12 6 L6 12 L0 6 Z"/></svg> violation</span>
<span style="color:#d7261e">┆ unplug / unload</span>
</p>
{{range .Sections}}
<section class="scenario" id="{{.Name}}">
<h2>{{.Name}} — {{.Title}}</h2>
<p class="doc">{{.Doc}}</p>
<div class="pair">
{{range .Runs}}
<div class="run" data-variant="{{.Label}}">
<h3>{{.Label}} <span class="verdict {{if .Caught}}caught{{else}}clean{{end}}">{{.Verdict}}</span></h3>
{{if .Note}}<p class="bug">planted: {{.Note}}</p>{{end}}
{{if .Empty}}<p class="hidden">no lifetime events were recorded</p>{{else}}
<svg width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img">
{{$h := .Height}}{{$w := .Width}}<g class="axis">{{range .Axis}}<line x1="{{f .X}}" x2="{{f .X}}" y1="14" y2="{{$h}}"/><text x="{{f .X}}" y="11" text-anchor="middle">{{.Label}}</text>{{end}}</g>
{{range .Lanes}}{{$y := .Y}}<g class="lane" data-object="{{.Object}}" data-type="{{.Type}}"><title>{{.Object}}</title>
<rect class="bg" x="0" y="{{$y}}" width="{{$w}}" height="16"/>
<text x="2" y="{{add $y 12}}">{{.Label}}</text>
{{range .Bars}}{{if eq .Class "sever"}}<rect class="sever" x="{{f .X}}" y="{{add $y 11}}" width="{{f .W}}" height="4">{{else}}<rect class="{{.Class}}" x="{{f .X}}" y="{{add $y 2}}" width="{{f .W}}" height="9">{{end}}<title>{{.Title}}</title></rect>{{if .Text}}<text class="waited" x="{{f .X}}" y="{{add $y 10}}" dx="2">{{.Text}}</text>{{end}}{{end}}
{{range .Marks}}{{if eq .Class "violation"}}<g class="vmark"><path class="violation" transform="translate({{f .X}},{{$y}})" d="M0 0 L7 8 L0 16 L-7 8 Z"><title>violation {{.Num}}: {{.Title}}</title></path><text class="vnum" x="{{f .X}}" y="{{add $y 12}}" dx="8">{{.Num}}</text></g>{{else}}<line class="{{.Class}}" x1="{{f .X}}" x2="{{f .X}}" y1="{{add $y 1}}" y2="{{add $y 15}}"><title>{{.Title}}</title></line>{{end}}{{end}}
</g>{{end}}
{{range .Moments}}<g class="moment {{.Class}}"><line x1="{{f .X}}" x2="{{f .X}}" y1="14" y2="{{$h}}"/><text x="{{f .X}}" y="26" dx="3">{{.Label}}</text><title>{{.Title}}</title></g>{{end}}
</svg>{{end}}
{{if .Hidden}}<p class="hidden">{{.Hidden}} more objects with events not drawn</p>{{end}}
{{if .Violations}}<ol class="violations">{{range .Violations}}<li value="{{.Num}}" class="violation-text">{{.At}} <span class="obj">{{.Object}}</span>: {{.Text}}</li>{{end}}</ol>{{end}}
</div>
{{end}}
</div>
</section>
{{end}}
<script>
document.body.dataset.errors = String(window.severErrors.length);
document.body.dataset.ready = "1";
</script>
</body>
</html>
`))
