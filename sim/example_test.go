package sim_test

import (
	"context"
	"fmt"

	"github.com/sever-dev/sever/sim"
)

// A machine's life: insert modules, use them, and quiesce — which unloads
// everything still loaded, audits what is left and returns the violations.
func Example() {
	m := sim.New("example")
	if _, err := m.Insmod("scsi_mod", nil); err != nil {
		fmt.Println(err)
	}
	if _, err := m.Insmod("sd_mod", nil, "scsi_mod"); err != nil {
		fmt.Println(err)
	}
	if err := m.Rmmod(context.Background(), "scsi_mod"); err != nil {
		fmt.Println(err)
	}
	vs, err := m.Quiesce(context.Background())
	fmt.Println(len(vs), err)
	// Output:
	// module scsi_mod: in use by sd_mod: device or resource busy
	// 0 <nil>
}
