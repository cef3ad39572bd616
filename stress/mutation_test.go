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
// turn and asserts that the named test fails, and fails the way the bug
// predicts: the stress target for the core's and chardev's and kernfs's
// bugs, the FUSE test of cached entries for the skipped invalidation.
func TestMutationsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module with -tags sever_mutation and runs a test per mutation")
	}
	cases := []struct {
		mutation, pkg, test string
		want                []string // the output must contain one of these
	}{
		// A sever that does not drain: a callback runs after Remove, or on
		// state freed under it, or the provider's own state is torn (a panic).
		{"skip-drain", "./stress", "TestMutationTarget", []string{"callback after sever", "use after free", "panic:"}},
		{"release-twice", "./stress", "TestMutationTarget", []string{"release run twice"}},
		{"forget-owner-pin", "./stress", "TestMutationTarget", []string{"call into gone owner"}},
		{"free-waitqueue-early", "./stress", "TestMutationTarget", []string{"use after free"}},
		{"skip-invalidation", "./fusefs", "TestRemovedPathIsENOENTAtOnceThoughEntriesAreCached", []string{"--- FAIL"}},
	}
	for _, c := range cases {
		t.Run(c.mutation, func(t *testing.T) {
			cmd := exec.Command("go", "test", "-v", "-count=1", "-tags", "sever_mutation", "-run", "^"+c.test+"$", c.pkg)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "SEVER_MUTATION="+c.mutation)
			out, err := cmd.CombinedOutput()
			if err == nil && strings.Contains(string(out), "--- SKIP: "+c.test) {
				// The detecting test cannot run here (no FUSE): the check
				// did not happen, which is not a survivor.
				t.Skipf("SEVER_MUTATION=%s: %s %s was skipped, so the mutation is not checked here:\n%s", c.mutation, c.pkg, c.test, tail(out, 5))
			}
			if err == nil {
				t.Fatalf("SEVER_MUTATION=%s: %s %s passed; the planted bug survived:\n%s", c.mutation, c.pkg, c.test, tail(out, 20))
			}
			for _, w := range c.want {
				if strings.Contains(string(out), w) {
					t.Logf("SEVER_MUTATION=%s: %s %s failed with %q", c.mutation, c.pkg, c.test, w)
					return
				}
			}
			t.Fatalf("SEVER_MUTATION=%s: %s %s failed, but not with any of %q:\n%s", c.mutation, c.pkg, c.test, c.want, tail(out, 40))
		})
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
