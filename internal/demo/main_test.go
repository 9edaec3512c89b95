package demo

import (
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
)

// TestMain fails the run if a demo leaves goroutines behind: every run
// must close its upstream, its connections and its clients.
func TestMain(m *testing.M) { leaktest.CheckMain(m) }
