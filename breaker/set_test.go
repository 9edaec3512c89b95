package breaker_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/clock"
	"github.com/hordekit/httpretry/internal/leaktest"
)

func newSet(t *testing.T, max int, hooks *hookLog) (*breaker.Set, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(epoch)
	cfg := breaker.SetConfig{
		Config:      breaker.Config{FailureThreshold: 1, Clock: clk, Logger: newLogBuffer().logger},
		MaxBreakers: max,
	}
	if hooks != nil {
		cfg.Config.OnStateChange = hooks.record
	}
	s, err := breaker.NewSet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func keys(s *breaker.Set) []string {
	var out []string
	for b := range s.Range {
		out = append(out, b.Name())
	}
	slices.Sort(out)
	return out
}

func TestSetMakesOneBreakerPerKey(t *testing.T) {
	var hooks hookLog
	s, _ := newSet(t, 0, &hooks)
	a := s.Get("a.example")
	if s.Get("a.example") != a {
		t.Fatal("second Get returned another breaker")
	}
	b := s.Get("b.example")
	if a == b || a.Name() != "a.example" || b.Name() != "b.example" {
		t.Fatalf("breakers %q and %q", a.Name(), b.Name())
	}
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	b.RecordFailure()
	if a.State() != breaker.Closed || b.State() != breaker.Open {
		t.Fatal("breakers of different keys share state")
	}
	if want := []string{"b.example:closed>open"}; !slices.Equal(hooks.get(), want) {
		t.Fatalf("hooks = %v, want %v", hooks.get(), want)
	}
	st := s.Statuses()
	if len(st) != 2 || st[0].Name != "a.example" || st[1].Name != "b.example" || st[1].State != breaker.Open {
		t.Fatalf("Statuses = %+v", st)
	}
}

func TestSetRangeStops(t *testing.T) {
	s, _ := newSet(t, 0, nil)
	for i := range 5 {
		s.Get(fmt.Sprint(i))
	}
	n := 0
	for range s.Range {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("Range went on after yield returned false: %d calls", n)
	}
}

func TestSetDefaultBound(t *testing.T) {
	s, _ := newSet(t, 0, nil)
	for i := range 1100 {
		s.Get(fmt.Sprint(i))
	}
	if s.Len() != 1024 {
		t.Fatalf("Len = %d, want the default bound 1024", s.Len())
	}
}

func TestSetEvictsIdleBreakers(t *testing.T) {
	s, clk := newSet(t, 3, nil)
	s.Get("a")
	s.Get("b")
	s.Get("c")
	clk.Advance(5 * time.Minute)
	s.Get("a") // a is in use; b and c are not
	clk.Advance(5*time.Minute + time.Second)
	s.Get("d")
	if got, want := keys(s), []string{"a", "d"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v: both idle breakers go at once", got, want)
	}
}

func TestSetEvictsLeastRecentlyUsedClosedFirst(t *testing.T) {
	s, clk := newSet(t, 3, nil)
	s.Get("open").RecordFailure()
	clk.Advance(time.Second)
	s.Get("old")
	clk.Advance(time.Second)
	s.Get("new")
	clk.Advance(time.Second)
	s.Get("x") // full: sweeps, nothing idle; "old" is the LRU closed one
	if got, want := keys(s), []string{"new", "open", "x"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
	clk.Advance(time.Second)
	s.Get("new") // used since the last sweep, so newer than x
	s.Get("y")
	if got, want := keys(s), []string{"new", "open", "y"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
}

func TestSetKeepsOpenBreakersWhileItCan(t *testing.T) {
	s, clk := newSet(t, 2, nil)
	s.Get("a").RecordFailure() // open until 2m
	clk.Advance(time.Minute)
	s.Get("b").RecordFailure() // open until 3m
	clk.Advance(90 * time.Second)
	s.Get("a") // a is now half-open and the more recently used
	if s.Get("a").State() != breaker.HalfOpen || s.Get("b").State() != breaker.Open {
		t.Fatal("setup: want a half-open and b open")
	}
	z := s.Get("z")
	if got, want := keys(s), []string{"b", "z"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v: the half-open breaker goes before the open one", got, want)
	}

	// Every breaker open: the least recently used open one goes.
	z.RecordFailure() // through the breaker, not Get: z stays unused
	clk.Advance(time.Second)
	s.Get("b")
	s.Get("w")
	if got, want := keys(s), []string{"b", "w"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
}

func TestSetNeverDropsIdleOpenBreakers(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, err := breaker.NewSet(breaker.SetConfig{
		Config:      breaker.Config{FailureThreshold: 1, Cooldown: time.Hour, Clock: clk, Logger: newLogBuffer().logger},
		MaxBreakers: 2,
		IdleTimeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Get("down").RecordFailure()
	s.Get("up")
	clk.Advance(30 * time.Minute)
	s.Get("new")
	if got, want := keys(s), []string{"down", "new"}; !slices.Equal(got, want) {
		t.Fatalf("keys = %v, want %v", got, want)
	}
}

func TestSetConcurrentGet(t *testing.T) {
	leaktest.Check(t)
	s, _ := newSet(t, 16, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				b := s.Get(fmt.Sprint((g*7 + i) % 40))
				if b.Allow() {
					b.RecordSuccess()
				}
				if i%100 == 0 {
					s.Statuses()
				}
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n > 16 {
		t.Fatalf("Len = %d, above MaxBreakers 16", n)
	}
	if n, k := s.Len(), len(keys(s)); n != k {
		t.Fatalf("Len = %d but Range sees %d", n, k)
	}
}

func TestSetConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  breaker.SetConfig
		want string
	}{
		{breaker.SetConfig{MaxBreakers: -1}, "breaker: SetConfig.MaxBreakers must not be negative (got -1)"},
		{breaker.SetConfig{IdleTimeout: -time.Second}, "breaker: SetConfig.IdleTimeout must not be negative (got -1s)"},
		{breaker.SetConfig{Config: breaker.Config{Cooldown: -time.Second}}, "breaker: Config.Cooldown must not be negative (got -1s)"},
	} {
		if _, err := breaker.NewSet(tc.cfg); err == nil || err.Error() != tc.want {
			t.Errorf("NewSet(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// A value made with each key's breaker comes back with it, and goes with it.
func TestSetLookupKeepsAValuePerKey(t *testing.T) {
	made := 0
	s, err := breaker.NewSet(breaker.SetConfig{MaxBreakers: 2, NewValue: func(key string) any { made++; return "state of " + key }})
	if err != nil {
		t.Fatal(err)
	}
	b1, v1 := s.Lookup("a")
	b2, v2 := s.Lookup("a")
	if b1 != b2 || v1 != "state of a" || v2 != v1 || made != 1 {
		t.Fatalf("Lookup(a) twice = %p %v, %p %v after %d makes", b1, v1, b2, v2, made)
	}
	if s.Get("a") != b1 {
		t.Fatal("Get and Lookup disagree")
	}
	s.Lookup("b")
	s.Lookup("c") // evicts one of a and b, with its value
	if made != 3 || s.Len() != 2 {
		t.Fatalf("made %d values for %d entries", made, s.Len())
	}
	plain, _ := breaker.NewSet(breaker.SetConfig{})
	if _, v := plain.Lookup("a"); v != nil {
		t.Fatal("a set without NewValue returned a value")
	}
}
