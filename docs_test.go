package sever_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Rule: the repository stands alone. No doc comment, comment or Markdown
// file refers to a path outside the repository (the design notes and the
// mailing-list threads it was drawn from live in DESIGN.md), every
// relative Markdown link resolves to a file of the repository (and its
// #anchor to a heading), and every `DESIGN.md, "Section"` and every "seed
// NNN" cited has its section in DESIGN.md.
func TestDocsStayInsideTheRepository(t *testing.T) {
	findings, err := docFindings(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range findings {
		t.Error(f)
	}
}

// Rule: the check above can fail — each kind of reference it forbids is
// found in a small repository made for the purpose.
func TestDocCheckFindsReferencesOutsideTheRepository(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("DESIGN.md", "# design\n\n## Owners\n\n### Seed 003\n")
	write("README.md", "Seeds: ../shared/seeds/. See [design](DESIGN.md#owners), [gone](GONE.md), [bad anchor](DESIGN.md#nowhere).\n")
	write("docs/guide.md", "Not ../../outside.txt, but ../README.md and [seed 003](../DESIGN.md#seed-003).\n")
	write("pkg/a.go", `// Package pkg is seed 004's example (DESIGN.md, "Owners"; DESIGN.md, "Nowhere").
// Read /work/shared/DESIGN.md, or seed 003; ../../devices/usb1 is a symlink.
package pkg

var doc = "003_751f52969640e0ac.txt"
`)
	findings, err := docFindings(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`README.md:1: "../shared/seeds/": a path outside the repository`,
		`README.md:1: link "GONE.md": no such file in the repository`,
		`README.md:1: link "DESIGN.md#nowhere": DESIGN.md has no heading for #nowhere`,
		`docs/guide.md:1: "../../outside.txt" leaves the repository`,
		`pkg/a.go:1: "seed 004": DESIGN.md has no section "Seed 004"`,
		`pkg/a.go:1: DESIGN.md, "Nowhere": DESIGN.md has no such section`,
		`pkg/a.go:2: "/work/shared/DESIGN.md": a path outside the repository`,
		`pkg/a.go:5: "003_751f52969640e0ac.txt": a path outside the repository`,
	}
	for _, w := range want {
		if !slices.Contains(findings, w) {
			t.Errorf("the check missed: %s", w)
		}
	}
	if len(findings) != len(want) {
		t.Errorf("findings:\n%s\nwant exactly:\n%s", strings.Join(findings, "\n"), strings.Join(want, "\n"))
	}
}

var (
	// outsidePath matches references to places only the project's own
	// machines have: the shared working directory, its copies of the seed
	// threads, and the seed files by name.
	outsidePath = regexp.MustCompile(`(?:/work/|(?:\.\./)*shared/)(?:[\w\-]+(?:\.\w+)?/?)*|\b\d{3}_[0-9a-f]{16}\.txt\b`)
	// relPath matches a relative path that climbs: ../x, ../../x. Only
	// Markdown is checked for it: in Go comments such paths are sysfs
	// symlink targets.
	relPath = regexp.MustCompile("(?:^|[\\s(\\[`\"'])((?:\\.\\./)+(?:[\\w\\-]+(?:\\.\\w+)?/?)*)")
	// mdLink matches a Markdown link target.
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// designRef matches DESIGN.md, "Section" and DESIGN.md's "Section".
	designRef = regexp.MustCompile(`DESIGN\.md(?:'s)?,?\s+"([^"]+)"`)
	// seedRef matches "seed 004", "Seed 004's", "seeds 002" (not a stress
	// run's seed 100).
	seedRef = regexp.MustCompile(`(?i)\bseeds? (00\d)\b`)
)

// docFindings checks every .go and .md file under root (but .git,
// testdata and this file, whose examples are the point) and returns one line per reference that does not resolve
// inside the repository, as "file:line: what".
func docFindings(root string) ([]string, error) {
	design, err := os.ReadFile(filepath.Join(root, "DESIGN.md"))
	if err != nil {
		return nil, fmt.Errorf("the repository has no DESIGN.md: %w", err)
	}
	headings := markdownHeadings(string(design))
	var findings []string
	report := func(file string, line int, format string, args ...any) {
		findings = append(findings, fmt.Sprintf("%s:%d: %s", filepath.ToSlash(file), line, fmt.Sprintf(format, args...)))
	}
	// checkProse checks text (a comment group or a Markdown file) that
	// starts at line of file, which is in directory dir.
	checkProse := func(file, dir, text string, line int, markdown bool) {
		lineOf := func(off int) int { return line + strings.Count(text[:off], "\n") }
		for _, m := range outsidePath.FindAllStringIndex(text, -1) {
			report(file, lineOf(m[0]), "%q: a path outside the repository", text[m[0]:m[1]])
		}
		for _, m := range relPath.FindAllStringSubmatchIndex(text, -1) {
			p := text[m[2]:m[3]]
			if !markdown || outsidePath.MatchString(p) {
				continue // not Markdown, or reported above
			}
			if rel, err := filepath.Rel(root, filepath.Join(root, dir, p)); err != nil || strings.HasPrefix(rel, "..") {
				report(file, lineOf(m[2]), "%q leaves the repository", p)
			}
		}
		for _, m := range designRef.FindAllStringSubmatchIndex(text, -1) {
			name := strings.Join(strings.Fields(text[m[2]:m[3]]), " ")
			if !hasSection(headings, name) {
				report(file, lineOf(m[0]), "DESIGN.md, %q: DESIGN.md has no such section", name)
			}
		}
		for _, m := range seedRef.FindAllStringSubmatchIndex(text, -1) {
			if !hasSection(headings, "Seed "+text[m[2]:m[3]]) {
				report(file, lineOf(m[0]), "%q: DESIGN.md has no section %q", strings.ToLower(text[m[0]:m[1]]), "Seed "+text[m[2]:m[3]])
			}
		}
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		file, _ := filepath.Rel(root, path)
		if file == "docs_test.go" {
			return nil
		}
		dir := filepath.Dir(file)
		switch filepath.Ext(path) {
		case ".md":
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			text := string(b)
			checkProse(file, dir, text, 1, true)
			for _, m := range mdLink.FindAllStringSubmatchIndex(text, -1) {
				line := 1 + strings.Count(text[:m[0]], "\n")
				checkLink(root, file, dir, text, text[m[2]:m[3]], func(format string, args ...any) { report(file, line, format, args...) })
			}
		case ".go":
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
			if err != nil {
				return err
			}
			for _, cg := range f.Comments {
				var b strings.Builder
				for _, c := range cg.List {
					text := strings.TrimPrefix(c.Text, "//")
					if strings.HasPrefix(text, "/*") {
						text = strings.TrimSuffix(text[2:], "*/")
					}
					b.WriteString(text)
					b.WriteByte('\n')
				}
				checkProse(file, dir, b.String(), fset.Position(cg.Pos()).Line, false)
			}
			// Strings reach users too (help texts, tables): they must not
			// name the places only the project's machines have.
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						return true
					}
					for _, m := range outsidePath.FindAllString(s, -1) {
						report(file, fset.Position(lit.Pos()).Line, "%q: a path outside the repository", m)
					}
				}
				return true
			})
		}
		return nil
	})
	return findings, err
}

