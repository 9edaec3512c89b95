package demo

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/metrics"
)

// Defaults and limits of Config.
const (
	DefaultDuration = 15 * time.Second
	DefaultClients  = 32
	DefaultSeed     = 1
	// MinDuration keeps every phase long enough to hold a few calls.
	MinDuration = time.Second
	// MaxClients keeps the demo from exhausting a small machine's sockets.
	MaxClients = 1000
)

// The fixed timings of every run.
const (
	// attemptTimeout bounds one attempt, so that a lost response cannot hang
	// a client.
	attemptTimeout = 2 * time.Second
	// callDeadline bounds one call, its retries and waits included.
	callDeadline = 5 * time.Second
	// thinkMin and thinkMax bound a client's pause between two calls: about
	// ten calls a second per client, a few hundred in all, which leaves a
	// two-core machine usable.
	thinkMin = 50 * time.Millisecond
	thinkMax = 150 * time.Millisecond
	// cooldownShare scales the seed's 120 s breaker cooldown down to the
	// run: a sixteenth of it (0.94 s of 15 s), so that the outage holds five
	// or so cooldowns, as a real outage holds several of 120 s, and the
	// breakers go through their steady state rather than only their trip. A
	// breaker also stays open up to a cooldown after the upstream is back,
	// which at an eighth would swallow half the rate-limited phase.
	cooldownShare = 16
	// maxBucket is the widest timeline bucket; shorter runs get narrower
	// ones (down to minBucket) so their charts still have detail.
	maxBucket = 250 * time.Millisecond
	minBucket = 50 * time.Millisecond
	// progressEvery is how often a live progress line is redrawn.
	progressEvery = 250 * time.Millisecond
)

// Config configures a demo.
type Config struct {
	// Duration is how long each strategy runs.
	Duration time.Duration
	// Clients is how many clients call concurrently.
	Clients int
	// Seed decides the outage's fault mix (and the clients' pauses).
	Seed uint64
	// Progress receives one progress line per strategy; nil means none.
	Progress io.Writer
	// Live redraws the progress line in place with \r while a strategy runs,
	// for a terminal; otherwise the line is written once, when it ends.
	Live bool
	// Monitor, when not nil, exports the running strategy's metrics and
	// breakers.
	Monitor *Monitor
}

// Validate reports a setting the demo cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Duration < MinDuration:
		return fmt.Errorf("duration %v is too short: at least %v", c.Duration, MinDuration)
	case c.Clients < 1 || c.Clients > MaxClients:
		return fmt.Errorf("clients %d out of range: 1 to %d", c.Clients, MaxClients)
	}
	return nil
}

// Settings are the timings every strategy of one demo shares.
type Settings struct {
	// Cooldown is the breaker cooldown of the strategies that have one,
	// scaled down from the seed's 120 s to fit the run.
	Cooldown time.Duration
	// AttemptTimeout bounds each attempt, CallDeadline each call.
	AttemptTimeout, CallDeadline time.Duration
	// Bucket is the width of the timeline's buckets.
	Bucket time.Duration
}

// settings derives the shared timings from the duration.
func (c Config) settings() Settings {
	return Settings{
		Cooldown:       (c.Duration / cooldownShare).Round(time.Millisecond),
		AttemptTimeout: attemptTimeout,
		CallDeadline:   callDeadline,
		Bucket:         min(maxBucket, max(minBucket, (c.Duration/60).Round(10*time.Millisecond))),
	}
}

// Run runs every strategy for cfg.Duration against a fresh upstream with
// the same scenario, one after another, and returns what was measured. When
// ctx ends it stops at once and returns what it measured so far, with
// Report.Interrupted set; calls cut short by the interruption are not
// counted. The error is for a demo that could not run at all.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Report{
		Scenario: Scenario{Duration: cfg.Duration, Seed: cfg.Seed, Clients: cfg.Clients},
		Settings: cfg.settings(),
	}
	all := strategies()
	for i, s := range all {
		if ctx.Err() != nil {
			r.Interrupted = true
			break
		}
		res, err := run(ctx, cfg, r.Scenario, r.Settings, s, fmt.Sprintf("[%d/%d]", i+1, len(all)))
		if err != nil {
			return r, fmt.Errorf("%s: %w", s.name, err)
		}
		r.Results = append(r.Results, res)
		if !res.Complete {
			r.Interrupted = true
			break
		}
	}
	return r, nil
}

