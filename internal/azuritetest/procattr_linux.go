package azuritetest

import "syscall"

// sysProcAttr makes Linux kill Azurite when the test binary dies without reaching Main's
// cleanup (a panic or a test timeout).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
