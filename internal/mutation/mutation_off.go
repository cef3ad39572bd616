//go:build !sever_mutation

// Package mutation holds the switches of sever's mutation checks: bugs
// planted on purpose, one at a time, to show that the stress run and the
// tests catch them (RELIABILITY.md, "Mutation checks").
//
// In a normal build every switch is the constant false, so the planted code
// is dead and compiled away: production code pays nothing and nothing can
// turn a bug on. Only a build with the tag sever_mutation has the switches
// as variables, set once at start from the environment variable
// SEVER_MUTATION, a comma-separated list of names:
//
//	SEVER_MUTATION=skip-drain go test -tags sever_mutation ./stress
//
// The names and what each plants:
//
//	skip-drain            sever.Active.Sever returns without waiting for the
//	                      accesses inside to exit
//	release-twice         a sever.Shell (a kernfs or chardev open file) runs
//	                      the provider's per-open Release twice
//	forget-owner-pin      kernfs.Tree.ScheduleCallback does not pin the owner
//	                      of the callback's code
//	free-waitqueue-early  a sever.Scope's Sever frees an open shell's wait
//	                      queue at the sever, not at the file's last reference
//	                      (seed 002's bug)
//	skip-invalidation     fusefs does not tell the kernel to drop a removed
//	                      node's cached entry
package mutation

// The switches: always false in a normal build.
const (
	SkipDrain          = false
	ReleaseTwice       = false
	ForgetOwnerPin     = false
	FreeWaitQueueEarly = false
	SkipInvalidation   = false
)