// checkLink checks one Markdown link target of file (in dir): a URL is
// left alone; anything else must be a file or directory of the
// repository, and its #anchor a heading of the Markdown file it names.
func checkLink(root, file, dir, text, target string, report func(string, ...any)) {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return
	}
	path, anchor, _ := strings.Cut(target, "#")
	headingsOf := text
	if path != "" {
		full := filepath.Join(root, dir, path)
		if rel, err := filepath.Rel(root, full); err != nil || strings.HasPrefix(rel, "..") {
			return // reported as leaving the repository
		}
		b, err := os.ReadFile(full)
		if err != nil {
			if _, serr := os.Stat(full); serr != nil {
				report("link %q: no such file in the repository", target)
			}
			return
		}
		headingsOf = string(b)
	}
	if anchor == "" {
		return
	}
	for _, h := range markdownHeadings(headingsOf) {
		if slug(h) == anchor {
			return
		}
	}
	name := path
	if name == "" {
		name = file
	}
	report("link %q: %s has no heading for #%s", target, filepath.ToSlash(name), anchor)
}

// markdownHeadings returns the text of every ATX heading of md.
func markdownHeadings(md string) []string {
	var hs []string
	inFence := false
	for line := range strings.SplitSeq(md, "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if !inFence && strings.HasPrefix(line, "#") {
			hs = append(hs, strings.TrimSpace(strings.TrimLeft(line, "#")))
		}
	}
	return hs
}

// hasSection reports whether a heading is name, ignoring case.
func hasSection(headings []string, name string) bool {
	for _, h := range headings {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}

// slug is the anchor a Markdown renderer gives a heading: lower case,
// punctuation dropped, spaces made hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}
