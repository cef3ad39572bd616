package blockq

import (
	"context"
	"fmt"
	"sync/atomic"
)

// Op is what a Request asks the driver to do.
type Op uint8

const (
	OpRead    Op = iota // fill Data from the device at Sector
	OpWrite             // write Data to the device at Sector
	OpFlush             // make earlier writes durable; Data is unused
	OpDiscard           // forget len(Data) bytes' worth of sectors at Sector
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpDiscard:
		return "discard"
	}
	return fmt.Sprintf("blockq.Op(%d)", uint8(o))
}

// Request is one I/O. The submitter fills in the exported fields and
// passes the Request to Submit; while Submit runs, the Request belongs to
// the queue and to the driver's QueueRq, and when Submit returns it is the
// submitter's again, to read results from (an OpRead's Data) or to submit
// once more. Reusing a Request makes Submit allocation-free.
//
// A Request must not be submitted again while a Submit of it is running:
// that panics. A Request must not be copied after first use.
type Request struct {
	Op     Op
	Sector int64
	Data   []byte

	ctx  context.Context // the submitter's, while queued or in flight
	err  error           // the result, set before done is signalled
	done chan struct{}   // capacity 1, made at first Submit, reused after
	busy atomic.Bool     // a Submit of this Request is running
}
