package redisbreaker_test

import (
	"log"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry"
	"github.com/hordekit/httpretry/breaker"
	"github.com/hordekit/httpretry/breaker/redisbreaker"
)

// Every replica of a service shares the breaker of its upstream: the seed's
// settings (open after 5 failures, probe after 120 s), fleet-wide. It needs a
// Redis server, so it is compiled but not run.
func Example() {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  "localhost:6379",
		ContextTimeoutEnabled: true, // let OpTimeout bound every call
	})
	defer rdb.Close()

	cb, err := redisbreaker.New(rdb, redisbreaker.Config{
		Config: breaker.Config{Name: "aihorde.net"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cb.Close()

	client := &http.Client{Transport: &httpretry.Transport{Breaker: cb}}
	http.Handle("/heartbeat", breaker.Heartbeat{Breakers: []breaker.CircuitBreaker{cb}})

	resp, err := client.Get("https://aihorde.net/api/v2/status/heartbeat")
	if err != nil {
		log.Print(err) // errors.Is(err, breaker.ErrOpen) while the fleet's breaker is open
		return
	}
	resp.Body.Close()
}

// The seed's API works unchanged; only the failures and the half-open probe
// touch Redis, in the background and bounded by OpTimeout.
func ExampleBreaker_Allow() {
	rdb := redis.NewClient(&redis.Options{Addr: "localhost:6379", ContextTimeoutEnabled: true})
	defer rdb.Close()
	cb, err := redisbreaker.New(rdb, redisbreaker.Config{
		Config:    breaker.Config{Name: "api", FailureThreshold: 5, Cooldown: 2 * time.Minute},
		Prefix:    "myservice:breaker:",
		OpTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cb.Close()

	if !cb.Allow() {
		d, _ := cb.UntilRetry()
		log.Printf("upstream down fleet-wide; next probe in %v", d)
		return
	}
	if err := callUpstream(); err != nil {
		cb.RecordFailure()
		return
	}
	cb.RecordSuccess()
}

func callUpstream() error { return nil }

// On Redis Cluster, pass a cluster client: the breaker's keys share a hash
// tag, so its scripts run on one master, and a failover of that master is an
// outage the breaker rides out locally. It needs a cluster, so it is
// compiled but not run.
func Example_cluster() {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 []string{"redis-0:6379", "redis-1:6379", "redis-2:6379"},
		ContextTimeoutEnabled: true, // let OpTimeout bound every call
	})
	defer rdb.Close()

	cb, err := redisbreaker.New(rdb, redisbreaker.Config{
		Config: breaker.Config{Name: "aihorde.net"}, // keys httpretry:breaker:{aihorde.net}:*
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cb.Close()
	client := &http.Client{Transport: &httpretry.Transport{Breaker: cb}}
	_ = client
}
