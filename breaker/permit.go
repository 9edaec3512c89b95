package breaker

// PermitRecorder receives the outcome of a call admitted by a Permit. Breakers
// implement it so that Permit, a plain value, can serve any of them: *Breaker
// here, a fleet breaker backed by a shared store elsewhere.
type PermitRecorder interface {
	// RecordPermit reports outcome o of a call admitted under generation gen;
	// probe says whether it was a half-open probe. A recorder ignores outcomes
	// whose generation is no longer current.
	RecordPermit(gen uint64, probe bool, o Outcome)
}

// CircuitBreaker is what the HTTP transport and the heartbeat need from a
// breaker. *Breaker implements it, and so can a breaker that shares its state
// across processes.
type CircuitBreaker interface {
	// Name identifies the breaker in logs, errors and the heartbeat.
	Name() string
	// Acquire asks to make one call. On refusal the error is an *OpenError.
	Acquire() (Permit, error)
	// Status reports the breaker for a health endpoint.
	Status() Status
}

// Permit is the right to make one call, and the way to report how it went.
// It is a small value so that the closed path allocates nothing.
//
// Report once, through the variable Acquire's result was stored in: the first
// Done, Release or Record forgets the recorder, so later ones are no-ops. That
// makes this pattern safe:
//
//	p, err := b.Acquire()
//	if err != nil { return err }
//	defer p.Release() // frees a probe slot if we return before Done
//	...
//	p.Done(err == nil)
//
// A copy of a Permit does not share that memory, so reporting through two
// copies reports twice. For a closed-path permit that only skews the failure
// count; for a probe it may free a slot that had already succeeded.
type Permit struct {
	r     PermitRecorder
	gen   uint64
	probe bool
}

// NewPermit returns a permit that reports to r under generation gen. It is for
// packages implementing their own breakers; callers get permits from Acquire.
func NewPermit(r PermitRecorder, gen uint64, probe bool) Permit {
	return Permit{r: r, gen: gen, probe: probe}
}

// Probe reports whether the permit admits a half-open probe, whose outcome
// decides whether the breaker closes. A transport may decline to retry a probe
// so that the breaker learns the upstream's state at once.
func (p *Permit) Probe() bool { return p.probe }

// Done reports a success or a failure.
func (p *Permit) Done(success bool) {
	if success {
		p.Record(Success)
	} else {
		p.Record(Failure)
	}
}

// Release reports a neutral outcome: the call says nothing about the upstream
// (the caller cancelled, or never sent it). A probe's slot is freed for another
// caller without deciding anything. After Done it does nothing.
func (p *Permit) Release() { p.Record(Neutral) }

// Record reports outcome o. The zero Permit (the one returned with an error)
// ignores it.
func (p *Permit) Record(o Outcome) {
	r := p.r
	if r == nil {
		return
	}
	p.r = nil
	r.RecordPermit(p.gen, p.probe, o)
}
