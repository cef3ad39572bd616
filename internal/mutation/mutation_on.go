//go:build sever_mutation

package mutation

import (
	"os"
	"slices"
	"strings"
)

// The switches, read once from SEVER_MUTATION when the program starts; see
// the package comment. They are never written afterwards.
var (
	SkipDrain          = on("skip-drain")
	ReleaseTwice       = on("release-twice")
	ForgetOwnerPin     = on("forget-owner-pin")
	FreeWaitQueueEarly = on("free-waitqueue-early")
	SkipInvalidation   = on("skip-invalidation")
)

func on(name string) bool {
	return slices.Contains(strings.Split(os.Getenv("SEVER_MUTATION"), ","), name)
}
