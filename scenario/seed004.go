package scenario

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"time"

	"github.com/sever-dev/sever"
	"github.com/sever-dev/sever/blockq"
	"github.com/sever-dev/sever/check"
	"github.com/sever-dev/sever/sim/scsi"
	"github.com/sever-dev/sever/subsys/block"
)

// seed004 is seed 004 (Tejun Heo's RFD on driver-model lifetimes, Mar
// 2007): a SCSI disk on ahci/libata, its delete attribute owned by
// scsi_mod, and the modules removed in the seed's order. Both examples,
// and around them the RFD's cure — orphaned sysfs nodes, a request queue
// that drains and kills itself, nothing referenced after unregister — with
// a process holding /block/sda/size open and a thread doing I/O on sda
// while the host goes.
func seed004() []Scenario {
	return []Scenario{{
		Name:    "scsi-delete-callback",
		Seed:    "004",
		Doc:     "DESIGN.md#seed-004",
		Title:   "echo 1 > /block/sda/device/delete; rmmod ahci libata sd_mod scsi_mod (Example 1)",
		Bug:     "delete's deferred work does not pin scsi_mod; it runs after rmmod scsi_mod",
		Catches: check.CallIntoGoneOwner,
		Run:     runSCSIDeleteCallback,
	}, {
		Name:    "scsi-delete-held-open",
		Seed:    "004",
		Doc:     "DESIGN.md#seed-004",
		Title:   "cat > /block/sda/device/delete &; rmmod ahci libata; kill %% (Example 2)",
		Bug:     "opening delete pins the device's kobject and sd_mod, not the host's modules; the last close runs libata's release",
		Catches: check.CallIntoGoneOwner,
		Run:     runSCSIDeleteHeldOpen,
	}}
}

// scsiRig is seed 004's machine: the four modules, the drivers, sda.
type scsiRig struct {
	ml   *scsi.Midlayer
	disk *block.Disk
}

func setupSCSI(r *Run, bugs scsi.Bugs) (*scsiRig, error) {
	ctx, m := r.Context(), r.M
	r.Step("insmod scsi_mod sd_mod libata ahci")
	scsiMod, err := m.Insmod("scsi_mod", nil)
	if err != nil {
		return nil, err
	}
	sdMod, err := m.Insmod("sd_mod", nil, "scsi_mod")
	if err != nil {
		return nil, err
	}
	libataMod, err := m.Insmod("libata", nil, "scsi_mod")
	if err != nil {
		return nil, err
	}
	ahciMod, err := m.Insmod("ahci", nil, "libata")
	if err != nil {
		return nil, err
	}
	ml, err := scsi.NewMidlayer(m, scsiMod, bugs)
	if err != nil {
		return nil, err
	}
	ml.CallbackDelay = untilUnloading(scsiMod)
	sd, err := scsi.RegisterSD(ctx, m, sdMod, ml)
	if err != nil {
		return nil, err
	}
	if err := scsi.RegisterAHCI(ctx, m, ahciMod, scsi.NewLibata(m, libataMod, ml)); err != nil {
		return nil, err
	}
	if _, err := scsi.AddController(ctx, m, "ahci.0", scsi.NewDiskHardware(64)); err != nil {
		return nil, err
	}
	disk := sd.Disk("sda")
	if disk == nil {
		return nil, errors.New("ahci did not detect sda")
	}
	return &scsiRig{ml: ml, disk: disk}, nil
}

