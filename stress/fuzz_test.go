package stress

import (
	"bytes"
	"context"
	"testing"
)

// FuzzOps decodes arbitrary bytes into an operation sequence (Decode),
// deals it to two workers, and runs it serialized on a small machine, which
// is then quiesced and audited: whatever the sequence, the checker must
// record nothing but the driver faults of injected panics, and no promise
// may break and nothing may leak.
func FuzzOps(f *testing.F) {
	gen := newGenerator(1, 0, 0, 0.2)
	for _, n := range []int{1, 8, 40} {
		var ops []Op
		for range n {
			ops = append(ops, gen.next())
		}
		f.Add(EncodeOps(ops))
	}
	f.Add(EncodeOps([]Op{{Kind: KSelfRemove, B: 1}, {Kind: KUnloadForce, A: 1}}))                           // seed 004, Example 1
	f.Add(EncodeOps([]Op{{Kind: KCdevOpen, A: 0}, {Kind: KUnplug}, {Kind: KCdevRead}, {Kind: KCdevClose}})) // a shell after unplug
	// host-kill: the fuzzer's machine has no driver host (a process per
	// input would starve it), so it runs as an unplug; TestHostKillsUnderLoad
	// runs it against a real host.
	f.Add(EncodeOps([]Op{{Kind: KCdevOpen}, {Kind: KHostKill}, {Kind: KCdevPoll}, {Kind: KHostKill, A: 1}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := Decode(data)
		if len(ops) > 64 {
			ops = ops[:64]
		}
		seqs := make([][]Op, 2)
		for i, o := range ops {
			seqs[i%2] = append(seqs[i%2], o)
		}
		res := RunOps(context.Background(), Config{Serial: true, Ports: 2, Slots: 2, Controllers: 1}, seqs)
		if !res.OK() {
			var b bytes.Buffer
			if err := res.WriteReport(&b); err != nil {
				t.Fatal(err)
			}
			t.Fatalf("%d operations %v:\n%s", len(ops), ops, b.String())
		}
	})
}
