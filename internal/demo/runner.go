package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/internal/faultserver"
	"github.com/hordekit/httpretry/metrics"
)

// Defaults and limits of Config.
const (
	DefaultDuration = 54 * time.Second
	DefaultRate     = 100
	DefaultDeadline = 5 * time.Second
	DefaultSeed     = 1
	// MinDuration keeps every phase long enough to hold a few calls.
	MinDuration = 3 * time.Second
	// MaxRate keeps the demo from exhausting a small machine: four
	// strategies run at once, each with up to three requests per call.
	MaxRate = 1000
)

// Arrivals says how calls are spread in time.
type Arrivals uint8

const (
	// Poisson arrivals: independent, at exponentially distributed
	// intervals, as calls from many independent users arrive.
	Poisson Arrivals = iota
	// Fixed arrivals: exactly 1/Rate apart.
	Fixed
)

// String returns the name the --arrivals flag takes.
func (a Arrivals) String() string {
	if a == Fixed {
		return "fixed"
	}
	return "poisson"
}

// ParseArrivals parses "poisson" or "fixed".
func ParseArrivals(s string) (Arrivals, error) {
	switch s {
	case "poisson":
		return Poisson, nil
	case "fixed":
		return Fixed, nil
	}
	return 0, fmt.Errorf("arrivals %q: want poisson or fixed", s)
}

// The fixed timings of every run.
const (
	// cooldownShare scales the seed's 120 s breaker cooldown down to the
	// run: 2 s of the default 54 s, so that the 12 s outage holds several
	// cooldowns, as a real outage holds several of 120 s.
	cooldownShare = 27
	// bucket is the timeline's resolution.
	bucket = 250 * time.Millisecond
	// progressEvery is how often a live progress line is redrawn.
	progressEvery = 250 * time.Millisecond
	// callHeader carries the call's index on every attempt, so that the
	// upstream can tell attempts of one call apart from another's.
	callHeader = "X-Demo-Call"
)

// Config configures a demo.
type Config struct {
	// Duration is how long calls arrive; the phases split it.
	Duration time.Duration
	// Rate is how many calls arrive per second, for each strategy.
	Rate float64
	// Arrivals spreads the calls: Poisson (the zero value) or Fixed.
	Arrivals Arrivals
	// Deadline bounds each call, its retries and waits included.
	Deadline time.Duration
	// Seed decides the arrivals and the faults: the same seed, the same
	// scenario.
	Seed uint64
	// Progress receives progress lines; nil means none.
	Progress io.Writer
	// Live redraws one progress line in place with \r, for a terminal;
	// otherwise a line is written when each phase begins and at the end.
	Live bool
	// Monitor, when not nil, exports the strategies' metrics and breakers
	// while they run.
	Monitor *Monitor
}

// Validate reports a setting the demo cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Duration < MinDuration:
		return fmt.Errorf("duration %v is too short: at least %v", c.Duration, MinDuration)
	case !(c.Rate >= 1 && c.Rate <= MaxRate):
		return fmt.Errorf("rate %v out of range: 1 to %d calls/s", c.Rate, MaxRate)
	case c.Deadline <= 0:
		return fmt.Errorf("deadline %v must be positive", c.Deadline)
	case c.Arrivals > Fixed:
		return fmt.Errorf("arrivals %d unknown", c.Arrivals)
	}
	return nil
}

// Settings are the timings every strategy of one demo shares.
type Settings struct {
	// Cooldown is the breaker cooldown of the strategies that have one,
	// scaled down from the seed's 120 s to fit the run.
	Cooldown time.Duration
	// Deadline bounds each call.
	Deadline time.Duration
	// Arrivals and Rate describe the load.
	Arrivals Arrivals
	Rate     float64
}

// settings derives the shared timings from the configuration.
func (c Config) settings() Settings {
	return Settings{
		Cooldown: (c.Duration / cooldownShare).Round(time.Millisecond),
		Deadline: c.Deadline,
		Arrivals: c.Arrivals,
		Rate:     c.Rate,
	}
}

