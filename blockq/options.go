package blockq

import "runtime"

// depthOrDefault returns the queue depth New uses for depth: GOMAXPROCS for
// 0, depth itself otherwise.
func depthOrDefault(depth int) int {
	if depth == 0 {
		return runtime.GOMAXPROCS(0)
	}
	return depth
}
