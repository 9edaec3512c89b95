package demo

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hordekit/httpretry/internal/faultserver"
)

func TestSpansSplitTheRun(t *testing.T) {
	sec := time.Second
	want := []Span{
		{Healthy, 0, 6 * sec},
		{Flaky, 6 * sec, 15 * sec},
		{Overloaded, 15 * sec, 24 * sec},
		{Outage, 24 * sec, 35 * sec},
		{RateLimited, 35 * sec, 44 * sec},
		{Recovery, 44 * sec, 54 * sec},
	}
	got := testScenario.Spans()
	if len(got) != len(want) {
		t.Fatalf("Spans() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("span %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct {
		at   time.Duration
		want Phase
	}{
		{-sec, Healthy}, {0, Healthy}, {6*sec - 1, Healthy}, {6 * sec, Flaky}, {24 * sec, Outage},
		{35 * sec, RateLimited}, {44 * sec, Recovery}, {time.Hour, Recovery}, // calls in flight after the end see a healthy upstream
	} {
		if got := testScenario.PhaseAt(tc.at); got != tc.want {
			t.Errorf("PhaseAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	if got := Phase(9).String(); got != "Phase(9)" {
		t.Errorf("Phase(9).String() = %q", got)
	}
}

func TestScenarioSizes(t *testing.T) {
	sc := Scenario{Duration: time.Minute, Rate: 100}
	if got := sc.Capacity(); got != 100/1.5 {
		t.Errorf("Capacity() = %v, want two thirds of the rate", got)
	}
	if got := sc.Quota(); got != 100 {
		t.Errorf("Quota() = %d, want 100 per 2s window (half of 100/s)", got)
	}
	if got := (Scenario{Rate: 1}).Quota(); got != 1 {
		t.Errorf("Quota() at 1 call/s = %d, want 1", got)
	}
}

// TestFaultMixes checks that the flaky phase's and the outage's faults are
// a function of the seed alone, in the shares the report prints.
func TestFaultMixes(t *testing.T) {
	a, other := Scenario{Seed: 1}, Scenario{Seed: 2}
	const n = 20000
	var flakyFail, flakyReset, outReset, differ int
	for i := range n {
		f := a.FlakyFault(i)
		if g := a.FlakyFault(i); g.Kind != f.Kind || g.Status != f.Status {
			t.Fatalf("request %d: two faults for one seed", i)
		}
		switch {
		case f.Kind == faultserver.KindResetBeforeHeaders:
			flakyFail++
			flakyReset++
		case f.Kind == faultserver.KindStatus && f.Status == http.StatusServiceUnavailable:
			flakyFail++
		case f.Kind != faultserver.KindOK:
			t.Fatalf("flaky request %d: %v", i, f.Kind)
		}
		if other.FlakyFault(i).Kind != f.Kind {
			differ++
		}
		o := a.OutageFault(i)
		switch {
		case o.Kind == faultserver.KindResetBeforeHeaders:
			outReset++
		case o.Kind != faultserver.KindStatus || o.Status != http.StatusServiceUnavailable:
			t.Fatalf("outage request %d: %v/%d", i, o.Kind, o.Status)
		}
	}
	near := func(got, want float64) bool { return got > want-0.015 && got < want+0.015 }
	if share := float64(flakyFail) / n; !near(share, FlakyShare) {
		t.Errorf("flaky failures %.3f, want %.2f", share, FlakyShare)
	}
	if share := float64(flakyReset) / float64(flakyFail); !near(share, flakyResetShare) {
		t.Errorf("resets are %.3f of the flaky failures, want %.2f", share, flakyResetShare)
	}
	if share := float64(outReset) / n; !near(share, outageResetShare) {
		t.Errorf("outage resets %.3f, want %.2f", share, outageResetShare)
	}
	if differ == 0 {
		t.Error("seeds 1 and 2 give the same faults")
	}
}

// TestThrottleFaultForms checks both Retry-After forms and the time they
// ask the client to come back.
func TestThrottleFaultForms(t *testing.T) {
	sc := Scenario{Seed: 7}
	end := time.Date(2026, 11, 30, 12, 0, 2, 0, time.UTC)
	now := end.Add(-1300 * time.Millisecond)
	forms := map[string]int{}
	for i := range 1000 {
		f, notBefore := sc.ThrottleFault(i, now, end)
		ra := f.Header.Get("Retry-After")
		if f.Status != http.StatusTooManyRequests || ra == "" {
			t.Fatalf("request %d: %+v, want a 429 with a Retry-After", i, f)
		}
		if secs, err := strconv.Atoi(ra); err == nil {
			forms["seconds"]++
			if secs != 2 || !notBefore.Equal(now.Add(2*time.Second)) {
				t.Fatalf("1.3s before the window ends: Retry-After %d, back at %v; want 2 (rounded up)", secs, notBefore)
			}
			continue
		}
		forms["date"]++
		if date, err := http.ParseTime(ra); err != nil || !date.Equal(end) || !notBefore.Equal(end) {
			t.Fatalf("date form %q (%v): want the window's end %v", ra, err, end)
		}
	}
	if forms["seconds"] < 400 || forms["date"] < 400 {
		t.Errorf("forms = %v, want both about half", forms)
	}
}

// upstreamAt returns an upstream whose clock reads the run's start plus
// whatever *offset holds.
func upstreamAt(sc Scenario, offset *time.Duration) (*upstream, *requestLog) {
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	log := &requestLog{}
	u := newUpstream(sc, start, log)
	u.now = func() time.Time { return start.Add(*offset) }
	return u, log
}

func TestUpstreamCapacity(t *testing.T) {
	var at time.Duration
	u, _ := upstreamAt(Scenario{Rate: 150}, &at) // capacity 100/s, a burst of 10
	served := 0
	for range 50 { // 50 at once: the burst only
		if u.admit(u.now()) {
			served++
		}
	}
	if served != 10 {
		t.Fatalf("50 requests at once: %d served, want the burst of 10", served)
	}
	served = 0
	for range 1000 { // one every 5ms for 5s: 200/s offered, 100/s served
		at += 5 * time.Millisecond
		if u.admit(u.now()) {
			served++
		}
	}
	if served < 495 || served > 510 {
		t.Fatalf("200/s for 5s: %d served, want about 500", served)
	}
}

func TestUpstreamQuota(t *testing.T) {
	at := 36 * time.Second                                       // the rate limit's windows are whole wall-clock seconds: 12:00:36 starts one
	sc := Scenario{Duration: 54 * time.Second, Rate: 5, Seed: 3} // 5 per window
	u, log := upstreamAt(sc, &at)
	behave := u.behavior()
	req := func(call int) faultserver.Fault {
		r, _ := http.NewRequest("GET", "http://upstream.test/", nil)
		r.Header.Set(callHeader, strconv.Itoa(call))
		return behave(0, r)
	}
	for i := range 5 {
		if f := req(i); f.Kind != faultserver.KindOK {
			t.Fatalf("request %d of the window's 5: %v", i, f.Kind)
		}
	}
	if f := req(9); f.Status != http.StatusTooManyRequests {
		t.Fatalf("6th request: %v/%d, want a 429", f.Kind, f.Status)
	}
	at += 100 * time.Millisecond
	req(9) // before its Retry-After
	at = 38 * time.Second
	if f := req(9); f.Kind != faultserver.KindOK {
		t.Fatalf("first request of the next window: %v", f.Kind)
	}
	reqs := log.list()
	if len(reqs) != 8 || reqs[5].status != 429 || reqs[5].early || !reqs[6].early || reqs[7].early {
		t.Fatalf("log = %+v; want the retry 100ms after the 429 marked early, and the one in the next window not", reqs)
	}
	if reqs[0].call != 0 || reqs[0].phase != RateLimited || reqs[0].at != 36*time.Second {
		t.Errorf("first request logged as %+v", reqs[0])
	}
}

func TestUpstreamFollowsPhases(t *testing.T) {
	var at time.Duration
	u, _ := upstreamAt(testScenario, &at)
	behave := u.behavior()
	for _, tc := range []struct {
		at   time.Duration
		want func(f faultserver.Fault) bool
	}{
		{time.Second, func(f faultserver.Fault) bool { return f.Kind == faultserver.KindOK }},
		{30 * time.Second, func(f faultserver.Fault) bool { return f.Kind != faultserver.KindOK }},
		{50 * time.Second, func(f faultserver.Fault) bool { return f.Kind == faultserver.KindOK }},
	} {
		at = tc.at
		for n := range 20 {
			if f := behave(n, &http.Request{Header: http.Header{}}); !tc.want(f) {
				t.Errorf("at %v request %d: %v/%d", tc.at, n, f.Kind, f.Status)
			}
		}
	}
}
