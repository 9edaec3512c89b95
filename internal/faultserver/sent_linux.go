package faultserver

import (
	"context"
	"net"
	"syscall"
	"time"
	"unsafe"
)

// waitSent waits until c's send queue is empty (every byte written has
// been acknowledged by the peer), the request ends, the server closes, or
// 5 s pass. It polls the kernel's count, in real time: the server side of
// a fault, not a client's timing.
func (s *Server) waitSent(ctx context.Context, c *net.TCPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var queued int32
		_ = raw.Control(func(fd uintptr) {
			_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued)))
			if errno != 0 {
				queued = 0
			}
		})
		if queued == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-time.After(time.Millisecond):
		}
	}
}