// Run drives every strategy through the same scenario at the same time,
// each against its own upstream, and returns what was measured. When ctx
// ends it stops at once and returns what it measured so far, with
// Report.Interrupted set; calls cut short by the interruption are not
// counted. The error is for a demo that could not run at all.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Report{
		Scenario: Scenario{Duration: cfg.Duration, Rate: cfg.Rate, Seed: cfg.Seed},
		Settings: cfg.settings(),
	}
	if ctx.Err() != nil {
		r.Interrupted = true
		return r, nil
	}
	arrivals := schedule(cfg)
	all := strategies()
	runs := make([]*run, len(all))
	start := time.Now()
	var combined breaker.Heartbeat
	for i, s := range all {
		rn, hb, err := newRun(cfg, r.Scenario, r.Settings, s, start)
		if err != nil {
			for _, done := range runs[:i] {
				done.close()
			}
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		runs[i] = rn
		combined.Breakers = append(combined.Breakers, hb.Breakers...)
		combined.Sets = append(combined.Sets, hb.Sets...)
	}
	if cfg.Monitor != nil {
		cfg.Monitor.serve(combined)
		defer cfg.Monitor.serve(breaker.Heartbeat{})
	}

	var wg sync.WaitGroup
	for _, rn := range runs {
		wg.Go(func() { rn.drive(ctx, arrivals) })
	}
	p := progress{w: cfg.Progress, live: cfg.Live}
	done := make(chan struct{})
	var drawn sync.WaitGroup
	if cfg.Progress != nil {
		drawn.Go(func() { p.follow(done, start, r.Scenario, runs) })
	}
	wg.Wait()
	close(done)
	drawn.Wait()

	for _, rn := range runs {
		rn.close()
		r.Results = append(r.Results, rn.result(ctx.Err() == nil))
	}
	r.Interrupted = ctx.Err() != nil
	r.Ran = time.Since(start)
	state := "done in"
	if r.Interrupted {
		state = "interrupted at"
	}
	p.finish(fmt.Sprintf("%s %.1fs", state, r.Ran.Seconds()))
	return r, nil
}

// schedule returns the calls' arrival offsets, the same for every strategy.
func schedule(cfg Config) []time.Duration {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6172726976616c73))
	mean := float64(time.Second) / cfg.Rate
	var out []time.Duration
	for at := time.Duration(0); at < cfg.Duration; {
		out = append(out, at)
		if cfg.Arrivals == Fixed {
			at = time.Duration(float64(len(out)) * mean)
		} else {
			at += time.Duration(rng.ExpFloat64() * mean)
		}
	}
	return out
}

// run is one strategy's part of the demo: its upstream, its client, and
// what it measured.
type run struct {
	s        strategy
	start    time.Time
	deadline time.Duration
	srv      *faultserver.Server
	pool     *http.Transport
	client   *http.Client
	reqs     *requestLog
	trans    transitionLog

	calls    []callRecord // by arrival index
	inFlight atomic.Int64
	lag      time.Duration // the latest any call went out after its arrival time
	late     int           // calls that went out more than MaxLag after it
	// budgetRefusals and breakerRefusals count, by phase, retries the
	// budget refused and calls the breaker refused.
	budgetRefusals, breakerRefusals [numPhases]atomic.Int64
}

// newRun starts a strategy's upstream and builds its client.
func newRun(cfg Config, sc Scenario, set Settings, s strategy, start time.Time) (*run, breaker.Heartbeat, error) {
	rn := &run{s: s, start: start, deadline: cfg.Deadline, reqs: &requestLog{}}
	up := newUpstream(sc, start, rn.reqs)
	srv, err := faultserver.New(faultserver.Config{Behavior: up.behavior(), LogLimit: faultserver.LogDisabled})
	if err != nil {
		return nil, breaker.Heartbeat{}, fmt.Errorf("starting the upstream: %w", err)
	}
	rn.srv = srv
	rn.pool = newPool(s.keepAlive)
	h := hooks{base: rn.pool, settings: set, onStateChange: func(_ string, from, to breaker.State) {
		rn.trans.add(time.Since(start), from, to)
	}}
	h.observer = func(e httpretry.Event) { rn.observe(sc, e) }
	var m *metrics.Collector
	if cfg.Monitor != nil {
		if m, err = cfg.Monitor.instrument(s.slug); err != nil {
			rn.close()
			return nil, breaker.Heartbeat{}, err
		}
		h.observer = func(e httpretry.Event) {
			rn.observe(sc, e)
			m.Observe(e)
		}
		record := h.onStateChange
		h.onStateChange = func(name string, from, to breaker.State) {
			record(name, from, to)
			m.OnStateChange(name, from, to)
		}
	}
	var hb breaker.Heartbeat
	rn.client, hb = s.build(h)
	if m != nil {
		watch(m, hb)
	}
	return rn, hb, nil
}

// observe counts the transport events the reports use, by phase.
func (rn *run) observe(sc Scenario, e httpretry.Event) {
	switch {
	case e.Kind == httpretry.EventGiveUp && e.Reason == httpretry.StopBudget:
		rn.budgetRefusals[sc.PhaseAt(time.Since(rn.start))].Add(1)
	case e.Kind == httpretry.EventRefused:
		rn.breakerRefusals[sc.PhaseAt(time.Since(rn.start))].Add(1)
	}
}

