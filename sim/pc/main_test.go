package pc_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/sever-dev/sever/sim/pc"
)

// hostEnv makes the test binary the driver host DriverHosts starts.
const hostEnv = "SEVER_PC_TEST_HOST"

func TestMain(m *testing.M) {
	if kind := os.Getenv(hostEnv); kind != "" {
		if err := pc.ServeHost(context.Background(), kind); err != nil {
			fmt.Fprintln(os.Stderr, "test host:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
