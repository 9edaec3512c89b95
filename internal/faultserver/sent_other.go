//go:build !linux

package faultserver

import (
	"context"
	"net"
)

// waitSent cannot see the send queue here; a reset may drop unsent bytes.
func (s *Server) waitSent(context.Context, *net.TCPConn) {}