// drive makes every call at its arrival time, each on its own goroutine,
// and returns when they have all ended.
func (rn *run) drive(ctx context.Context, arrivals []time.Duration) {
	calls := make([]callRecord, len(arrivals))
	made := len(arrivals)
	var wg sync.WaitGroup
	for i, at := range arrivals {
		if sleep(ctx, time.Until(rn.start.Add(at))) != nil {
			made = i
			break
		}
		if lag := time.Since(rn.start) - at; lag > MaxLag {
			rn.late++
			rn.lag = max(rn.lag, lag)
		}
		rn.inFlight.Add(1)
		wg.Go(func() {
			defer rn.inFlight.Add(-1)
			calls[i] = rn.call(ctx, i, at)
		})
	}
	wg.Wait()
	rn.calls = calls[:made]
}

// call makes call i, which arrived at offset at, with its deadline, and
// reads the whole body: it succeeds when it gets a 200 and all of it.
func (rn *run) call(ctx context.Context, i int, at time.Duration) callRecord {
	cctx, cancel := context.WithTimeout(ctx, rn.deadline)
	defer cancel()
	ok := false
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, rn.srv.URL+"/", nil)
	if err == nil {
		req.Header.Set(callHeader, strconv.Itoa(i))
		var resp *http.Response
		if resp, err = rn.client.Do(req); err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = err == nil && resp.StatusCode == http.StatusOK
		}
	}
	return callRecord{start: at, end: time.Since(rn.start), ok: ok,
		cut: ctx.Err() != nil && !ok, throttled: errors.Is(err, httpretry.ErrThrottled)}
}

// close stops the upstream and the connections.
func (rn *run) close() {
	if rn.srv != nil {
		rn.srv.Close()
	}
	rn.pool.CloseIdleConnections()
}

// result returns what the run measured.
func (rn *run) result(complete bool) Result {
	res := Result{
		Strategy:    rn.s.name,
		Summary:     rn.s.summary,
		HasBreaker:  rn.s.breaker,
		Complete:    complete,
		Transitions: rn.trans.list(),
		Lag:         rn.lag,
		Late:        rn.late,
		calls:       rn.calls,
		requests:    rn.reqs.list(),
	}
	for p := range numPhases {
		res.budgetRefusals[p] = int(rn.budgetRefusals[p].Load())
		res.breakerRefusals[p] = int(rn.breakerRefusals[p].Load())
	}
	return res
}

// newPool returns a strategy's own connection pool, never proxied: big
// enough to keep a connection per caller in flight, or none at all for a
// strategy that opens a new connection per attempt.
func newPool(keepAlive bool) *http.Transport {
	return &http.Transport{
		DialContext:         (&net.Dialer{Timeout: DefaultDeadline}).DialContext,
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 1000,
		IdleConnTimeout:     30 * time.Second,
		DisableKeepAlives:   !keepAlive,
	}
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

// follow reports the runs until done is closed: a redrawn line on a
// terminal, a line per phase otherwise.
func (p *progress) follow(done <-chan struct{}, start time.Time, sc Scenario, runs []*run) {
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	phase := numPhases
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		elapsed := time.Since(start)
		now := sc.PhaseAt(elapsed)
		if elapsed >= sc.Duration {
			now = numPhases // finishing: calls in flight still end
		}
		if !p.live {
			if now != phase && now < numPhases {
				fmt.Fprintf(p.w, "%6.1fs %s\n", elapsed.Seconds(), now)
			}
			phase = now
			continue
		}
		p.draw(liveLine(elapsed, sc, runs))
	}
}

// liveLine is the redrawn progress line: where the run is, and each
// strategy's callers in flight and upstream load over the last second.
func liveLine(elapsed time.Duration, sc Scenario, runs []*run) string {
	var in, load []string
	for _, rn := range runs {
		in = append(in, strconv.FormatInt(rn.inFlight.Load(), 10))
		load = append(load, strconv.Itoa(rn.reqs.since(elapsed-time.Second)))
	}
	what := sc.PhaseAt(elapsed).String()
	if elapsed >= sc.Duration {
		what = "finishing"
	}
	return fmt.Sprintf("%5.1fs/%s %-12s in flight %s   upstream req/s %s", elapsed.Seconds(), seconds(sc.Duration),
		what, strings.Join(in, "|"), strings.Join(load, "|"))
}

// draw replaces the line on screen.
func (p *progress) draw(line string) {
	pad := max(0, p.width-len(line))
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// finish writes the last line.
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