// run drives one strategy through the scenario.
func run(ctx context.Context, cfg Config, sc Scenario, set Settings, s strategy, tag string) (Result, error) {
	// Calls may run past Duration for up to CallDeadline; the timeline
	// covers that tail.
	tl := newTimeline(set.Bucket, cfg.Duration+set.CallDeadline+time.Second)
	start := time.Now()
	srv, err := faultserver.New(faultserver.Config{Behavior: sc.behavior(start, tl.arrive), LogLimit: faultserver.LogDisabled})
	if err != nil {
		return Result{}, fmt.Errorf("starting the upstream: %w", err)
	}
	defer srv.Close()
	pool := newPool(cfg.Clients)
	defer pool.CloseIdleConnections()

	var trans transitionLog
	h := hooks{base: pool, settings: set, onStateChange: func(_ string, from, to breaker.State) {
		trans.add(time.Since(start), from, to)
	}}
	var m *metrics.Collector
	if cfg.Monitor != nil {
		if m, err = cfg.Monitor.instrument(s.slug); err != nil {
			return Result{}, err
		}
		h.observer = m.Observe
		record := h.onStateChange
		h.onStateChange = func(name string, from, to breaker.State) {
			record(name, from, to)
			m.OnStateChange(name, from, to)
		}
	}
	client, hb := s.build(h)
	if cfg.Monitor != nil {
		cfg.Monitor.watch(m, hb)
		defer cfg.Monitor.watch(nil, breaker.Heartbeat{})
	}

	var (
		wg      sync.WaitGroup
		calls   atomic.Int64
		records = make([][]callRecord, cfg.Clients)
	)
	for i := range cfg.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
			for {
				t := time.Since(start)
				if t >= cfg.Duration || ctx.Err() != nil {
					return
				}
				rec := call(ctx, client, srv.URL, set.CallDeadline, t)
				if ctx.Err() != nil {
					return // cut short by the interruption: not a measurement
				}
				records[i] = append(records[i], rec)
				calls.Add(1)
				think := thinkMin + time.Duration(rng.Int64N(int64(thinkMax-thinkMin)))
				if sleep(ctx, min(think, cfg.Duration-time.Since(start))) != nil {
					return
				}
			}
		})
	}

	p := progress{w: cfg.Progress, live: cfg.Live}
	line := func() string {
		elapsed := time.Since(start)
		state := "running"
		if elapsed >= cfg.Duration {
			state = "finishing" // calls started before the end are still in flight
		}
		return fmt.Sprintf("%s %-18s %s %5.1fs/%s  calls %6d  upstream %5.0f req/s  phase %s",
			tag, s.name, state, elapsed.Seconds(), seconds(cfg.Duration), calls.Load(),
			tl.rate(elapsed, time.Second), sc.PhaseAt(elapsed))
	}
	if cfg.Live && cfg.Progress != nil {
		done := make(chan struct{})
		var drawn sync.WaitGroup
		drawn.Go(func() {
			tick := time.NewTicker(progressEvery)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					p.draw(line())
				}
			}
		})
		wg.Wait()
		close(done)
		drawn.Wait()
	} else {
		wg.Wait()
	}
	ran := time.Since(start)

	res := Result{
		Strategy:    s.name,
		Summary:     s.summary,
		HasBreaker:  s.breaker,
		Complete:    ctx.Err() == nil,
		Ran:         ran,
		Bucket:      set.Bucket,
		Buckets:     tl.counts(ran),
		Transitions: trans.list(),
		OutageTime:  sc.Span(Outage).overlap(ran),
	}
	res.Upstream, res.PhaseUpstream = tl.totals()
	for _, rs := range records {
		for _, rec := range rs {
			ph := sc.PhaseAt(rec.start)
			res.Calls++
			res.PhaseCalls[ph]++
			res.Latencies = append(res.Latencies, rec.latency)
			if rec.ok {
				res.Successes++
				res.PhaseSuccesses[ph]++
			}
		}
	}
	slices.Sort(res.Latencies)
	state := "done in"
	if !res.Complete {
		state = "interrupted at"
	}
	p.finish(fmt.Sprintf("%s %-18s %s %.1fs: %d calls, %d upstream requests", tag, s.name, state, ran.Seconds(),
		res.Calls, res.Upstream))
	return res, nil
}

