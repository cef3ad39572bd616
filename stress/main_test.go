package stress

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever/sim/pc"
)

// hostEnv makes the test binary the driver host a test's stress machine
// starts (testHost), instead of running tests: `go test` needs nothing
// built beforehand.
const hostEnv = "SEVER_STRESS_TEST_HOST"

func TestMain(m *testing.M) {
	if kind := os.Getenv(hostEnv); kind != "" {
		if err := pc.ServeHost(context.Background(), kind); err != nil {
			fmt.Fprintln(os.Stderr, "stress test host:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// withTestHost returns cfg with this test binary as its driver host.
func withTestHost(cfg Config) Config {
	cfg.Host = []string{os.Args[0], "-test.run=^$"}
	cfg.HostEnv = []string{hostEnv + "=" + pc.CP2112Host}
	return cfg
}
