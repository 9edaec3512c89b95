package demo

import (
	"net/http"
	"testing"
	"time"

	"github.com/hordekit/httpretry/internal/faultserver"
)

func TestSpansSplitTheRun(t *testing.T) {
	sc := Scenario{Duration: 15 * time.Second, Seed: 1, Clients: 32}
	want := []Span{
		{Healthy, 0, 3 * time.Second},
		{Outage, 3 * time.Second, 8250 * time.Millisecond},
		{RateLimited, 8250 * time.Millisecond, 11250 * time.Millisecond},
		{Recovery, 11250 * time.Millisecond, 15 * time.Second},
	}
	got := sc.Spans()
	if len(got) != len(want) {
		t.Fatalf("Spans() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("span %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := sc.Span(Outage).Len(); got != 5250*time.Millisecond {
		t.Errorf("outage lasts %v, want 5.25s", got)
	}
}

func TestPhaseAt(t *testing.T) {
	sc := Scenario{Duration: 15 * time.Second, Seed: 1, Clients: 32}
	for _, tc := range []struct {
		at   time.Duration
		want Phase
	}{
		{-time.Second, Healthy},
		{0, Healthy},
		{3*time.Second - 1, Healthy},
		{3 * time.Second, Outage},
		{8 * time.Second, Outage},
		{8250 * time.Millisecond, RateLimited},
		{11250 * time.Millisecond, Recovery},
		{15 * time.Second, Recovery},
		{time.Hour, Recovery}, // calls in flight after the end see a healthy upstream
	} {
		if got := sc.PhaseAt(tc.at); got != tc.want {
			t.Errorf("PhaseAt(%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestSpanOverlap(t *testing.T) {
	sp := Span{Outage, 3 * time.Second, 8 * time.Second}
	for end, want := range map[time.Duration]time.Duration{
		time.Second: 0, 3 * time.Second: 0, 5 * time.Second: 2 * time.Second, time.Minute: 5 * time.Second,
	} {
		if got := sp.overlap(end); got != want {
			t.Errorf("overlap(%v) = %v, want %v", end, got, want)
		}
	}
}

// TestOutageFaultDeterministic checks that the fault for a request index is
// a function of the seed alone, that seeds differ, and that the mix is the
// one the report prints.
func TestOutageFaultDeterministic(t *testing.T) {
	a := Scenario{Duration: 15 * time.Second, Seed: 1, Clients: 32}
	b := a
	other := a
	other.Seed = 2
	const n = 10000
	resets, differ := 0, 0
	for i := range n {
		fa, fb := a.OutageFault(i), b.OutageFault(i)
		if fa.Kind != fb.Kind || fa.Status != fb.Status {
			t.Fatalf("request %d: %v/%d then %v/%d with the same seed", i, fa.Kind, fa.Status, fb.Kind, fb.Status)
		}
		switch fa.Kind {
		case faultserver.KindResetBeforeHeaders:
			resets++
		case faultserver.KindStatus:
			if fa.Status != http.StatusServiceUnavailable {
				t.Fatalf("request %d: status %d, want 503", i, fa.Status)
			}
		default:
			t.Fatalf("request %d: fault %v, want a 503 or a reset", i, fa.Kind)
		}
		if other.OutageFault(i).Kind != fa.Kind {
			differ++
		}
	}
	if share := float64(resets) / n; share < outageResetShare-0.02 || share > outageResetShare+0.02 {
		t.Errorf("resets are %.3f of the outage, want about %.2f", share, outageResetShare)
	}
	if differ == 0 {
		t.Error("seeds 1 and 2 give the same outage")
	}
}

func TestThrottleFaultUsesBothForms(t *testing.T) {
	sc := Scenario{Duration: 15 * time.Second, Seed: 7, Clients: 32}
	forms := map[faultserver.RetryAfterForm]int{}
	for i := range 1000 {
		f := sc.ThrottleFault(i)
		if f.Status != http.StatusTooManyRequests || f.RetryAfter <= 0 {
			t.Fatalf("request %d: %+v, want a 429 with a Retry-After", i, f)
		}
		if g := sc.ThrottleFault(i); g.RetryAfterForm != f.RetryAfterForm {
			t.Fatalf("request %d: form changed between calls", i)
		}
		forms[f.RetryAfterForm]++
	}
	if forms[faultserver.RetryAfterSeconds] < 400 || forms[faultserver.RetryAfterDate] < 400 {
		t.Errorf("Retry-After forms = %v, want both about half", forms)
	}
}

func TestRateLimit(t *testing.T) {
	for clients, want := range map[int]int{32: 16, 8: 4, 1: 1} {
		if got := (Scenario{Clients: clients}).RateLimit(); got != want {
			t.Errorf("RateLimit with %d clients = %d per slot, want %d", clients, got, want)
		}
	}
	l := &limiter{limit: 2}
	got := []bool{l.admit(0), l.admit(0), l.admit(0), l.admit(1), l.admit(1), l.admit(1)}
	want := []bool{true, true, false, true, true, false}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("admit sequence = %v, want %v", got, want)
		}
	}
}

// TestBehaviorFollowsPhases calls the fault server's Behavior as if the run
// had started long enough ago to be in each phase, far from any boundary.
func TestBehaviorFollowsPhases(t *testing.T) {
	sc := Scenario{Duration: 100 * time.Second, Seed: 3, Clients: 1}
	for _, tc := range []struct {
		ago  time.Duration
		want Phase
	}{{10 * time.Second, Healthy}, {40 * time.Second, Outage}, {65 * time.Second, RateLimited}, {90 * time.Second, Recovery}} {
		var got []Phase
		admitted := 0
		behave := sc.behavior(time.Now().Add(-tc.ago), func(_ time.Duration, p Phase) { got = append(got, p) })
		for n := range 50 {
			f := behave(n, nil)
			switch tc.want {
			case Healthy, Recovery:
				if f.Kind != faultserver.KindOK {
					t.Errorf("%v request %d: %v, want ok", tc.want, n, f.Kind)
				}
			case Outage:
				if want := sc.OutageFault(n); f.Kind != want.Kind || f.Status != want.Status {
					t.Errorf("outage request %d: %v/%d, want %v/%d", n, f.Kind, f.Status, want.Kind, want.Status)
				}
			case RateLimited:
				if f.Kind == faultserver.KindOK {
					admitted++
				} else if f.Status != http.StatusTooManyRequests {
					t.Errorf("rate-limited request %d: %v/%d, want ok or a 429", n, f.Kind, f.Status)
				}
			}
		}
		// One request per slot is admitted. The 50 calls take far less than
		// a slot, but a slot may begin among them.
		if tc.want == RateLimited && (admitted < 1 || admitted > 2) {
			t.Errorf("rate limit of 1 per slot admitted %d of 50 requests", admitted)
		}
		for i, p := range got {
			if p != tc.want {
				t.Fatalf("request %d counted in %v, want %v", i, p, tc.want)
			}
		}
	}
}

func TestPhaseString(t *testing.T) {
	if got := Phase(9).String(); got != "Phase(9)" {
		t.Errorf("Phase(9).String() = %q", got)
	}
	if got := RateLimited.String(); got != "rate-limited" {
		t.Errorf("RateLimited.String() = %q", got)
	}
}
