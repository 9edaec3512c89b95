package rediscache_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/hordekit/httpretry/horde"
	"github.com/hordekit/httpretry/horde/rediscache"
)

// A service whose replicas share their AI Horde copies through Redis, and
// keep them across restarts. If Redis is down the Client still answers, from
// the API, waiting at most OpTimeout on Redis. (Not run: it needs a Redis.)
func ExampleNew() {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  "localhost:6379",
		ContextTimeoutEnabled: true, // let OpTimeout end the commands it abandons
	})
	defer rdb.Close()

	client := &horde.Client{Store: rediscache.New(rdb, rediscache.Options{})}
	defer client.CloseIdleConnections()

	res, err := client.ModelStatus(context.Background(), horde.StatusQuery{Type: horde.Image})
	if err != nil {
		fmt.Println(err) // no copy anywhere and the API down: a 502
		return
	}
	fmt.Printf("%d models, %v old, stale: %v\n", len(res.Value), res.Age, res.Stale)
}
