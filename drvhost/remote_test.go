package drvhost_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/drvhost"
)

// The remote test host listens on remoteListenEnv's address with the
// certificates in remoteCertsEnv's directory (ca.pem, server.pem,
// server-key.pem).
const (
	remoteListenEnv = "SEVER_DRVHOST_TEST_LISTEN"
	remoteCertsEnv  = "SEVER_DRVHOST_TEST_CERTS"
)

func serverTLS(dir string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		return nil, err
	}
	pool, err := loadPool(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in %s", file)
	}
	return pool, nil
}

// ca is a certificate authority made for one test.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &ca{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate for name (server: with ip as its SAN).
func (c *ca) issue(t *testing.T, name string, ip net.IP, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func clientTLS(t *testing.T, issuer, trusted *ca) *tls.Config {
	c, k := issuer.issue(t, "machine", nil, x509.ExtKeyUsageClientAuth)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(trusted.cert)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
}

// A host on "another machine" — a network namespace the test makes,
// reached through a veth pair — serves its devices over TCP with mutual
// TLS: they appear on the machine; a client without a valid certificate
// is refused and changes nothing; cutting the link is a surprise removal
// found within the health deadline.
func TestRemoteHostOverMutualTLSAcrossANetworkNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and a veth pair")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (install iproute2)")
	}
	id := os.Getpid() % 100000
	ns, va, vb := fmt.Sprintf("sever-host-%d", id), fmt.Sprintf("svh%da", id), fmt.Sprintf("svh%db", id)
	const machineIP, hostIP = "10.231.7.1", "10.231.7.2"
	if err := exec.Command("ip", "netns", "add", ns).Run(); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() { // takes the veth pair with it, if still there
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", ns, err, out)
		}
	})
	sh(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
	t.Cleanup(func() {
		// A veth the test already took away is no failure; any other
		// failure leaves a veth behind.
		if out, err := exec.Command("ip", "link", "delete", va).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
			t.Errorf("ip link delete %s: %v: %s", va, err, out)
		}
	})
	sh(t, "ip", "link", "set", vb, "netns", ns)
	sh(t, "ip", "addr", "add", machineIP+"/30", "dev", va)
	sh(t, "ip", "link", "set", va, "up")
	sh(t, "ip", "netns", "exec", ns, "ip", "addr", "add", hostIP+"/30", "dev", vb)
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", vb, "up")
	sh(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

	good, rogue := newCA(t, "sever test CA"), newCA(t, "rogue CA")
	dir := t.TempDir()
	srvCert, srvKey := good.issue(t, hostIP, net.ParseIP(hostIP), x509.ExtKeyUsageServerAuth)
	for name, b := range map[string][]byte{"ca.pem": good.pem, "server.pem": srvCert, "server-key.pem": srvKey} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	addr := net.JoinHostPort(hostIP, "7443")
	host := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	host.Env = append(os.Environ(), testHostEnv+"=1", remoteListenEnv+"="+addr, remoteCertsEnv+"="+dir)
	host.Stderr = os.Stderr
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := host.Process.Kill(); err != nil {
			t.Errorf("kill the remote host: %v", err)
		}
		_ = host.Wait() // "signal: killed": the end asked for
	})

	log := new(check.Log)
	core := device.NewCore("pc", log)
	ctx := context.Background()
	start := func(name string, tlsc *tls.Config) (*drvhost.Supervisor, error) {
		sup, err := drvhost.New(core, drvhost.Config{Name: name, Dial: addr, TLS: tlsc,
			HealthInterval: 100 * time.Millisecond, HealthTimeout: 300 * time.Millisecond, StartTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = sup.Start(ctx)
		t.Cleanup(func() {
			if err := sup.Stop(ctx); err != nil {
				t.Errorf("Stop %s: %v", name, err)
			}
		})
		return sup, err
	}

	// A client whose certificate the host's CA did not sign is refused.
	if _, err := start("rogue", clientTLS(t, rogue, good)); !errors.Is(err, syscall.ENODEV) {
		t.Errorf("start with a rogue client certificate = %v, want refused (ENODEV)", err)
	}
	if _, err := core.Sysfs().Lookup("/devices/host-rogue"); err == nil {
		t.Error("a refused client registered the host's devices")
	}

	sup, err := start("remote", clientTLS(t, good, good))
	if err != nil {
		t.Fatalf("start with a valid certificate: %v", err)
	}
	m := &machine{t: t, log: log, core: core, sup: sup}
	if got, err := m.read("/devices/host-remote/widget/value"); got != "0\n" {
		t.Errorf("remote value = %q, %v; want 0 (the rogue client changed nothing)", got, err)
	}
	if st := sup.Status(); st.Pid == 0 || st.State != drvhost.StateRunning {
		t.Errorf("status of the remote host: %+v", st)
	}
	dev := sup.Device("widget")
	h := m.open("remote-consumer")
	defer closeOK(t, "handle", h)
	if out, err := call(h, ctx, "echo", []byte("across")); err != nil || string(out) != "across" {
		t.Fatalf("call across the link = %q, %v", out, err)
	}

	// Cut the link while a call is in flight.
	done := make(chan error, 1)
	go func() {
		_, err := call(h, ctx, "block", nil)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	sh(t, "ip", "link", "set", va, "down")
	cut := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, syscall.ENODEV) {
			t.Errorf("call in flight across the cut link = %v, want ENODEV", err)
		}
		if d := time.Since(cut); d > 100*time.Millisecond+300*time.Millisecond+500*time.Millisecond {
			t.Errorf("partition found after %v, want within the health deadline", d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a call across a cut link never returned")
	}
	waitState(t, sup, drvhost.StateStopped)
	select {
	case <-dev.Removed():
	case <-time.After(10 * time.Second):
		t.Fatal("the partitioned host's device was never unregistered")
	}
	if _, err := core.Sysfs().Lookup("/devices/host-remote"); err == nil {
		t.Error("the partitioned host's devices are still registered")
	}
	if vs := log.Violations(); len(vs) > 0 {
		t.Errorf("checker: %v", vs)
	}
}
