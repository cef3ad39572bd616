package stress

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMutationTarget is what the mutation checks run: a short random
// stress and seed 004's Example 1 as an exact sequence, failing on any
// finding. In a normal build it passes; built with the tag sever_mutation
// and a bug planted through SEVER_MUTATION (package internal/mutation) it
// must fail — TestMutationsAreCaught asserts that it does.
func TestMutationTarget(t *testing.T) {
	ctx := context.Background()
	cfg := Config{Seed: 7, Goroutines: 8, Ops: 60000, RoundOps: 20000}
	if os.Getenv("SEVER_MUTATION") != "" {
		// A planted bug can leave every later removal waiting out its
		// deadline (a sever that skipped its drain strands its owner's
		// unload): a second each, not the default ten, keeps the check
		// within the package's test timeout.
		cfg.Deadline = time.Second
	}
	report(t, Run(ctx, cfg))
	// Seed 004, Example 1: a Store schedules work that removes its own
	// device; the module is unloaded before the work runs. The work pins
	// the module, so the unload waits for it.
	example1 := []Op{
		{Kind: KSelfRemove, A: 0, B: 1}, // echo 1 > /devices/stress.0/remove_async
		{Kind: KUnloadForce, A: 1},      // rmmod stressdrv, at once
	}
	report(t, RunOps(ctx, Config{}, [][]Op{example1})) // one worker: in order, no flush between
}

// TestMutationsAreCaught plants each bug of package internal/mutation in
// turn and asserts that each of its detectors fails, and fails the way the
// bug predicts: the stress target for the core's and chardev's and
// kernfs's bugs, the FUSE test of cached entries for the skipped
// invalidation.
//
// A skipped drain has two detectors. The stress target always fails on it,
// but which symptom it meets first depends on the machine's timing: a
// callback after sever needs a slow callback to overlap its own device's
// removal, while the unloads the skipped drain strands (goroutines left
// behind) show up in every run. So the stress run is only required to find
// something, and a test that holds one callback inside while the device
// goes is the detector that must name the bug.
func TestMutationsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module with -tags sever_mutation and runs a test per mutation")
	}
	type detector struct {
		pkg, test string
		want      []string // the output must contain one of these
	}
	stressWith := func(want ...string) detector { return detector{"./stress", "TestMutationTarget", want} }
	cases := []struct {
		mutation  string
		detectors []detector
	}{
		// A sever that does not drain: Remove runs while a callback is
		// still inside the driver.
		{"skip-drain", []detector{
			{"./device", "TestAttributeDrainedAndSeveredBeforeRemove", []string{"Remove ran while a Show was still inside the driver"}},
			stressWith("FAIL: "),
		}},
		{"release-twice", []detector{stressWith("release run twice")}},
		{"forget-owner-pin", []detector{stressWith("call into gone owner")}},
		{"free-waitqueue-early", []detector{stressWith("use after free")}},
		{"skip-invalidation", []detector{{"./fusefs", "TestRemovedPathIsENOENTAtOnceThoughEntriesAreCached", []string{"--- FAIL"}}}},
	}
	for _, c := range cases {
		t.Run(c.mutation, func(t *testing.T) {
			for _, d := range c.detectors {
				caught(t, c.mutation, d.pkg, d.test, d.want)
			}
		})
	}
}

// caught runs pkg's test with mutation planted and fails t unless the test
// fails with one of want in its output.
func caught(t *testing.T, mutation, pkg, test string, want []string) {
	t.Helper()
	cmd := exec.Command("go", "test", "-v", "-count=1", "-tags", "sever_mutation", "-run", "^"+test+"$", pkg)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "SEVER_MUTATION="+mutation)
	out, err := cmd.CombinedOutput()
	if err == nil && strings.Contains(string(out), "--- SKIP: "+test) {
		// The detecting test cannot run here (no FUSE): the check did
		// not happen, which is not a survivor.
		t.Skipf("SEVER_MUTATION=%s: %s %s was skipped, so the mutation is not checked here:\n%s", mutation, pkg, test, tail(out, 5))
	}
	if err == nil {
		t.Fatalf("SEVER_MUTATION=%s: %s %s passed; the planted bug survived:\n%s", mutation, pkg, test, tail(out, 20))
	}
	for _, w := range want {
		if strings.Contains(string(out), w) {
			t.Logf("SEVER_MUTATION=%s: %s %s failed with %q", mutation, pkg, test, w)
			return
		}
	}
	t.Fatalf("SEVER_MUTATION=%s: %s %s failed, but not with any of %q:\n%s", mutation, pkg, test, want, tail(out, 40))
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
