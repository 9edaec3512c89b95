package redisbreaker

// Settle waits until the snapshots and writes queued so far, and those they
// lead to, have been handled: the applier and the writer are FIFO queues, and
// an applied snapshot may queue a write whose result is applied in turn. It
// lets a test assert that something did not happen.
func Settle(b *Breaker) {
	for range 3 {
		done := make(chan struct{})
		b.applyCh <- snapshot{barrier: done}
		<-done
		done = make(chan struct{})
		b.ops <- op{barrier: done}
		<-done
	}
}