// untilUnloading is the seed's msleep(100) in sysfs_schedule_callback_work,
// made exact: the deferred work waits until o's unload has begun and can
// go no further without it — o is gone, or it is going and waits for
// pins — or two seconds have passed.
func untilUnloading(o *sever.Owner) func() {
	return func() {
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			switch o.State() {
			case sever.OwnerGone:
				return
			case sever.OwnerGoing:
				if o.Pins() > 0 {
					return
				}
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// consumers starts a thread doing I/O on sda until the disk is gone, opens
// /block/sda/size for a process to hold, and returns the operations both
// and a shell user do meanwhile.
func (rig *scsiRig) consumers(r *Run) ([]Op, func(), error) {
	ctx, m := r.Context(), r.M
	disk := rig.disk
	r.Step("dd: read and write sda in a loop")
	r.Go(func(rng *rand.Rand) {
		rq := &blockq.Request{Op: blockq.OpRead, Data: make([]byte, block.SectorSize)}
		for i := 0; ; i++ {
			Yield(rng)
			rq.Op, rq.Sector = blockq.OpRead, int64(i%64)
			if i%3 == 0 {
				rq.Op = blockq.OpWrite
			}
			err := disk.Submit(ctx, rq)
			r.Op()
			if err != nil {
				if r.Variant == Correct {
					r.ExpectGone("dd across the host's removal", err)
				}
				r.Step("dd: %v; exit", err)
				return
			}
		}
	})
	size, err := m.Sysfs().Open("/block/sda/size", os.O_RDONLY)
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 64)
	var ops []Op
	for i := range 3 + r.Rand.Intn(3) {
		data := make([]byte, block.SectorSize)
		ops = append(ops,
			Op{Name: fmt.Sprintf("write sector %d", i), Gone: []error{sever.ErrNoDevice}, Do: func() error {
				return disk.Submit(ctx, &blockq.Request{Op: blockq.OpWrite, Sector: int64(i), Data: data})
			}},
			Op{Name: "read /block/sda/size (held open)", Gone: []error{sever.ErrNoDevice}, Do: func() error {
				_, err := size.ReadAt(buf, 0)
				return err
			}},
			Op{Name: "cat /block/sda/stat", Gone: []error{sever.ErrNotExist, sever.ErrNoDevice}, Do: func() error {
				f, err := m.Sysfs().Open("/block/sda/stat", os.O_RDONLY)
				if err != nil {
					return err
				}
				defer r.Close("f", f)
				_, err = f.Read(buf)
				return err
			}},
		)
	}
	return ops, func() { r.Close("size", size) }, nil
}

func rmmod(r *Run, names ...string) error {
	for _, n := range names {
		r.Step("rmmod %s", n)
		if err := r.M.Rmmod(r.Context(), n); err != nil {
			return err
		}
	}
	return nil
}

// checkGone checks, in the correct variant, the RFD's promise: once the
// host is unregistered, nothing of it is reachable.
func (rig *scsiRig) checkGone(r *Run) {
	if r.Variant != Correct {
		return
	}
	if _, err := r.M.Sysfs().Lookup("/block/sda"); !errors.Is(err, sever.ErrNotExist) {
		r.Failf("/block/sda after the host's removal: %v, want ENOENT", err)
	}
	err := rig.disk.Submit(r.Context(), &blockq.Request{Op: blockq.OpRead, Data: make([]byte, block.SectorSize)})
	r.ExpectGone("I/O on the deleted disk", err)
}

// runSCSIDeleteCallback is Example 1. Correct: delete's Store schedules
// scsi_remove_device with kernfs's ScheduleCallback, which pins scsi_mod;
// rmmod scsi_mod waits for the callback, which finds the device already
// removed by rmmod ahci. Naive (scsi.BugUnpinnedCallback): the work pins
// nothing and runs scsi_mod code after its unload: CallIntoGoneOwner.
func runSCSIDeleteCallback(r *Run) error {
	var bugs scsi.Bugs
	if r.Naive() {
		bugs = scsi.BugUnpinnedCallback
	}
	rig, err := setupSCSI(r, bugs)
	if err != nil {
		return err
	}
	ops, done, err := rig.consumers(r)
	if err != nil {
		return err
	}
	defer done()
	err = r.Interleave(ops, Op{Name: "echo 1 > /block/sda/device/delete; rmmod ahci libata sd_mod scsi_mod", Do: func() error {
		f, err := rig.ml.OpenAttr("/block/sda/device/delete")
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte("1\n"))
		if err := errors.Join(werr, f.Close()); err != nil {
			return err
		}
		return rmmod(r, "ahci", "libata", "sd_mod", "scsi_mod")
	}})
	rig.checkGone(r)
	return err
}

// runSCSIDeleteHeldOpen is Example 2. Correct: the open delete file pins
// scsi_mod, its attribute's owner, and nothing of the device; rmmod ahci
// and libata remove the host at once (its release runs then, with libata
// present), the file becomes a shell, and closing it calls nothing.
// Naive (scsi.BugLegacyOpen): the open holds the SCSI device's kobject
// and sd_mod; the close's last put runs the device's release into libata,
// which is gone: CallIntoGoneOwner.
func runSCSIDeleteHeldOpen(r *Run) error {
	var bugs scsi.Bugs
	if r.Naive() {
		bugs = scsi.BugLegacyOpen
	}
	rig, err := setupSCSI(r, bugs)
	if err != nil {
		return err
	}
	r.Step("cat > /block/sda/device/delete &")
	del, err := rig.ml.OpenAttr("/block/sda/device/delete")
	if err != nil {
		return err
	}
	ops, done, err := rig.consumers(r)
	if err != nil {
		r.Close("del", del)
		return err
	}
	defer done()
	err = r.Interleave(ops, Op{Name: "rmmod ahci; rmmod libata", Do: func() error { return rmmod(r, "ahci", "libata") }})
	if err != nil {
		r.Close("del", del)
		return err
	}
	rig.checkGone(r)
	if r.Variant == Correct {
		_, werr := del.Write([]byte("1\n"))
		r.ExpectGone("write to the held delete file after the host's removal", werr)
	}
	r.Step("kill %%: close the delete file")
	if err := del.Close(); err != nil {
		r.Failf("close of the delete file: %v", err)
	}
	return rmmod(r, "sd_mod", "scsi_mod")
}
