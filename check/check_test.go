package check_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/check"
)

func TestPendingReportsTwiceAndNever(t *testing.T) {
	var log check.Log
	once := log.Expect("/sys/x", "Release of open 1")
	twice := log.Expect("/sys/y", "Release of open 2")
	never := log.Expect("/sys/z", "Release of open 3")
	_ = never
	once.Done()
	twice.Done()
	twice.Done()
	vs := log.Quiesce(context.Background())
	if len(vs) != 2 || vs[0].Class != check.ReleaseTwice || vs[0].Object != "/sys/y" ||
		vs[1].Class != check.ReleaseNeverRun || vs[1].Object != "/sys/z" {
		t.Fatalf("violations = %v, want ReleaseTwice for y and ReleaseNeverRun for z", vs)
	}
	if !strings.Contains(vs[1].Cause, "TestPendingReportsTwiceAndNever") {
		t.Fatalf("ReleaseNeverRun does not say where the release was expected: %q", vs[1].Cause)
	}
}

func TestQuiesceReportsGoroutineLeftBehind(t *testing.T) {
	var log check.Log
	stop := make(chan struct{})
	log.Go("deferred callback", func() { <-stop })
	log.Go("quick", func() {})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	vs := log.Quiesce(ctx)
	close(stop)
	if len(vs) != 1 || vs[0].Class != check.GoroutineLeft || vs[0].Object != "deferred callback" ||
		!strings.Contains(vs[0].Cause, "TestQuiesceReportsGoroutineLeftBehind") {
		t.Fatalf("violations = %v, want the stuck goroutine with the stack that started it", vs)
	}
}

func TestStateUseAfterFreeNamesTheFreeingStack(t *testing.T) {
	var log check.Log
	s := check.NewState(&log, "tcmu data pages", []byte{1, 2, 3})
	if v, ok := s.Use("read"); !ok || len(v) != 3 {
		t.Fatal("Use of live state failed")
	}
	freePages(s)
	if v, ok := s.Use("mmap fault"); ok || v != nil {
		t.Fatal("Use after Free returned the value")
	}
	s.Free()
	vs := log.Violations()
	if len(vs) != 2 || vs[0].Class != check.UseAfterFree || !strings.Contains(vs[0].Cause, "freePages") ||
		vs[1].Class != check.ReleaseTwice {
		t.Fatalf("violations = %v", vs)
	}
}

func freePages(s *check.State[[]byte]) { s.Free() }

func TestNilLogPanicsOnRecord(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "call into gone owner") {
			t.Fatalf("recover = %v", r)
		}
	}()
	var log *check.Log
	log.Record(check.Violation{Class: check.CallIntoGoneOwner, Object: "scsi_mod"})
}

func TestClassesHaveNames(t *testing.T) {
	for _, c := range check.Classes() {
		if strings.HasPrefix(c.String(), "check.Class") {
			t.Errorf("class %d has no name", int(c))
		}
	}
	if len(check.Classes()) != 10 {
		t.Errorf("Classes() = %v", check.Classes())
	}
}

func TestObserveSeesEveryRecord(t *testing.T) {
	var log check.Log
	var seen []check.Class
	log.Observe(func(v check.Violation) { seen = append(seen, v.Class) })
	log.Record(check.Violation{Class: check.DriverFault, Object: "x"})
	if len(seen) != 1 || seen[0] != check.DriverFault || log.Clean() || log.Summary()[check.DriverFault] != 1 {
		t.Fatalf("seen %v", seen)
	}
}