// callRecord is one logical call as a client saw it.
type callRecord struct {
	start, latency time.Duration
	ok             bool
}

// call makes one GET with the per-call deadline and reads the whole body: a
// call succeeds when it gets a 200 and all of its body.
func call(ctx context.Context, client *http.Client, url string, deadline, start time.Duration) callRecord {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	ok := false
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = client.Do(req); err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = err == nil && resp.StatusCode == http.StatusOK
		}
	}
	return callRecord{start: start, latency: time.Since(began), ok: ok}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newPool returns the connection pool of one run, shared by its attempts:
// big enough to keep a connection per client alive, never proxied.
func newPool(clients int) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: attemptTimeout}).DialContext,
		MaxIdleConns:        2 * clients,
		MaxIdleConnsPerHost: 2 * clients,
		IdleConnTimeout:     30 * time.Second,
	}
}

// timeline counts upstream requests as they arrive: per bucket of time for
// the charts, per phase for the table.
type timeline struct {
	width   time.Duration
	buckets []atomic.Int64
	phases  [numPhases]atomic.Int64
}

// newTimeline returns a timeline of buckets of width covering span.
func newTimeline(width, span time.Duration) *timeline {
	return &timeline{width: width, buckets: make([]atomic.Int64, int(span/width)+1)}
}

// arrive counts a request arriving at offset t in phase p. A request past
// the timeline's span (it cannot happen while calls keep their deadline)
// lands in the last bucket rather than being lost.
func (tl *timeline) arrive(t time.Duration, p Phase) {
	i := min(int(t/tl.width), len(tl.buckets)-1)
	tl.buckets[max(i, 0)].Add(1)
	tl.phases[p].Add(1)
}

// rate returns the requests per second over the whole buckets in the window
// before now.
func (tl *timeline) rate(now, window time.Duration) float64 {
	end := min(int(now/tl.width), len(tl.buckets))
	first := max(0, end-int(window/tl.width))
	if end <= first {
		return 0
	}
	var n int64
	for i := first; i < end; i++ {
		n += tl.buckets[i].Load()
	}
	return float64(n) / (time.Duration(end-first) * tl.width).Seconds()
}

// counts returns the bucket counts up to offset end.
func (tl *timeline) counts(end time.Duration) []int64 {
	n := min(int(end/tl.width)+1, len(tl.buckets))
	out := make([]int64, n)
	for i := range out {
		out[i] = tl.buckets[i].Load()
	}
	return out
}

// totals returns every request counted, in all and per phase.
func (tl *timeline) totals() (int64, [numPhases]int64) {
	var all int64
	var per [numPhases]int64
	for p := range per {
		per[p] = tl.phases[p].Load()
		all += per[p]
	}
	return all, per
}

// Transition is one breaker state change, at an offset from the run's start.
type Transition struct {
	At       time.Duration
	From, To breaker.State
}

// transitionLog collects transitions from the breaker hooks.
type transitionLog struct {
	mu    sync.Mutex
	items []Transition
}

// add records a transition at offset at.
func (l *transitionLog) add(at time.Duration, from, to breaker.State) {
	l.mu.Lock()
	l.items = append(l.items, Transition{At: at, From: from, To: to})
	l.mu.Unlock()
}

// list returns the transitions so far, in order.
func (l *transitionLog) list() []Transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

// progress writes the progress lines.
type progress struct {
	w     io.Writer
	live  bool
	width int // of the line on screen, to blank what a shorter one leaves
}

// draw replaces the line on screen.
func (p *progress) draw(line string) {
	pad := max(0, p.width-len(line))
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// finish writes a strategy's last line and ends it.
func (p *progress) finish(line string) {
	if p.w == nil {
		return
	}
	if p.live {
		p.draw(line)
		fmt.Fprintln(p.w)
		return
	}
	fmt.Fprintln(p.w, line)
}
