package irq

import (
	"fmt"
	"runtime/debug"

	"github.com/sever-dev/sever/check"
)

func faultOf(object string, p any) check.Violation {
	return check.Violation{Class: check.DriverFault, Object: object, Detail: fmt.Sprintf("handler panicked: %v", p), Stack: string(debug.Stack())}
}
