package pc_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sever-dev/sever/sim/pc"
)

func readFile(p *pc.PC, path string) (string, error) {
	f, err := p.Machine().Sysfs().Open(path, os.O_RDONLY)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := f.Read(buf)
	return string(buf[:n]), errors.Join(err, f.Close())
}

func TestDriverHostsRunTheCP2112InAChildProcess(t *testing.T) {
	t.Setenv(hostEnv, pc.CP2112Host) // what makes the host processes hosts
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := pc.Boot(ctx, t.Name(), pc.DriverHosts(os.Args[0], "-test.run=^$"))
	if err != nil {
		t.Fatal(err)
	}
	defer quiesce(t, p)
	sup := p.Host(pc.CP2112Host)
	if got, err := readFile(p, "/hosts/cp2112/state"); got != "running\n" {
		t.Fatalf("/hosts/cp2112/state = %q, %v", got, err)
	}
	// The board's sensor, read through the host: lm75's temp1_input.
	temp, err := readFile(p, "/devices/host-cp2112/cp2112/i2c-0/0-0048/temp1_input")
	if err != nil {
		t.Fatalf("read the host's sensor: %v", err)
	}
	if strings.TrimSpace(temp) != "25000" {
		t.Errorf("temp1_input through the host = %q, want 25000", temp)
	}
	if got, err := readFile(p, "/bus/usb/ports/1/device"); got != "none\n" {
		t.Errorf("port 1 under DriverHosts = %q, %v; want none (the board is in the host)", got, err)
	}
	if _, err := p.Machine().Dev().Lookup("cp2112-gpiochip0"); err != nil {
		t.Errorf("the host's GPIO char device on the machine: %v", err)
	}
	pid, err := sup.Kill()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sup.WaitRunning(ctx, 1); err != nil {
		t.Fatalf("host %d killed: not back under on-failure: %v", pid, err)
	}
	if _, err := readFile(p, "/devices/host-cp2112/cp2112/i2c-0/0-0048/temp1_input"); err != nil {
		t.Errorf("sensor after the restart: %v", err)
	}
}
