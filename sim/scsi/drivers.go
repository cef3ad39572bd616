package scsi

import (
	"context"
	"fmt"
	"sync"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/device"
	"github.com/sever-dev/sever/sim"
	"github.com/sever-dev/sever/subsys/block"
)

// DiskHardware is a simulated SATA disk behind an AHCI controller.
type DiskHardware struct {
	mu      sync.Mutex
	data    []byte
	sectors int64
}

// NewDiskHardware returns a zeroed disk of sectors 512-byte sectors.
func NewDiskHardware(sectors int64) *DiskHardware {
	return &DiskHardware{data: make([]byte, sectors*block.SectorSize), sectors: sectors}
}

func (hw *DiskHardware) exec(write bool, sector int64, data []byte) error {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	off := sector * block.SectorSize
	if off < 0 || off+int64(len(data)) > int64(len(hw.data)) {
		return sever.ErrIO
	}
	if write {
		copy(hw.data[off:], data)
	} else {
		copy(data, hw.data[off:])
	}
	return nil
}

// PortOps is a controller driver's side of an ATA port: Exec performs one
// transfer and is Owner's code.
type PortOps struct {
	Owner *sever.Owner
	Exec  func(ctx context.Context, write bool, sector int64, data []byte) error
}

// Libata is libata's code: it turns an ATA port into a SCSI host whose
// template is libata's own.
type Libata struct {
	m     *sim.Machine
	owner *sever.Owner
	ml    *Midlayer
}

// NewLibata loads libata, whose code is owner (module "libata"), on top of
// the midlayer.
func NewLibata(m *sim.Machine, owner *sever.Owner, ml *Midlayer) *Libata {
	return &Libata{m: m, owner: owner, ml: ml}
}

// AddPort registers a SCSI host for a port of sectors under parent, the
// controller's device (ata_host_register); called from the controller's
// Probe, it belongs to that binding.
func (l *Libata) AddPort(ctx context.Context, parent *device.Device, ops PortOps, sectors int64) (*Host, error) {
	tmpl := HostTemplate{
		Name:  "libata",
		Owner: l.owner,
		QueueCommand: func(ctx context.Context, cmd *Command) error {
			err := sever.ErrIO
			ops.Owner.Call("ahci_qc_issue", func() { err = ops.Exec(ctx, cmd.Write, cmd.Sector, cmd.Data) })
			return err
		},
		SlaveDestroy: func(s *SDev) {
			l.m.Record(sim.KindEntered, s.dev.Path(), "ata_scsi_slave_destroy (libata)")
		},
	}
	return l.ml.AddHost(ctx, parent, tmpl, sectors)
}

// RegisterAHCI registers the ahci driver, whose code is owner (module
// "ahci"), on m's platform bus. It drives controllers added with
// AddController through lib.
func RegisterAHCI(ctx context.Context, m *sim.Machine, owner *sever.Owner, lib *Libata) error {
	return m.Platform().RegisterDriver(ctx, &device.Driver{
		Name:  "ahci",
		Owner: owner,
		IDs:   []string{"ahci"},
		Probe: func(ctx context.Context, d *device.Device) error {
			hw := d.Data().(*DiskHardware)
			st := check.NewState(m.Log(), d.Path()+" ahci port", hw)
			if _, err := d.AddResource("ahci port", func() {
				st.Free()
				m.Record(sim.KindFreed, d.Path(), "ahci port state")
			}); err != nil {
				return err
			}
			_, err := lib.AddPort(ctx, d, PortOps{Owner: owner, Exec: func(ctx context.Context, write bool, sector int64, data []byte) error {
				hw, ok := st.Use("ahci_qc_issue")
				if !ok {
					return sever.ErrIO
				}
				return hw.exec(write, sector, data)
			}}, hw.sectors)
			return err
		},
	})
}

// AddController adds an AHCI controller named name with disk hw attached
// to m's platform bus; the ahci driver binds it if registered.
func AddController(ctx context.Context, m *sim.Machine, name string, hw *DiskHardware) (*device.Device, error) {
	return m.Core().Register(ctx, device.Config{Name: name, Bus: m.Platform(), Compatible: "ahci", Data: hw})
}

// SD is sd_mod: the upper driver that makes each SCSI device a disk.
type SD struct {
	m     *sim.Machine
	owner *sever.Owner
	mu    sync.Mutex
	next  int
	disks map[string]*block.Disk
}

// RegisterSD registers sd_mod, whose code is owner (module "sd_mod"), on
// the midlayer's bus. Each SCSI device it binds gets a disk "sda", "sdb",
// … with a "device" link to the SCSI device's directory, so
// /block/sda/device/delete is the SCSI device's delete attribute.
func RegisterSD(ctx context.Context, m *sim.Machine, owner *sever.Owner, ml *Midlayer) (*SD, error) {
	sd := &SD{m: m, owner: owner, disks: make(map[string]*block.Disk)}
	return sd, ml.Bus().RegisterDriver(ctx, &device.Driver{
		Name:  "sd",
		Owner: owner,
		IDs:   []string{"scsi:type0"},
		Probe: sd.probe,
	})
}

// Disk returns the disk named name, or nil. The *block.Disk stays valid
// as a shell after the disk is deleted.
func (sd *SD) Disk(name string) *block.Disk {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return sd.disks[name]
}

func (sd *SD) probe(ctx context.Context, d *device.Device) error {
	s := SDevOf(d)
	sd.mu.Lock()
	name := fmt.Sprintf("sd%c", 'a'+sd.next)
	sd.next++
	sd.mu.Unlock()
	disk, err := block.AddDisk(ctx, d, block.DiskConfig{
		Name:    name,
		Sectors: s.Sectors(),
		Depth:   2,
		Owner:   sd.owner,
		Driver: blockq.DriverFunc(func(ctx context.Context, rq *blockq.Request) error {
			if rq.Op != blockq.OpRead && rq.Op != blockq.OpWrite {
				return nil
			}
			return s.dispatch(ctx, &Command{Write: rq.Op == blockq.OpWrite, Sector: rq.Sector, Data: rq.Data})
		}),
	})
	if err != nil {
		return err
	}
	if _, err := sd.m.Sysfs().AddSymlink(disk.Device().Dir(), "device", d.Dir(), sd.owner); err != nil {
		return err
	}
	// Released when the binding ends, after the disk (a child) is
	// deleted: the point the trace calls drained.
	if _, err := d.AddResource("trace", func() {
		sd.m.Record(sim.KindDrained, "/block/"+name, "disk deleted: queue killed, sysfs files orphaned")
	}); err != nil {
		return err
	}
	sd.mu.Lock()
	sd.disks[name] = disk
	sd.mu.Unlock()
	return nil
}
