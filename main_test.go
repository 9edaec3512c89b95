package httpretry

import (
	"testing"

	"github.com/hordekit/httpretry/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.CheckMain(m) }
